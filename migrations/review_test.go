package migrations_test

// An attack on the SQL side through a watch's write function, by a role of
// docs/security.md's threat model.

import (
	"fmt"
	"testing"

	"github.com/lib/pq"

	"pgmirror/internal/testdb"
)

// TestWatchWriteFunctionFromTempTrigger: a role that may only INSERT into
// a watched table (no UPDATE, no DELETE, nothing on cache_entries) calls
// the watch's SECURITY DEFINER write function from a trigger of its own on
// a temporary table (which any role with TEMP may create), so
// pg_trigger_depth() > 0 and the only remaining check is the prefix. It
// overwrites the entry of a row it may not update and deletes the entry of
// a row it may not delete: cache_entries then differs from the table until
// those rows change, whatever the sidecars reload. A role that may write
// one table must gain nothing more.
func TestWatchWriteFunctionFromTempTrigger(t *testing.T) {
	dsn, db := testdb.New(t)
	app, adb := newRole(t, db, dsn, "app")
	exec(t, db, fmt.Sprintf(`CREATE SCHEMA appsch AUTHORIZATION %s`, pq.QuoteIdentifier(app)))
	exec(t, adb, `CREATE TABLE appsch.items (id int PRIMARY KEY, name text NOT NULL)`)
	exec(t, adb, `INSERT INTO appsch.items VALUES (1, 'pen'), (2, 'ink')`)
	ins, idb := newRole(t, db, dsn, "ins")
	exec(t, adb, fmt.Sprintf(`GRANT USAGE ON SCHEMA appsch TO %[1]s; GRANT INSERT ON appsch.items TO %[1]s`, pq.QuoteIdentifier(ins)))
	var out string
	if err := db.QueryRow(`SELECT pgmirror_watch('appsch.items', 'id', 'item:')`).Scan(&out); err != nil {
		t.Fatalf("watch: %v", err)
	}
	// The legitimate use: ins inserts a row, its entry appears.
	exec(t, idb, `INSERT INTO appsch.items VALUES (3, 'cap')`)
	if v := value(t, db, "item:3"); v != `{"id":3,"name":"cap"}` {
		t.Fatalf("item:3 = %q after ins's insert: the watch does not copy", v)
	}

	var fn string
	if err := db.QueryRow(`SELECT format('public.pgmirror_watch_%s_write', 'appsch.items'::regclass::oid)`).Scan(&fn); err != nil {
		t.Fatal(err)
	}
	// One connection: the temporary table and function live in its session.
	conn := idb
	conn.SetMaxOpenConns(1)
	exec(t, conn, `CREATE TEMP TABLE trampoline (x int)`)
	exec(t, conn, fmt.Sprintf(`CREATE FUNCTION pg_temp.bounce() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM %s('INSERT', ARRAY['item:1'], ARRAY['{"id":1,"name":"FORGED"}'::bytea], ARRAY['item:2'], 0);
		RETURN NULL;
	END $$`, fn))
	exec(t, conn, `CREATE TRIGGER bounce AFTER INSERT ON pg_temp.trampoline FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.bounce()`)
	_, err := conn.Exec(`INSERT INTO pg_temp.trampoline VALUES (1)`)
	t.Logf("the call through a temporary table's trigger: %v", err)

	if v := value(t, db, "item:1"); v != `{"id":1,"name":"pen"}` {
		t.Errorf("item:1 = %q: %s, who may not update appsch.items, rewrote its entry through the watch's write function", v, ins)
	}
	if v := value(t, db, "item:2"); v != `{"id":2,"name":"ink"}` {
		t.Errorf("item:2 = %q: %s, who may not delete from appsch.items, deleted its entry through the watch's write function", v, ins)
	}
}
