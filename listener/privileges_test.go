package listener

// Silencing the notify triggers is pgmirror_write's alone, not any
// writer's (docs/security.md, Roles): a writer that forges the batch token
// pgmirror_write sets is still heard by every sidecar.

import (
	"database/sql"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lib/pq"

	"pgmirror/internal/testdb"
	"pgmirror/mirror"
)

var roleSeq atomic.Int64

// loginRole creates a login role base_N, a member of group (pgmirror_writer
// or pgmirror_sidecar), and returns a pool that logs in as it. On a schema
// older than migration 0006, which creates the groups, it grants the role
// the privileges on cache_entries the group would give, so that the attack
// can run against the old triggers too.
func loginRole(t *testing.T, db *sql.DB, dsn, base, group string) *sql.DB {
	t.Helper()
	name := pq.QuoteIdentifier(fmt.Sprintf("%s_%d", base, roleSeq.Add(1)))
	exec(t, db, `CREATE ROLE `+name+` LOGIN`)
	var exists bool
	if err := db.QueryRow(`SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)`, group).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		exec(t, db, `GRANT `+group+` TO `+name)
	} else {
		t.Logf("no role %s (schema before 0006): granting %s DML on cache_entries", group, name)
		exec(t, db, `GRANT SELECT, INSERT, UPDATE, DELETE ON cache_entries TO `+name+`; GRANT USAGE ON SEQUENCE cache_entries_version_seq TO `+name)
	}
	return testdb.Open(t, dsn+" user="+strings.Trim(name, `"`))
}

// TestWriterCannotSilenceNotifications: writer, who may write cache_entries but
// is no sidecar, sets pgmirror.write_batch to the token of the statement it
// is in (one simple-protocol message: every statement shares its
// statement_timestamp) and updates and deletes rows. Every sidecar must hear
// of both; were the forged token honoured, none would (stale until the
// next reload).
func TestWriterCannotSilenceNotifications(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('a', 'one'), ('b', 'two')`)
	n := listen(t, dsn, db)
	n.sync(t)
	writer := loginRole(t, db, dsn, "writer", "pgmirror_writer")

	// No arguments: lib/pq sends the three statements in one Query message.
	exec(t, writer, `SELECT set_config('pgmirror.write_batch', pgmirror_batch_token(), false);
		UPDATE cache_entries SET value = 'forged' WHERE key = 'a';
		DELETE FROM cache_entries WHERE key = 'b'`)
	var token string
	if err := writer.QueryRow(`SELECT current_setting('pgmirror.write_batch', true)`).Scan(&token); err != nil || token == "" {
		t.Fatalf("the writer's session holds token %q (%v): the attack did not set it", token, err)
	}
	got := changes(t, n.sync(t))
	seen := map[string]mirror.Op{}
	for _, c := range got {
		seen[c.Key] = c.Op
	}
	if seen["a"] != mirror.OpSet || seen["b"] != mirror.OpDelete {
		t.Fatalf("writer's silenced update and delete notified %+v, want a set of a and a delete of b", got)
	}
}

// TestSidecarMemberBatchNotifiesOnce: a login role that is only a member of
// pgmirror_sidecar runs pgmirror_write: its batch still silences the
// per-statement triggers and notifies once, at its end.
func TestSidecarMemberBatchNotifiesOnce(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	n := listen(t, dsn, db)
	sidecar := loginRole(t, db, dsn, "sidecar", "pgmirror_sidecar")
	rows, err := sidecar.Query(`SELECT rec FROM pgmirror_write($1::jsonb, $2::bytea)`,
		`[{"k":"set","keys":["x"],"v":[[1,1]]},{"k":"set","keys":["y"],"v":[[2,1]]},{"k":"incrby","keys":["z"],"i":2},{"k":"del","keys":["x"]}]`,
		[]byte("12"))
	if err != nil {
		t.Fatalf("pgmirror_write as a member of pgmirror_sidecar: %v", err)
	}
	for rows.Next() {
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	payloads := n.sync(t)
	if len(payloads) != 1 {
		t.Fatalf("a batch of 4 commands sent %d notifications, want 1: %q", len(payloads), payloads)
	}
	if got := changes(t, payloads); len(got) != 3 {
		t.Fatalf("the batch notified %+v, want x (deleted), y and z", got)
	}
}
