package jobs_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/jobs"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// loaderQuery is the users loader of the seed's cache-aside lab.
const loaderQuery = `SELECT json_build_object('id', u.id, 'name', u.name, 'plan', u.plan)::text FROM users u WHERE u.id = $1::int`

// usersDB creates the seed's users table (5 rows) and a loader for "user:".
func usersDB(t *testing.T, ttl string) (string, *sql.DB) {
	t.Helper()
	dsn, db := testdb.New(t)
	exec(t, db, `CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, plan text NOT NULL)`)
	exec(t, db, `INSERT INTO users VALUES (1, 'ada', 'free'), (2, 'bob', 'pro'), (3, 'cy', 'free'), (4, 'di', 'pro'), (5, 'ed', 'free')`)
	exec(t, db, `INSERT INTO cache_loaders(prefix, query, ttl) VALUES ('user:', $1, $2::interval)`, loaderQuery, ttl)
	return dsn, db
}

func exec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%.80s: %v", q, err)
	}
}

// calls counts statements of this database whose text contains fragment (pg_stat_statements).
func calls(t testing.TB, db *sql.DB, fragment string) int64 {
	t.Helper()
	var n int64
	err := db.QueryRow(`SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s
		JOIN pg_database d ON d.oid = s.dbid
		WHERE d.datname = current_database() AND position($1 in s.query) > 0
		  AND s.query NOT ILIKE '%pg_stat_statements%'`, fragment).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// allQueries counts every statement of this database but the counting ones.
func allQueries(t testing.TB, db *sql.DB) int64 { return calls(t, db, "") }

func TestLoaderCacheAside(t *testing.T) {
	t.Parallel()
	dsn, db := usersDB(t, "1 hour")
	sc := sidecartest.Start(t, dsn, sidecartest.Config{Jobs: longIntervals()})
	ctx := context.Background()
	c := sc.Client

	v, err := c.Get(ctx, "user:1").Result()
	if err != nil || !strings.Contains(v, `"name" : "ada"`) {
		t.Fatalf("first GET user:1 = %q, %v", v, err)
	}
	var stored string
	if err := db.QueryRow(`SELECT convert_from(value, 'UTF8') FROM cache_entries WHERE key = 'user:1' AND expires_at > now() + interval '59 minutes'`).Scan(&stored); err != nil || stored != v {
		t.Fatalf("cache_entries after the first GET: %q, %v", stored, err)
	}
	before := allQueries(t, db)
	if v2, err := c.Get(ctx, "user:1").Result(); err != nil || v2 != v {
		t.Fatalf("second GET = %q, %v", v2, err)
	}
	if d := allQueries(t, db) - before; d != 0 {
		t.Fatalf("the second GET ran %d queries, want 0", d)
	}
	if err := c.Get(ctx, "user:99").Err(); err != redis.Nil {
		t.Fatalf("GET of a missing user: %v, want nil", err)
	}

	// 50 concurrent cold GETs run the loader once.
	runs := calls(t, db, "json_build_object")
	var wg sync.WaitGroup
	replies := make([]string, 50)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i], _ = c.Get(ctx, "user:3").Result()
		}()
	}
	wg.Wait()
	for i, r := range replies {
		if !strings.Contains(r, `"cy"`) {
			t.Fatalf("reply %d = %q", i, r)
		}
	}
	if d := calls(t, db, "json_build_object") - runs; d != 1 {
		t.Fatalf("50 concurrent cold GETs ran the loader %d times, want 1", d)
	}
}

func TestLoaderOnceAcrossSidecars(t *testing.T) {
	t.Parallel()
	dsn, db := usersDB(t, "1 hour")
	var sidecars []*sidecartest.Sidecar
	for i := 0; i < 3; i++ {
		sidecars = append(sidecars, sidecartest.Start(t, dsn, sidecartest.Config{Jobs: longIntervals()}))
	}
	runs := calls(t, db, "json_build_object")
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	replies := map[string]int{}
	gate := make(chan struct{})
	for _, sc := range sidecars {
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				v, err := sc.Client.Get(ctx, "user:2").Result()
				if err != nil {
					v = "error: " + err.Error()
				}
				mu.Lock()
				replies[v]++
				mu.Unlock()
			}()
		}
	}
	close(gate)
	wg.Wait()
	if len(replies) != 1 {
		t.Fatalf("replies differ: %v", replies)
	}
	for v, n := range replies {
		if n != 150 || !strings.Contains(v, `"bob"`) {
			t.Fatalf("replies %v", replies)
		}
	}
	if d := calls(t, db, "json_build_object") - runs; d != 1 {
		t.Fatalf("the loader ran %d times across three sidecars, want 1", d)
	}
}

func TestLoaderNegativeAndFailures(t *testing.T) {
	t.Parallel()
	dsn, db := usersDB(t, "1 hour")
	sc := sidecartest.Start(t, dsn, sidecartest.Config{Jobs: longIntervals(), Mirror: mirror.Options{NegativeTTL: 500 * time.Millisecond}})
	ctx := context.Background()
	c := sc.Client
	if err := c.Get(ctx, "user:42").Err(); err != redis.Nil {
		t.Fatalf("missing user: %v", err)
	}
	exec(t, db, `INSERT INTO users VALUES (42, 'zed', 'pro')`)
	runs := calls(t, db, "json_build_object")
	if err := c.Get(ctx, "user:42").Err(); err != redis.Nil {
		t.Fatalf("within the negative TTL the absence is remembered: %v", err)
	}
	if d := calls(t, db, "json_build_object") - runs; d != 0 {
		t.Fatalf("a remembered absence ran the loader %d times", d)
	}
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		v, err := c.Get(ctx, "user:42").Result()
		return strings.Contains(v, "zed"), fmt.Sprintf("after the negative TTL: %q %v", v, err)
	})
	// A change of the key ends a remembered absence at once.
	if err := c.Get(ctx, "user:43").Err(); err != redis.Nil {
		t.Fatal(err)
	}
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('user:43', 'written')`)
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		v, _ := c.Get(ctx, "user:43").Result()
		return v == "written", "user:43 = " + v
	})

	// A failing loader: -ERR with its reason, nothing stored.
	exec(t, db, `INSERT INTO cache_loaders(prefix, query) VALUES ('bad:', 'SELECT (1/0)::text WHERE $1::text IS NOT NULL')`)
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		err := c.Get(ctx, "bad:1").Err()
		return err != nil && strings.Contains(err.Error(), "division by zero"), fmt.Sprintf("GET bad:1: %v", err)
	})
	var n int
	db.QueryRow(`SELECT count(*) FROM cache_entries WHERE key LIKE 'bad:%'`).Scan(&n)
	if n != 0 {
		t.Fatalf("a failing loader stored %d rows", n)
	}
	// Loader rows are reloaded when cache_loaders changes.
	exec(t, db, `INSERT INTO cache_loaders(prefix, query) VALUES ('sq:', 'SELECT ($1::int * $1::int)::text')`)
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		v, err := c.Get(ctx, "sq:12").Result()
		return v == "144", fmt.Sprintf("GET sq:12 = %q %v", v, err)
	})
}

// TestComputationNeverStoredAfterInvalidation: a loader has read the old
// source row when the source changes and the entry is invalidated (deleted
// under the key's lock, as watch invalidation does). The invalidation waits
// for the computation's commit, so the stale value cannot outlive it.
func TestComputationNeverStoredAfterInvalidation(t *testing.T) {
	t.Parallel()
	dsn, db := usersDB(t, "1 hour")
	computed := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	sc := sidecartest.Start(t, dsn, sidecartest.Config{Jobs: longIntervals(), Loaders: func(l *pgstore.Loaders) {
		l.Hooks.AfterCompute = func(key string) {
			once.Do(func() { close(computed); <-release })
		}
	}})
	ctx := context.Background()
	got := make(chan string, 1)
	go func() {
		v, _ := sc.Client.Get(ctx, "user:4").Result()
		got <- v
	}()
	<-computed // the loader read plan 'pro' and holds the key lock
	invalidated := make(chan error, 1)
	go func() {
		tx, err := db.Begin()
		if err == nil {
			_, err = tx.Exec(`UPDATE users SET plan = 'enterprise' WHERE id = 4`)
		}
		if err == nil {
			_, err = tx.Exec(`SELECT pg_advisory_xact_lock(pgmirror_key_lock('user:4'))`)
		}
		if err == nil {
			_, err = tx.Exec(`DELETE FROM cache_entries WHERE key = 'user:4'`)
		}
		if err == nil {
			err = tx.Commit()
		}
		invalidated <- err
	}()
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		var waiting bool
		db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)`).Scan(&waiting)
		return waiting, "the invalidation is not waiting for the key lock"
	})
	close(release)
	if err := <-invalidated; err != nil {
		t.Fatal(err)
	}
	<-got
	var n int
	db.QueryRow(`SELECT count(*) FROM cache_entries WHERE key = 'user:4'`).Scan(&n)
	if n != 0 {
		t.Fatal("the stale computation outlived the invalidation")
	}
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		v, err := sc.Client.Get(ctx, "user:4").Result()
		return strings.Contains(v, "enterprise"), fmt.Sprintf("recomputed: %q %v", v, err)
	})
}

// longIntervals keeps the jobs quiet in tests that count queries.
func longIntervals() (c jobs.Config) {
	c.AccessFlushInterval, c.RefreshInterval, c.CleanupInterval = time.Hour, time.Hour, time.Hour
	return c
}

// TestServeStale: with --serve-stale, an expired value of a key with a
// loader is served for at most that long; after it, the loader recomputes.
func TestServeStale(t *testing.T) {
	// Not parallel: it reads an expired key within a bound of its expiry.
	for _, stale := range []time.Duration{0, 1500 * time.Millisecond} {
		t.Run(fmt.Sprint("serve-stale=", stale), func(t *testing.T) {
			dsn, db := usersDB(t, "1 hour")
			exec(t, db, `INSERT INTO cache_entries(key, value, expires_at) VALUES ('user:1', 'kept', clock_timestamp() + interval '300 milliseconds')`)
			sc := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true, Mirror: mirror.Options{ServeStale: stale}})
			ctx := context.Background()
			var expires time.Time
			db.QueryRow(`SELECT expires_at FROM cache_entries WHERE key = 'user:1'`).Scan(&expires)
			testutil.Eventually(t, 5*time.Second, func() (bool, string) {
				return time.Now().After(expires.Add(100 * time.Millisecond)), "not expired yet"
			})
			v, err := sc.Client.Get(ctx, "user:1").Result()
			if stale == 0 {
				if !strings.Contains(v, "ada") {
					t.Fatalf("without serve-stale an expired key is recomputed: %q %v", v, err)
				}
				return
			}
			if v != "kept" {
				t.Fatalf("within the serve-stale bound the expired value is served: %q %v", v, err)
			}
			testutil.Eventually(t, 5*time.Second, func() (bool, string) {
				v, err := sc.Client.Get(ctx, "user:1").Result()
				return strings.Contains(v, "ada"), fmt.Sprintf("after the bound: %q %v", v, err)
			})
			if time.Since(expires) < stale {
				t.Fatalf("the stale value stopped being served %v after expiry, before the %v bound", time.Since(expires), stale)
			}
		})
	}
}
