package listener

// Tests of triggers.sql against a real Postgres: what the triggers stamp and
// what they notify, decoded with the package's own decoder.

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/mirror"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// notes is a real pq.Listener on the pgmirror channel that keeps every payload.
type notes struct {
	l   *pq.Listener
	db  *sql.DB
	seq atomic.Int64
}

func listen(t *testing.T, dsn string, db *sql.DB) *notes {
	t.Helper()
	l := pq.NewListener(dsn, 10*time.Millisecond, time.Second, nil)
	if err := l.Listen(Channel); err != nil {
		t.Fatalf("LISTEN: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return &notes{l: l, db: db}
}

// sync sends a sentinel and returns the payloads that arrived before it:
// everything committed before the sentinel, in commit order. Absence of a
// notification is proved this way, never by sleeping.
func (n *notes) sync(t *testing.T) []string {
	t.Helper()
	token := fmt.Sprintf("s%d", n.seq.Add(1))
	sentinel := Encode(Payload{SentAt: time.Now().UnixMicro(), Changes: []mirror.Change{{Op: mirror.OpSentinel, Token: token}}})
	if _, err := n.db.Exec(`SELECT pg_notify($1, $2)`, Channel, sentinel); err != nil {
		t.Fatalf("send sentinel: %v", err)
	}
	var got []string
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m := <-n.l.Notify:
			if m == nil {
				t.Fatal("listener reconnected: notifications may have been lost")
			}
			if m.Extra == sentinel {
				return got
			}
			got = append(got, m.Extra)
		case <-deadline:
			t.Fatalf("sentinel %s did not arrive within 30s (got %d payloads)", token, len(got))
		}
	}
}

// changes decodes payloads and returns their changes in order.
func changes(t *testing.T, payloads []string) []mirror.Change {
	t.Helper()
	var out []mirror.Change
	for _, s := range payloads {
		if len(s) > MaxPayload {
			t.Fatalf("payload of %d bytes exceeds the %d budget", len(s), MaxPayload)
		}
		p, err := Decode(s)
		if err != nil {
			t.Fatalf("decode %.80q: %v", s, err)
		}
		out = append(out, p.Changes...)
	}
	return out
}

func version(t *testing.T, db *sql.DB, key string) int64 {
	t.Helper()
	var v int64
	if err := db.QueryRow(`SELECT version FROM cache_entries WHERE key = $1`, key).Scan(&v); err != nil {
		t.Fatalf("version of %q: %v", key, err)
	}
	return v
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func TestInsertUpdateDeleteNotify(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	n := listen(t, dsn, db)

	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('a', 'one')`)
	v1 := version(t, db, "a")
	if v1 <= 0 {
		t.Fatalf("plain INSERT got version %d", v1)
	}
	exec(t, db, `UPDATE cache_entries SET value = 'two' WHERE key = 'a'`)
	v2 := version(t, db, "a")
	if v2 == v1 {
		t.Fatal("UPDATE of value did not take a new version")
	}
	exp := time.Date(2031, 5, 6, 7, 8, 9, 123456000, time.UTC)
	exec(t, db, `UPDATE cache_entries SET expires_at = $1 WHERE key = 'a'`, exp)
	v3 := version(t, db, "a")
	if v3 == v2 {
		t.Fatal("UPDATE of expires_at did not take a new version")
	}
	exec(t, db, `DELETE FROM cache_entries WHERE key = 'a'`)

	got := changes(t, n.sync(t))
	if len(got) != 4 {
		t.Fatalf("got %d changes, want 4: %+v", len(got), got)
	}
	want := []mirror.Change{
		{Op: mirror.OpSet, Version: v1, Key: "a", Value: []byte("one"), Expires: mirror.NoExpiry},
		{Op: mirror.OpSet, Version: v2, Key: "a", Value: []byte("two"), Expires: mirror.NoExpiry},
		{Op: mirror.OpSet, Version: v3, Key: "a", Value: []byte("two"), Expires: exp.UnixMicro()},
	}
	for i, w := range want {
		g := got[i]
		if g.Op != w.Op || g.Version != w.Version || g.Key != w.Key || string(g.Value) != string(w.Value) || g.Expires != w.Expires {
			t.Errorf("change %d = %+v, want %+v", i, g, w)
		}
	}
	if d := got[3]; d.Op != mirror.OpDelete || d.Key != "a" || d.Version <= v3 {
		t.Errorf("delete change = %+v, want a delete of a with a version above %d", d, v3)
	}
}

func TestAccessAndLockUpdatesAreSilent(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('a', 'one'), ('b', 'two')`)
	before := version(t, db, "a")
	var updatedAt time.Time
	if err := db.QueryRow(`SELECT updated_at FROM cache_entries WHERE key = 'a'`).Scan(&updatedAt); err != nil {
		t.Fatal(err)
	}
	n := listen(t, dsn, db)

	exec(t, db, `UPDATE cache_entries SET last_accessed_at = now() + interval '1 minute'`)
	exec(t, db, `UPDATE cache_entries SET is_refreshing = true, refresh_started_at = now() WHERE key = 'a'`)
	exec(t, db, `UPDATE cache_entries SET is_refreshing = false, refresh_started_at = NULL WHERE key = 'a'`)
	exec(t, db, `UPDATE cache_entries SET last_accessed_at = v.t FROM (SELECT unnest($1::text[]) AS k, now() AS t) v
		WHERE cache_entries.key = v.k`, pq.Array([]string{"a", "b"}))

	if got := n.sync(t); len(got) != 0 {
		t.Fatalf("access-time and lock updates notified: %q", got)
	}
	if after := version(t, db, "a"); after != before {
		t.Fatalf("access-time update changed the version: %d -> %d", before, after)
	}
	var after time.Time
	if err := db.QueryRow(`SELECT updated_at FROM cache_entries WHERE key = 'a'`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if !after.Equal(updatedAt) {
		t.Fatalf("access-time update changed updated_at: %v -> %v", updatedAt, after)
	}
}

func TestForgedVersionIsReplaced(t *testing.T) {
	t.Parallel()
	_, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value, version) VALUES ('a', 'x', 999999)`)
	if v := version(t, db, "a"); v == 999999 {
		t.Fatal("INSERT kept a client-chosen version")
	}
	exec(t, db, `UPDATE cache_entries SET version = 5 WHERE key = 'a'`)
	if v := version(t, db, "a"); v == 5 {
		t.Fatal("UPDATE kept a client-chosen version")
	}
}

func TestRenameTruncateAndUpsert(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('old', 'v')`)
	n := listen(t, dsn, db)

	exec(t, db, `UPDATE cache_entries SET key = 'new' WHERE key = 'old'`)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('new', 'w')
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`)
	exec(t, db, `TRUNCATE cache_entries`)

	got := changes(t, n.sync(t))
	ops := ""
	for _, c := range got {
		ops += fmt.Sprintf("%c:%s ", c.Op, c.Key)
	}
	// The rename is one statement: its set and delete may come in any order.
	if ops != "S:new D:old S:new T: " && ops != "D:old S:new S:new T: " {
		t.Fatalf("changes = %q, want the rename (set new, delete old), the upsert and the truncate", ops)
	}
	if string(got[2].Value) != "w" {
		t.Fatalf("upsert notified value %q, want w", got[2].Value)
	}
}

func TestBulkUpdateIsPacked(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	const rows = 10000
	exec(t, db, `INSERT INTO cache_entries(key, value)
		SELECT 'bulk:' || i, convert_to(repeat(md5(i::text), 2), 'UTF8') FROM generate_series(1, $1) i`, rows)
	n := listen(t, dsn, db)

	exec(t, db, `UPDATE cache_entries SET value = value || '\x00ff'::bytea WHERE key LIKE 'bulk:%'`)
	payloads := n.sync(t)

	total := 0
	for _, p := range payloads {
		head, _, _ := strings.Cut(p, "\n")
		total += len(p) - len(head) // every record with its newline
	}
	limit := int(math.Ceil(float64(total)/float64(MaxPayload-MaxHeader))) + 1 // records fill a payload but for its header
	t.Logf("%d rows: %d notifications, %d bytes of records, bound %d", rows, len(payloads), total, limit)
	if len(payloads) > limit {
		t.Fatalf("%d notifications for %d bytes of changes, want at most %d", len(payloads), total, limit)
	}
	seen := map[string]bool{}
	for _, c := range changes(t, payloads) {
		want := "bulk:"
		if c.Op != mirror.OpSet || !strings.HasPrefix(c.Key, want) || len(c.Value) != 66 || c.Value[64] != 0 || c.Value[65] != 0xff {
			t.Fatalf("unexpected change %+v", c)
		}
		seen[c.Key] = true
	}
	if len(seen) != rows {
		t.Fatalf("notifications describe %d distinct keys, want %d", len(seen), rows)
	}

	exec(t, db, `DELETE FROM cache_entries WHERE key LIKE 'bulk:%'`)
	payloads = n.sync(t)
	deleted := 0
	for _, c := range changes(t, payloads) {
		if c.Op == mirror.OpDelete {
			deleted++
		}
	}
	if deleted != rows || len(payloads) > rows*20/(MaxPayload-MaxHeader)+2 {
		t.Fatalf("bulk delete: %d deletes in %d notifications", deleted, len(payloads))
	}
}

// TestBulkUpdatePlanAfterSmallUpdate: PL/pgSQL keeps the plan of the update
// trigger's query for the session, made for the transition tables of its
// first call. After a one-row update that plan must not be a nested loop,
// or a later bulk update on the same (pooled) connection compares every old
// row with every new one: 10,000 rows took 9-17 s instead of 0.2 s. The
// plans are read with auto_explain, as notices on this connection; the
// statement's time is left to make bench-fanout.
func TestBulkUpdatePlanAfterSmallUpdate(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	const rows = 2000
	exec(t, db, `INSERT INTO cache_entries(key, value)
		SELECT 'plan:' || i, convert_to(md5(i::text), 'UTF8') FROM generate_series(1, $1) i`, rows)

	base, err := pq.NewConnector(dsn)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var plans []string
	pool := sql.OpenDB(pq.ConnectorWithNoticeHandler(base, func(e *pq.Error) {
		mu.Lock()
		defer mu.Unlock()
		plans = append(plans, e.Message)
	}))
	defer pool.Close()
	ctx := context.Background()
	conn, err := pool.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{
		`LOAD 'auto_explain'`,
		`SET auto_explain.log_min_duration = 0`,
		`SET auto_explain.log_nested_statements = on`,
		`SET auto_explain.log_level = notice`,
		`SET client_min_messages = notice`,
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	n := listen(t, dsn, db)

	// triggerPlans returns the plans of the trigger's query logged by q.
	triggerPlans := func(q string) []string {
		t.Helper()
		mu.Lock()
		plans = nil
		mu.Unlock()
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, p := range plans {
			if strings.Contains(p, "pgmirror_old") {
				out = append(out, p)
			}
		}
		if len(out) == 0 {
			t.Fatalf("%s: auto_explain logged no plan over the transition tables (%d notices)", q, len(plans))
		}
		return out
	}
	small := triggerPlans(`UPDATE cache_entries SET value = value WHERE key = 'plan:1'`)
	bulk := triggerPlans(`UPDATE cache_entries SET value = value || '\x00'::bytea WHERE key LIKE 'plan:%'`)
	for _, p := range append(small, bulk...) {
		if strings.Contains(p, "Nested Loop") {
			t.Fatalf("the update trigger's query is planned as a nested loop, quadratic in the rows of a later bulk update on this connection:\n%s", p)
		}
	}

	seen := map[string]bool{}
	for _, c := range changes(t, n.sync(t)) {
		if c.Op == mirror.OpSet && len(c.Value) == 33 {
			seen[c.Key] = true
		}
	}
	if len(seen) != rows {
		t.Fatalf("the bulk update notified %d keys, want %d", len(seen), rows)
	}
}

// TestPayloadIgnoresSessionSettings writes the same entry from sessions with
// hostile settings and a search_path that shadows the functions the triggers
// use; the payloads must be byte-identical but for the version and send time.
func TestPayloadIgnoresSessionSettings(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `CREATE SCHEMA evil`)
	exec(t, db, `CREATE FUNCTION evil.encode(bytea, text) RETURNS text LANGUAGE sql AS $$ SELECT 'EVIL' $$`)
	exec(t, db, `CREATE FUNCTION evil.translate(text, text, text) RETURNS text LANGUAGE sql AS $$ SELECT 'EVIL' $$`)
	exec(t, db, `CREATE FUNCTION evil.nextval(regclass) RETURNS bigint LANGUAGE sql AS $$ SELECT 1::bigint $$`)
	n := listen(t, dsn, db)

	settings := []string{
		``,
		`SET DateStyle = 'SQL, DMY'; SET TimeZone = 'Pacific/Chatham'`,
		`SET DateStyle = 'German'; SET TimeZone = 'America/St_Johns'; SET IntervalStyle = 'sql_standard'`,
		`SET bytea_output = 'escape'; SET extra_float_digits = -15; SET client_encoding = 'LATIN1'`,
		`SET search_path = evil, pg_catalog, public`,
		`SET search_path = pg_temp, evil; SET standard_conforming_strings = off; SET lc_monetary = 'C'`,
	}
	expires := time.Date(2030, 1, 2, 3, 4, 5, 678901000, time.UTC)
	value := []byte{0, 1, 2, 0xfe, 0xff, '\\', '\n', 'x'}
	for _, s := range settings {
		func() {
			ctx := context.Background()
			conn, err := db.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if s != "" {
				if _, err := conn.ExecContext(ctx, s); err != nil {
					t.Fatalf("%s: %v", s, err)
				}
			}
			_, err = conn.ExecContext(ctx, `INSERT INTO public.cache_entries(key, value, expires_at)
				VALUES ('same', $1, '2030-01-02 03:04:05.678901+00')
				ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at`, value)
			if err != nil {
				t.Fatalf("write with %q: %v", s, err)
			}
			if _, err := conn.ExecContext(ctx, `RESET ALL`); err != nil {
				t.Fatal(err)
			}
		}()
	}
	payloads := n.sync(t)
	if len(payloads) != len(settings) {
		t.Fatalf("got %d payloads, want %d", len(payloads), len(settings))
	}
	mask := regexp.MustCompile(`^pgm2 [0-9a-f]{64} \d+ \d+ \d+ 1/1\nS \d+ `)
	first := mask.ReplaceAllString(payloads[0], "")
	for i, p := range payloads {
		if got := mask.ReplaceAllString(p, ""); got != first {
			t.Errorf("payload under %q differs:\n got  %q\n want %q", settings[i], got, first)
		}
	}
	c := changes(t, payloads[:1])[0]
	if c.Key != "same" || string(c.Value) != string(value) || c.Expires != expires.UnixMicro() {
		t.Fatalf("decoded %+v, want key same, value %q, expiry %d", c, value, expires.UnixMicro())
	}
}

func TestValueSizesAndKeyLimit(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	n := listen(t, dsn, db)

	small := []byte(strings.Repeat("s", 3*1024))
	big := make([]byte, 100*1024)
	for i := range big {
		big[i] = byte(i * 7)
	}
	longKey := strings.Repeat("k", 4000)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('small', $1)`, small)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('big', $1)`, big)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ($1, $2)`, longKey, big)
	// A 4000-byte key of multi-byte characters, and a value just too big to travel with it.
	wideKey := strings.Repeat("é", 2000)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ($1, $2)`, wideKey, []byte(strings.Repeat("w", 2500)))

	// The inline limit: key64 + value64 <= 7810 bytes ("edge" is 8 in base64).
	exec(t, db, `INSERT INTO cache_entries(key, value, expires_at) VALUES ('edge', $1, '0001-01-01 00:00:00+00')`,
		[]byte(strings.Repeat("e", 5850)))
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('edge+1', $1)`, []byte(strings.Repeat("e", 5851)))

	_, err := db.Exec(`INSERT INTO cache_entries(key, value) VALUES ($1, 'x')`, strings.Repeat("k", 4001))
	if err == nil || !strings.Contains(err.Error(), "cache_entries_key_max_4000_bytes") {
		t.Fatalf("4001-byte key: err = %v, want the key length check to reject it", err)
	}
	_, err = db.Exec(`INSERT INTO cache_entries(key, value) VALUES ($1, 'x')`, strings.Repeat("é", 2001))
	if err == nil {
		t.Fatal("a key of 2001 two-byte characters (4002 bytes) was accepted")
	}

	got := changes(t, n.sync(t))
	if len(got) != 6 {
		t.Fatalf("got %d changes, want 6", len(got))
	}
	if got[4].Op != mirror.OpSet || len(got[4].Value) != 5850 || got[4].Expires != -62135596800000000 {
		t.Errorf("value at the inline limit: op %v, %d bytes, expiry %d; want inline", got[4].Op, len(got[4].Value), got[4].Expires)
	}
	if got[5].Op != mirror.OpFetch {
		t.Errorf("value one byte over the inline limit: op %v, want a fetch marker", got[5].Op)
	}
	if got[0].Op != mirror.OpSet || string(got[0].Value) != string(small) {
		t.Errorf("3 KB value: op %v, %d bytes inline; want inline", got[0].Op, len(got[0].Value))
	}
	for i, key := range []string{"big", longKey, wideKey} {
		c := got[i+1]
		if c.Op != mirror.OpFetch || c.Key != key || c.Value != nil || c.Version != version(t, db, key) {
			t.Errorf("change %d: op %v key %.10q...: want a fetch marker with the row's version", i+1, c.Op, c.Key)
		}
	}
}

// TestCommitOrderIsNotVersionOrder shows why sidecars apply notifications in
// the order they arrive and never by version: an INSERT ... ON CONFLICT takes
// its version in a BEFORE trigger, before it checks for a conflict; here it is
// held there (by a test-only trigger waiting on an advisory lock) while a
// DELETE of the same key takes a higher version and commits. The insert then
// finds no conflict, inserts, and commits after the delete. Notifications come
// in commit order (delete v2, then set v1) and the row exists: a sidecar that
// kept "the highest version" would hold a tombstone for a live row.
func TestCommitOrderIsNotVersionOrder(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `CREATE FUNCTION test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.key = 'race' THEN PERFORM pg_advisory_xact_lock(4242); END IF;
			RETURN NEW;
		END $$`)
	exec(t, db, `CREATE TRIGGER zz_test_hold BEFORE INSERT ON cache_entries FOR EACH ROW EXECUTE FUNCTION test_hold()`)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('race', 'old')`)
	n := listen(t, dsn, db)

	ctx := context.Background()
	holder, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := holder.ExecContext(ctx, `SELECT pg_advisory_lock(4242)`); err != nil {
		t.Fatal(err)
	}

	inserted := make(chan error, 1)
	go func() {
		_, err := db.Exec(`INSERT INTO cache_entries(key, value) VALUES ('race', 'new')
			ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`)
		inserted <- err
	}()
	// Wait until the insert holds its version and waits on the lock.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting bool
		err := db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_locks
			WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted)`).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the insert never reached the test trigger")
		}
		time.Sleep(5 * time.Millisecond)
	}
	exec(t, db, `DELETE FROM cache_entries WHERE key = 'race'`)
	if _, err := holder.ExecContext(ctx, `SELECT pg_advisory_unlock(4242)`); err != nil {
		t.Fatal(err)
	}
	if err := <-inserted; err != nil {
		t.Fatalf("insert: %v", err)
	}

	got := changes(t, n.sync(t))
	if len(got) != 2 || got[0].Op != mirror.OpDelete || got[1].Op != mirror.OpSet {
		t.Fatalf("changes = %+v, want the delete then the insert", got)
	}
	del, ins := got[0], got[1]
	if del.Version <= ins.Version {
		t.Fatalf("delete v%d, insert v%d: the race did not happen (the insert's version should be lower)", del.Version, ins.Version)
	}
	if v := version(t, db, "race"); v != ins.Version || string(ins.Value) != "new" {
		t.Fatalf("row version %d value %q; want the insert's version %d", v, ins.Value, ins.Version)
	}
	t.Logf("delete committed first with v%d; insert committed after with v%d; the row exists", del.Version, ins.Version)
}

func TestPayloadCarriesWriterXid(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	n := listen(t, dsn, db)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	var xid uint64
	if err := tx.QueryRow(`SELECT pg_current_xact_id()::text::bigint`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO cache_entries(key, value) VALUES ('x', 'y')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	payloads := n.sync(t)
	if len(payloads) != 1 {
		t.Fatalf("got %d payloads, want 1", len(payloads))
	}
	p, err := Decode(payloads[0])
	if err != nil || p.Xid != xid {
		t.Fatalf("payload xid %d (%v), want the writer's %d", p.Xid, err, xid)
	}
}

// TestWriteBatchNotifiesOnce runs one pgmirror_write batch of many commands
// and checks that it notifies once, packed, with the final state of every key
// it changed: a key set and then deleted in the batch as deleted, a failed
// command not at all.
func TestWriteBatchNotifiesOnce(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('gone', 'x'), ('text', 'abc')`)
	n := listen(t, dsn, db)

	var ops []string
	vals := ""
	val := func(s string) string {
		ref := fmt.Sprintf("[%d,%d]", len(vals)+1, len(s))
		vals += s
		return ref
	}
	const sets = 50
	for i := range sets {
		ops = append(ops, fmt.Sprintf(`{"k":"set","keys":["k%d"],"v":[%s]}`, i, val(fmt.Sprint("v", i))))
	}
	ops = append(ops,
		`{"k":"set","keys":["k0"],"v":[`+val("last")+`]}`,         // k0 twice: its final value
		`{"k":"set","keys":["tmp"],"v":[`+val("t")+`]}`,           // created and deleted
		`{"k":"del","keys":["tmp","gone"]}`,                       // tmp and an old key
		`{"k":"incrby","keys":["text"],"i":1}`,                    // fails: not an integer
		`{"k":"set","keys":["cond"],"v":[`+val("c")+`],"c":"xx"}`, // changes nothing
	)
	rows, err := db.Query(`SELECT rec, reply, reply_err FROM pgmirror_write($1::jsonb, $2::bytea)`,
		"["+strings.Join(ops, ",")+"]", []byte(vals))
	if err != nil {
		t.Fatalf("pgmirror_write: %v", err)
	}
	errs := 0
	for rows.Next() {
		var rec string
		var reply, replyErr sql.NullString
		if err := rows.Scan(&rec, &reply, &replyErr); err != nil {
			t.Fatal(err)
		}
		if reply.String == "error" {
			errs++
			if !strings.Contains(replyErr.String, "not an integer") {
				t.Errorf("unexpected error reply %q", replyErr.String)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if errs != 1 {
		t.Fatalf("%d error replies, want 1 (the INCRBY)", errs)
	}

	payloads := n.sync(t)
	if len(payloads) != 1 {
		t.Fatalf("batch of %d commands sent %d notifications, want 1", len(ops), len(payloads))
	}
	got := map[string]mirror.Change{}
	for _, c := range changes(t, payloads) {
		if _, dup := got[c.Key]; dup {
			t.Fatalf("key %q notified twice in one batch", c.Key)
		}
		got[c.Key] = c
	}
	if len(got) != sets+2 {
		t.Fatalf("%d keys notified, want %d (the sets, tmp and gone): %v", len(got), sets+2, got)
	}
	for i := 1; i < sets; i++ {
		k := fmt.Sprint("k", i)
		if c := got[k]; c.Op != mirror.OpSet || string(c.Value) != fmt.Sprint("v", i) || c.Version != version(t, db, k) {
			t.Errorf("%s notified as %+v", k, c)
		}
	}
	if c := got["k0"]; c.Op != mirror.OpSet || string(c.Value) != "last" || c.Version != version(t, db, "k0") {
		t.Errorf("k0 notified as %+v, want its final value", c)
	}
	for _, k := range []string{"tmp", "gone"} {
		if c := got[k]; c.Op != mirror.OpDelete {
			t.Errorf("%s notified as %+v, want a delete", k, c)
		}
	}
	if _, ok := got["text"]; ok {
		t.Error("the failed INCRBY notified its key")
	}
}

// TestBatchTokenSetByHandDoesNotSilence sets pgmirror.write_batch in a session
// to what the token was a statement earlier: later writes must still notify.
func TestBatchTokenSetByHandDoesNotSilence(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	n := listen(t, dsn, db)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var token string
	if err := conn.QueryRowContext(ctx, `SELECT pgmirror_batch_token()`).Scan(&token); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT set_config('pgmirror.write_batch', $1, false)`, token); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `INSERT INTO cache_entries(key, value) VALUES ('a', 'one')`); err != nil {
		t.Fatal(err)
	}
	if got := changes(t, n.sync(t)); len(got) != 1 || got[0].Key != "a" {
		t.Fatalf("write after a hand-set token notified %+v, want the set of a", got)
	}
}
