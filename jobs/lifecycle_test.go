package jobs_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/jobs"
	"pgmirror/pgstore"
)

func TestAccessTracking(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'v' FROM generate_series(1, 100) i`)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('cold', 'v')`)
	exec(t, db, `UPDATE cache_entries SET last_accessed_at = now() - interval '1 day'`)
	sc := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true})
	ctx := context.Background()
	pipe := sc.Client.Pipeline()
	for i := 0; i < 10000; i++ {
		pipe.Get(ctx, fmt.Sprint("k", 1+i%100))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	batches := sc.Mirror.Stats().Batches
	updates := calls(t, db, "SET last_accessed_at")
	sc.Jobs.FlushAccess(ctx)
	if d := calls(t, db, "SET last_accessed_at") - updates; d != 1 {
		t.Fatalf("one flush of 10,000 hits on 100 keys ran %d UPDATE statements, want 1", d)
	}
	var advanced, cold int
	db.QueryRow(`SELECT count(*) FILTER (WHERE key <> 'cold' AND last_accessed_at > now() - interval '1 minute'),
		count(*) FILTER (WHERE key = 'cold' AND last_accessed_at > now() - interval '1 minute') FROM cache_entries`).Scan(&advanced, &cold)
	if advanced != 100 || cold != 0 {
		t.Fatalf("%d hit keys advanced (want 100), %d unhit advanced (want 0)", advanced, cold)
	}
	// It notified nothing: a marker write is the only notification that arrives.
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('marker', 'm')`)
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		l, _ := sc.Mirror.Exists("marker")
		return l.Found, "marker not mirrored"
	})
	if d := sc.Mirror.Stats().Batches - batches; d != 1 {
		t.Fatalf("%d notifications arrived around the flush, want only the marker's", d)
	}
	// Hits again right away: the stored times are recent, so the rows are skipped.
	sc.Client.Get(ctx, "k1")
	var before time.Time
	db.QueryRow(`SELECT last_accessed_at FROM cache_entries WHERE key = 'k1'`).Scan(&before)
	sc.Jobs.FlushAccess(ctx)
	var after time.Time
	db.QueryRow(`SELECT last_accessed_at FROM cache_entries WHERE key = 'k1'`).Scan(&after)
	if !after.Equal(before) {
		t.Fatalf("a recently stored access time was rewritten: %v -> %v", before, after)
	}
	if st := sc.Jobs.Stats(); st.AccessFlushes != 2 || st.AccessRows != 100 {
		t.Fatalf("stats %+v: want 2 flushes updating 100 rows", st)
	}
}

// refreshDB has 200 users, a loader with a long ttl, and 200 entries due
// for refresh (expiring within the refresh-ahead window, recently used).
func refreshDB(t *testing.T) (string, *sql.DB) {
	t.Helper()
	dsn, db := testdb.New(t)
	exec(t, db, `CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, plan text NOT NULL)`)
	exec(t, db, `INSERT INTO users SELECT i, 'u' || i, 'free' FROM generate_series(1, 200) i`)
	exec(t, db, `INSERT INTO cache_loaders(prefix, query, ttl) VALUES ('user:', $1, '1 day')`, loaderQuery)
	exec(t, db, `INSERT INTO cache_entries(key, value, expires_at) SELECT 'user:' || i, 'old', now() + interval '1 minute' FROM generate_series(1, 200) i`)
	return dsn, db
}

func count(t *testing.T, db *sql.DB, q string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func refreshConfig() jobs.Config {
	c := longIntervals()
	c.RefreshInterval, c.RefreshAhead, c.RefreshLockStale = 200*time.Millisecond, time.Hour, 2*time.Second
	return c
}

func TestRefreshOncePerKeyAcrossSidecars(t *testing.T) {
	t.Parallel()
	dsn, db := refreshDB(t)
	runs := calls(t, db, "json_build_object")
	for i := 0; i < 3; i++ {
		sidecartest.Start(t, dsn, sidecartest.Config{Jobs: refreshConfig()})
	}
	testutil.Eventually(t, 30*time.Second, func() (bool, string) {
		n := count(t, db, `SELECT count(*) FROM cache_entries WHERE value = 'old' OR is_refreshing`)
		return n == 0, fmt.Sprintf("%d keys not refreshed yet", n)
	})
	if d := calls(t, db, "json_build_object") - runs; d != 200 {
		t.Fatalf("the loader ran %d times for 200 due keys, want 200", d)
	}
	if n := count(t, db, `SELECT count(*) FROM cache_entries WHERE expires_at > now() + interval '23 hours'`); n != 200 {
		t.Fatalf("%d keys got the loader's long ttl, want 200", n)
	}
}

// TestFencedRefresh: a refresher whose lock was reclaimed (it looked stale)
// computes on, but cannot overwrite what the new holder stored.
func TestFencedRefresh(t *testing.T) {
	t.Parallel()
	dsn, db := refreshDB(t)
	computed, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	slow := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true, Loaders: func(l *pgstore.Loaders) {
		l.Hooks.AfterCompute = func(string) { once.Do(func() { close(computed); <-release }) }
	}})
	fast := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true})
	ctx := context.Background()
	policy := pgstore.RefreshPolicy{Ahead: time.Hour, LockStale: time.Minute}
	token, ok, err := slow.Store.Claim(ctx, "user:7", policy)
	if err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	done := make(chan pgstore.RefreshOutcome, 1)
	go func() {
		out, err := slow.Loaders.Refresh(ctx, slow.Mirror, "user:7", token)
		if err != nil {
			t.Error(err)
		}
		done <- out
	}()
	<-computed // the slow refresher read plan 'free'
	exec(t, db, `UPDATE users SET plan = 'pro' WHERE id = 7`)
	exec(t, db, `UPDATE cache_entries SET refresh_started_at = now() - interval '1 hour' WHERE key = 'user:7'`) // looks stuck
	token2, ok, err := fast.Store.Claim(ctx, "user:7", policy)
	if err != nil || !ok {
		t.Fatalf("reclaiming a stale lock: %v %v", ok, err)
	}
	// The new holder computes under the key lock, so it waits for the slow
	// one to finish; the slow one's store must find its claim gone.
	fastDone := make(chan error, 1)
	go func() {
		out, err := fast.Loaders.Refresh(ctx, fast.Mirror, "user:7", token2)
		if err == nil && out != pgstore.Refreshed {
			err = fmt.Errorf("outcome %v, want Refreshed", out)
		}
		fastDone <- err
	}()
	close(release)
	if out := <-done; out != pgstore.Fenced {
		t.Fatalf("the reclaimed refresher's outcome: %v, want Fenced", out)
	}
	if err := <-fastDone; err != nil {
		t.Fatalf("the new holder's refresh: %v", err)
	}
	var v string
	db.QueryRow(`SELECT convert_from(value, 'UTF8') FROM cache_entries WHERE key = 'user:7'`).Scan(&v)
	if !strings.Contains(v, `"pro"`) {
		t.Fatalf("user:7 = %q: the fenced refresher overwrote the newer value", v)
	}
}

func TestCrashedLockAndFailingLoader(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_loaders(prefix, query, ttl) VALUES ('f:', 'SELECT v FROM flaky WHERE k = $1', '1 day')`)
	exec(t, db, `INSERT INTO cache_entries(key, value, expires_at) VALUES
		('f:crashed', 'old', now() + interval '1 minute'), ('f:failing', 'old', now() + interval '1 minute')`)
	// A sidecar crashed while refreshing f:crashed: its lock stays.
	exec(t, db, `UPDATE cache_entries SET is_refreshing = true, refresh_started_at = now() WHERE key = 'f:crashed'`)
	sc := sidecartest.Start(t, dsn, sidecartest.Config{Jobs: refreshConfig()})
	// The loader fails (no table): f:failing must be released at once.
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		st := sc.Jobs.Stats()
		return st.RefreshFailed >= 1, fmt.Sprintf("stats %+v", st)
	})
	var locked bool
	db.QueryRow(`SELECT is_refreshing FROM cache_entries WHERE key = 'f:failing'`).Scan(&locked)
	if locked {
		t.Fatal("a failed refresh left its lock")
	}
	exec(t, db, `CREATE TABLE flaky (k text PRIMARY KEY, v text)`)
	exec(t, db, `INSERT INTO flaky VALUES ('failing', 'fixed'), ('crashed', 'reclaimed')`)
	testutil.Eventually(t, 15*time.Second, func() (bool, string) {
		var a, b string
		db.QueryRow(`SELECT convert_from(value, 'UTF8') FROM cache_entries WHERE key = 'f:failing'`).Scan(&a)
		db.QueryRow(`SELECT convert_from(value, 'UTF8') FROM cache_entries WHERE key = 'f:crashed'`).Scan(&b)
		return a == "fixed" && b == "reclaimed", fmt.Sprintf("f:failing=%q f:crashed=%q", a, b)
	})
}

func TestCleanup(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'unused' || i, 'v' FROM generate_series(1, 1500) i`)
	exec(t, db, `UPDATE cache_entries SET last_accessed_at = now() - interval '8 days'`)
	exec(t, db, `INSERT INTO cache_entries(key, value, expires_at) SELECT 'expired' || i, 'v', now() - interval '2 hours' FROM generate_series(1, 1500) i`)
	exec(t, db, `INSERT INTO cache_entries(key, value, expires_at) VALUES ('fresh', 'v', NULL), ('recently-expired', 'v', now() - interval '1 minute')`)

	// While another sidecar holds the cleanup lock, a batch does not run.
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`SELECT pg_advisory_xact_lock($1)`, pgstore.CleanupLockID); err != nil {
		t.Fatal(err)
	}
	if n, ran, err := pgstore.New(db, nil).CleanupBatch(context.Background(), pgstore.CleanupPolicy{
		Retention: 7 * 24 * time.Hour, ExpiredGrace: time.Hour, Batch: 10}); err != nil || ran || n != 0 {
		t.Fatalf("cleanup while another holds the lock: ran %v, deleted %d, %v", ran, n, err)
	}
	tx.Rollback()

	cfg := longIntervals()
	cfg.CleanupInterval = 100 * time.Millisecond
	a := sidecartest.Start(t, dsn, sidecartest.Config{Jobs: cfg})
	b := sidecartest.Start(t, dsn, sidecartest.Config{Jobs: cfg})
	testutil.Eventually(t, 20*time.Second, func() (bool, string) {
		var n int
		db.QueryRow(`SELECT count(*) FROM cache_entries`).Scan(&n)
		return n == 2, fmt.Sprintf("%d rows left", n)
	})
	var keys []string
	rows, _ := db.Query(`SELECT key FROM cache_entries ORDER BY key`)
	for rows.Next() {
		var k string
		rows.Scan(&k)
		keys = append(keys, k)
	}
	rows.Close()
	if strings.Join(keys, ",") != "fresh,recently-expired" {
		t.Fatalf("left %q, want the fresh and the recently expired key", keys)
	}
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		total := a.Jobs.Stats().CleanupDeleted + b.Jobs.Stats().CleanupDeleted
		return total == 3000, fmt.Sprintf("the two sidecars deleted %d keys in all, want 3000", total)
	})
}
