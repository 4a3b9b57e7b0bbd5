package jobs_test

// Watches (migrations/0003_watch.sql) end to end: application writes reach
// every sidecar through the watch triggers and cache_entries' notifications.

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/pgstore"
)

// serves waits until GET key on every sidecar answers want ("" for absent).
func serves(t *testing.T, sidecars []*sidecartest.Sidecar, key, want string) {
	t.Helper()
	for i, sc := range sidecars {
		testutil.Eventually(t, 5*time.Second, func() (bool, string) {
			v, err := sc.Client.Get(context.Background(), key).Result()
			if want == "" {
				return err == redis.Nil, fmt.Sprintf("sidecar %d: GET %s = %q, %v; want absent", i, key, v, err)
			}
			return err == nil && v == want, fmt.Sprintf("sidecar %d: GET %s = %q, %v; want %q", i, key, v, err, want)
		})
	}
}

// batches returns the notifications each sidecar has applied.
func batches(sidecars []*sidecartest.Sidecar) []int64 {
	out := make([]int64, len(sidecars))
	for i, sc := range sidecars {
		out[i] = sc.Mirror.Stats().Batches
	}
	return out
}

// settle writes a marker and waits until every sidecar has it: the
// notifications of everything committed before have arrived by then (they
// arrive in commit order). It returns the notifications each has applied.
func settle(t *testing.T, db *sql.DB, sidecars []*sidecartest.Sidecar) []int64 {
	t.Helper()
	var marker string
	if err := db.QueryRow(`INSERT INTO cache_entries(key, value) VALUES ('marker:' || gen_random_uuid(), 'm') RETURNING key`).Scan(&marker); err != nil {
		t.Fatal(err)
	}
	serves(t, sidecars, marker, "m")
	return batches(sidecars)
}

// onlyMarker checks that the marker settle writes is the one notification
// every sidecar applied since before (a settle).
func onlyMarker(t *testing.T, db *sql.DB, sidecars []*sidecartest.Sidecar, before []int64) {
	t.Helper()
	for i, n := range settle(t, db, sidecars) {
		if d := n - before[i]; d != 1 {
			t.Fatalf("sidecar %d applied %d notifications, want only the marker's", i, d)
		}
	}
}

func TestWatchCopy(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric NOT NULL, note text)`)
	exec(t, db, `SELECT pgmirror_watch('items', 'id', 'item:', '{id,name,price}')`)
	sidecars := []*sidecartest.Sidecar{
		sidecartest.Start(t, dsn, sidecartest.Config{Jobs: longIntervals()}),
		sidecartest.Start(t, dsn, sidecartest.Config{Jobs: longIntervals()}),
	}

	exec(t, db, `INSERT INTO items VALUES (1, 'pen', 1.50, 'a')`)
	serves(t, sidecars, "item:1", `{"id":1,"name":"pen","price":1.50}`)
	exec(t, db, `UPDATE items SET price = 2 WHERE id = 1`)
	serves(t, sidecars, "item:1", `{"id":1,"name":"pen","price":2}`)

	// An update of a column that is not watched sends nothing.
	before := settle(t, db, sidecars)
	exec(t, db, `UPDATE items SET note = 'b' WHERE id = 1`)
	onlyMarker(t, db, sidecars, before)

	// A rolled-back transaction changes nothing.
	before = settle(t, db, sidecars)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`INSERT INTO items VALUES (2, 'ink', 3, NULL)`, `UPDATE items SET price = 9 WHERE id = 1`, `DELETE FROM items WHERE id = 1`} {
		if _, err := tx.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	onlyMarker(t, db, sidecars, before)
	serves(t, sidecars, "item:1", `{"id":1,"name":"pen","price":2}`)
	serves(t, sidecars, "item:2", "")

	// A change of the key moves the entry; a delete removes it.
	exec(t, db, `UPDATE items SET id = 3 WHERE id = 1`)
	serves(t, sidecars, "item:3", `{"id":3,"name":"pen","price":2}`)
	serves(t, sidecars, "item:1", "")
	exec(t, db, `DELETE FROM items WHERE id = 3`)
	serves(t, sidecars, "item:3", "")

	// A 5,000-row statement travels in packed notifications.
	exec(t, db, `INSERT INTO items SELECT i, 'n' || i, i, NULL FROM generate_series(10, 5009) i`)
	serves(t, sidecars, "item:5009", `{"id":5009,"name":"n5009","price":5009}`)
	before = settle(t, db, sidecars)
	exec(t, db, `UPDATE items SET price = price + 0.5`)
	var recordBytes int64
	if err := db.QueryRow(`SELECT sum(octet_length(pgmirror_set_record(key, value, expires_at, version)) + 1)
		FROM cache_entries WHERE starts_with(key, 'item:')`).Scan(&recordBytes); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, 5000)
	for i := 10; i <= 5009; i++ {
		keys = append(keys, fmt.Sprint("item:", i))
	}
	for i, sc := range sidecars {
		testutil.Eventually(t, 10*time.Second, func() (bool, string) {
			vals, err := sc.Client.MGet(context.Background(), keys...).Result()
			if err != nil {
				return false, err.Error()
			}
			for j, v := range vals {
				id := j + 10
				if want := fmt.Sprintf(`{"id":%d,"name":"n%d","price":%d.5}`, id, id, id); v != want {
					return false, fmt.Sprintf("sidecar %d: %s = %v, want %s", i, keys[j], v, want)
				}
			}
			return true, ""
		})
	}
	limit := int64(math.Ceil(float64(recordBytes)/7999)) + 3
	for i, n := range batches(sidecars) {
		d := n - before[i]
		t.Logf("sidecar %d: 5,000-row UPDATE (%d bytes of records) arrived in %d notifications (limit %d)", i, recordBytes, d, limit)
		if d > limit {
			t.Fatalf("sidecar %d applied %d notifications for one 5,000-row statement, want at most %d", i, d, limit)
		}
	}
}

func TestWatchInvalidate(t *testing.T) {
	t.Parallel()
	dsn, db := usersDB(t, "1 hour")
	exec(t, db, `SELECT pgmirror_watch('users', 'id', 'user:', '{plan}', 'invalidate')`)
	sidecars := []*sidecartest.Sidecar{
		sidecartest.Start(t, dsn, sidecartest.Config{Jobs: longIntervals()}),
		sidecartest.Start(t, dsn, sidecartest.Config{Jobs: longIntervals()}),
	}
	ctx := context.Background()
	get := func(sc *sidecartest.Sidecar, key string) string {
		v, err := sc.Client.Get(ctx, key).Result()
		if err != nil {
			return "error: " + err.Error()
		}
		return v
	}
	if v := get(sidecars[0], "user:1"); !strings.Contains(v, `"plan" : "free"`) {
		t.Fatalf("GET user:1 = %q", v)
	}
	exec(t, db, `UPDATE users SET plan = 'pro' WHERE id = 1`)
	for i, sc := range sidecars {
		testutil.Eventually(t, 5*time.Second, func() (bool, string) {
			v := get(sc, "user:1")
			return strings.Contains(v, `"plan" : "pro"`), fmt.Sprintf("sidecar %d: GET user:1 = %q after the update", i, v)
		})
	}
	// A column that is not watched does not invalidate.
	before := settle(t, db, sidecars)
	exec(t, db, `UPDATE users SET name = 'ada2' WHERE id = 1`)
	onlyMarker(t, db, sidecars, before)
	if v := get(sidecars[1], "user:1"); !strings.Contains(v, `"name" : "ada"`) {
		t.Fatalf("an update of an unwatched column invalidated user:1: %q", v)
	}
	// Deletes and inserts invalidate.
	exec(t, db, `DELETE FROM users WHERE id = 1`)
	serves(t, sidecars, "user:1", "")
	exec(t, db, `INSERT INTO users VALUES (1, 'ada3', 'team')`)
	for i, sc := range sidecars {
		testutil.Eventually(t, 5*time.Second, func() (bool, string) {
			v := get(sc, "user:1")
			return strings.Contains(v, `"ada3"`), fmt.Sprintf("sidecar %d: GET user:1 = %q after the insert", i, v)
		})
	}
}

// TestWatchInvalidationWaitsForComputation: a loader has read the old row
// and holds the key lock when the application updates the row; the watch's
// invalidation waits for the lock, so it deletes what the loader stored, and
// every sidecar ends with the new plan.
func TestWatchInvalidationWaitsForComputation(t *testing.T) {
	t.Parallel()
	dsn, db := usersDB(t, "1 hour")
	exec(t, db, `SELECT pgmirror_watch('users', 'id', 'user:', NULL, 'invalidate')`)
	computed := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	a := sidecartest.Start(t, dsn, sidecartest.Config{Jobs: longIntervals(), Loaders: func(l *pgstore.Loaders) {
		l.Hooks.AfterCompute = func(key string) {
			once.Do(func() {
				close(computed)
				select { // a failing test does not hang its sidecar's shutdown
				case <-release:
				case <-time.After(15 * time.Second):
				}
			})
		}
	}})
	b := sidecartest.Start(t, dsn, sidecartest.Config{Jobs: longIntervals()})
	ctx := context.Background()
	got := make(chan string, 1)
	go func() {
		v, err := a.Client.Get(ctx, "user:4").Result()
		if err != nil {
			v = "error: " + err.Error()
		}
		got <- v
	}()
	<-computed // the loader read plan 'pro' and holds the key lock
	updated := make(chan error, 1)
	go func() {
		_, err := db.Exec(`UPDATE users SET plan = 'enterprise' WHERE id = 4`)
		updated <- err
	}()
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		var waiting bool
		db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)`).Scan(&waiting)
		return waiting, "the invalidation is not waiting for the key lock"
	})
	close(release)
	if err := <-updated; err != nil {
		t.Fatal(err)
	}
	if v := <-got; !strings.Contains(v, `"pro"`) {
		t.Fatalf("the computation's own reply: %q", v)
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM cache_entries WHERE key = 'user:4'`).Scan(&n)
	if n != 0 {
		t.Fatal("the stale computation outlived the invalidation")
	}
	for i, sc := range []*sidecartest.Sidecar{a, b} {
		testutil.Eventually(t, 5*time.Second, func() (bool, string) {
			v, err := sc.Client.Get(ctx, "user:4").Result()
			return strings.Contains(v, `"enterprise"`), fmt.Sprintf("sidecar %d: GET user:4 = %q, %v", i, v, err)
		})
	}
}

// TestWatchLongKey: an application insert whose key would pass 4000 bytes
// commits; nothing is cached for it, and the skip is counted.
func TestWatchLongKey(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"copy", "invalidate"} {
		t.Run(mode, func(t *testing.T) {
			dsn, db := testdb.New(t)
			exec(t, db, `CREATE TABLE docs (path text PRIMARY KEY, body text)`)
			exec(t, db, `SELECT pgmirror_watch('docs', 'path', 'doc:', NULL, $1)`, mode)
			sc := sidecartest.Start(t, dsn, sidecartest.Config{Jobs: longIntervals()})
			long := strings.Repeat("p", 3997) // doc: + 3997 = 4001 bytes
			exec(t, db, `INSERT INTO docs VALUES ($1, 'long'), ('short', 'short')`, long)
			exec(t, db, `UPDATE docs SET body = body || '!'`)
			var keys []string
			rows, err := db.Query(`SELECT key FROM cache_entries ORDER BY key`)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var k string
				rows.Scan(&k)
				keys = append(keys, k)
			}
			rows.Close()
			want := "doc:short"
			if mode == "invalidate" {
				want = ""
			}
			if strings.Join(keys, ",") != want {
				t.Fatalf("cache_entries holds %q, want %q", keys, want)
			}
			var skipped int64
			if err := db.QueryRow(`SELECT skipped_keys FROM pgmirror_watch_status WHERE tbl = 'docs'::regclass`).Scan(&skipped); err != nil || skipped != 2 {
				t.Fatalf("skipped_keys = %d, %v; want 2 (the insert and the update)", skipped, err)
			}
			if mode == "copy" {
				serves(t, []*sidecartest.Sidecar{sc}, "doc:short", `{"path":"short","body":"short!"}`)
			}
		})
	}
}

// TestWatchTruncateAndCleanup: TRUNCATE of a watched table removes its
// prefix; cleanup never removes copy-mode keys, and removes the others.
func TestWatchTruncateAndCleanup(t *testing.T) {
	t.Parallel()
	dsn, db := usersDB(t, "1 hour")
	exec(t, db, `CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)`)
	exec(t, db, `INSERT INTO items SELECT i, 'n' || i FROM generate_series(1, 300) i`)
	exec(t, db, `SELECT pgmirror_watch('items', 'id', 'item:')`)
	exec(t, db, `SELECT pgmirror_watch('users', 'id', 'user:', NULL, 'invalidate')`)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'user:' || i, 'u' FROM generate_series(1, 5) i`)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'v' FROM generate_series(1, 300) i`)
	// A copy-mode key somebody gave an expiry: still kept.
	exec(t, db, `UPDATE cache_entries SET expires_at = now() - interval '2 days' WHERE key IN ('item:1', 'k1')`)
	exec(t, db, `UPDATE cache_entries SET last_accessed_at = now() - interval '30 days'`)
	sc := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true})

	store := pgstore.New(db, nil)
	var total int64
	for {
		n, ran, err := store.CleanupBatch(context.Background(), pgstore.CleanupPolicy{Retention: time.Microsecond, Batch: 100})
		if err != nil || !ran {
			t.Fatalf("cleanup: ran %v, %v", ran, err)
		}
		if total += n; n == 0 {
			break
		}
	}
	var items, others int
	db.QueryRow(`SELECT count(*) FILTER (WHERE starts_with(key, 'item:')), count(*) FILTER (WHERE NOT starts_with(key, 'item:'))
		FROM cache_entries`).Scan(&items, &others)
	if total != 305 || items != 300 || others != 0 {
		t.Fatalf("cleanup deleted %d, left %d copy-mode keys and %d others; want 305 deleted, 300 and 0 left", total, items, others)
	}

	serves(t, []*sidecartest.Sidecar{sc}, "item:2", `{"id":2,"name":"n2"}`)
	exec(t, db, `TRUNCATE items`)
	db.QueryRow(`SELECT count(*) FROM cache_entries WHERE starts_with(key, 'item:')`).Scan(&items)
	if items != 0 {
		t.Fatalf("%d item: keys left after TRUNCATE items", items)
	}
	serves(t, []*sidecartest.Sidecar{sc}, "item:2", "")
	// Every key goes, not only the one polled (a run under load read
	// DBSIZE 176 right after item:2 was gone): poll for all of them.
	var n int64
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if n, err = sc.Client.DBSize(context.Background()).Result(); err == nil && n == 0 {
			return
		}
	}
	t.Fatalf("DBSIZE after TRUNCATE = %d, %v", n, err)
}

// TestWatchInvalidateBulk: a statement that invalidates more keys than the
// lock table could hold commits; the loaders' lock is taken for the first
// pgmirror.watch_lock_budget keys of the transaction (default 1000) and
// every entry is deleted.
func TestWatchInvalidateBulk(t *testing.T) {
	t.Parallel()
	dsn, db := usersDB(t, "1 hour")
	exec(t, db, `INSERT INTO users SELECT i, 'u' || i, 'free' FROM generate_series(6, 20000) i`)
	exec(t, db, `SELECT pgmirror_watch('users', 'id', 'user:', '{plan}', 'invalidate')`)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'user:' || i, 'old' FROM generate_series(1, 20000) i`)
	sc := sidecartest.Start(t, dsn, sidecartest.Config{Jobs: longIntervals()})
	serves(t, []*sidecartest.Sidecar{sc}, "user:20000", "old")
	exec(t, db, `UPDATE users SET plan = 'enterprise'`) // 20,000 keys; the test cluster's lock table holds 12,800
	var left int
	db.QueryRow(`SELECT count(*) FROM cache_entries WHERE starts_with(key, 'user:')`).Scan(&left)
	if left != 0 {
		t.Fatalf("%d entries left after the bulk invalidation", left)
	}
	for _, key := range []string{"user:7", "user:20000"} { // recomputed by the loader
		testutil.Eventually(t, 5*time.Second, func() (bool, string) {
			v, err := sc.Client.Get(context.Background(), key).Result()
			return err == nil && strings.Contains(v, `"enterprise"`), fmt.Sprintf("GET %s after the bulk update = %q, %v", key, v, err)
		})
	}

	// The budget is per transaction and can be set.
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var locks int
	for _, q := range []string{`SET LOCAL pgmirror.watch_lock_budget = 150`,
		`UPDATE users SET plan = 'team' WHERE id <= 100`, `UPDATE users SET plan = 'team' WHERE id BETWEEN 101 AND 200`} {
		if _, err := tx.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()`).Scan(&locks); err != nil || locks != 150 {
		t.Fatalf("the transaction holds %d key locks (%v), want its budget of 150", locks, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}
