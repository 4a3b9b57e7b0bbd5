package mirror_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/mirror"
)

// queries counts the statements on cache_entries this database has run (pg_stat_statements).
func queries(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	return statementCalls(t, db, `s.query ILIKE '%cache_entries%' AND s.query NOT ILIKE '%pg_stat_statements%'`)
}

// statementCalls sums the calls of this database's statements in
// pg_stat_statements (aliased s) that match the condition where.
func statementCalls(t *testing.T, db *sql.DB, where string) int64 {
	t.Helper()
	var n int64
	err := db.QueryRow(`SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s
		JOIN pg_database d ON d.oid = s.dbid
		WHERE d.datname = current_database() AND ` + where).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTinyMemory(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	const n = 3000
	exec(t, db, `INSERT INTO cache_entries(key, value)
		SELECT 'k' || i, decode(repeat(lpad(to_hex(i % 256), 2, '0'), 2000), 'hex') FROM generate_series(0, $1 - 1) i`, n)
	// hold, when set, keeps a fetch from returning until it is closed.
	var hold atomic.Pointer[chan struct{}]
	s := start(t, dsn, mirror.Options{MaxMemory: 1 << 20, // a sixth of the data
		Hooks: &mirror.Hooks{AfterFetch: func([]string) {
			if c := hold.Load(); c != nil {
				<-*c
			}
		}}})
	for round := 0; round < 2; round++ {
		for i := 0; i < n; i++ {
			got, ok := s.get(t, fmt.Sprint("k", i))
			if !ok || !bytes.Equal(got, bytes.Repeat([]byte{byte(i % 256)}, 2000)) {
				t.Fatalf("k%d wrong after eviction (found %v, %d bytes)", i, ok, len(got))
			}
		}
	}
	st := s.m.Stats()
	if st.Fetches == 0 || st.ValueBudget > 1<<20 {
		t.Fatalf("stats %+v: expected re-fetches under a 1 MiB budget", st)
	}
	t.Logf("%d fetches for %d reads; value bytes %d, index bytes %d", st.Fetches, 2*n, st.ValueBytes, st.IndexBytes)

	t.Run("absent keys cost no query", func(t *testing.T) {
		before := queries(t, db)
		for i := 0; i < 1000; i++ {
			if _, ok := s.get(t, fmt.Sprint("absent", i)); ok {
				t.Fatal("absent key found")
			}
		}
		if d := queries(t, db) - before; d != 0 {
			t.Fatalf("1000 lookups of absent keys ran %d queries, want 0", d)
		}
	})

	t.Run("concurrent reads of an evicted key share one query", func(t *testing.T) {
		s.m.EvictValue("k7")
		before := queries(t, db)
		// The fetch is held until all 50 readers wait for it: on a loaded
		// machine a reader scheduled after it returned would find the value
		// evicted again (1 MiB holds little) and rightly fetch it anew.
		release := make(chan struct{})
		var once sync.Once
		hold.Store(&release)
		defer func() { // also when the test fails before the release
			hold.Store(nil)
			once.Do(func() { close(release) })
		}()
		var wg sync.WaitGroup
		var bad atomic.Int32
		for g := 0; g < 50; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, ok, err := s.m.Get(context.Background(), "k7")
				if err != nil || !ok || len(v) != 2000 {
					bad.Add(1)
				}
			}()
		}
		testutil.Eventually(t, 20*time.Second, func() (bool, string) {
			n := goroutinesIn("TestTinyMemory", "singleflight.(*Group).Do")
			return n == 50, fmt.Sprintf("%d of 50 readers waiting on the fetch", n)
		})
		once.Do(func() { close(release) })
		wg.Wait()
		if bad.Load() != 0 {
			t.Fatalf("%d readers got a wrong answer", bad.Load())
		}
		if d := queries(t, db) - before; d != 1 {
			t.Fatalf("50 concurrent reads of an evicted key ran %d queries, want 1", d)
		}
	})
}

// goroutinesIn counts the goroutines whose stacks mention every one of
// names (function names, as runtime.Stack prints them).
func goroutinesIn(names ...string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		all := true
		for _, name := range names {
			all = all && strings.Contains(g, name)
		}
		if all {
			count++
		}
	}
	return count
}

// dbClock returns the database clock's offset from the local one, measured
// with the smallest round trip of a few tries.
func dbClock(t *testing.T, db *sql.DB) (offset, uncertainty time.Duration) {
	t.Helper()
	best := time.Hour
	for i := 0; i < 5; i++ {
		var us int64
		t0 := time.Now()
		if err := db.QueryRow(`SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint`).Scan(&us); err != nil {
			t.Fatal(err)
		}
		rtt := time.Since(t0)
		if rtt < best {
			best = rtt
			offset = time.UnixMicro(us).Sub(t0.Add(rtt / 2))
		}
	}
	return offset, best / 2
}

func TestExpiryByDatabaseClock(t *testing.T) {
	// Not parallel: it bounds how late an expiry is seen to 50 ms.
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value, expires_at) VALUES
		('past', 'p', clock_timestamp() - interval '1 second'),
		('never', 'n', NULL)`)
	s := start(t, dsn, mirror.Options{})
	if _, ok := s.get(t, "past"); ok {
		t.Fatal("an expired entry was returned")
	}
	if l, _ := s.m.Exists("past"); l.Found {
		t.Fatal("an expired entry exists")
	}
	if ttl, ok, _ := s.m.PTTL("never"); !ok || ttl != -1 {
		t.Fatalf("TTL of a key without expiry = %v, %v; want -1", ttl, ok)
	}
	offset, unc := dbClock(t, db)
	var expires int64
	err := db.QueryRow(`INSERT INTO cache_entries(key, value, expires_at) VALUES ('soon', 's', clock_timestamp() + interval '1 second')
		RETURNING (extract(epoch FROM expires_at) * 1000000)::bigint`).Scan(&expires)
	if err != nil {
		t.Fatal(err)
	}
	var lastServed time.Time
	served := 0
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		_, ok := s.get(t, "soon")
		now := time.Now()
		if ok {
			lastServed, served = now, served+1
		} else if served > 0 {
			break
		}
	}
	if served == 0 {
		t.Fatal("the entry was never served before it expired")
	}
	// The latest the database clock can have read when it was last served.
	lateBy := lastServed.Add(offset + unc).Sub(time.UnixMicro(expires))
	t.Logf("last served %v relative to expires_at (clock uncertainty %v, mirror lead %v)", lateBy, unc, s.m.ClockLead())
	if lateBy > 50*time.Millisecond {
		t.Fatalf("served %v past expires_at, want at most 50ms", lateBy)
	}
	if ttl, ok, _ := s.m.PTTL("soon"); ok {
		t.Fatalf("TTL of an expired key = %v, want missing", ttl)
	}
}

func TestStaleReads(t *testing.T) {
	t.Parallel()
	for _, staleError := range []bool{false, true} {
		t.Run(fmt.Sprint("error=", staleError), func(t *testing.T) {
			srv := pgtest.New(t)
			dsn := srv.CreateDB(t)
			db := testdb.Migrate(t, dsn)
			exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('k', 'v')`)
			s := start(t, dsn, mirror.Options{MaxStaleness: 300 * time.Millisecond, StaleError: staleError})
			if err := srv.Stop(); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 10*time.Second, func() (bool, string) {
				return s.m.State() == mirror.StateStale, s.m.State().String()
			})
			if staleError {
				testutil.Eventually(t, 10*time.Second, func() (bool, string) {
					_, _, err := s.m.Get(context.Background(), "k")
					return errors.Is(err, mirror.ErrStale), fmt.Sprintf("err = %v", err)
				})
			} else {
				deadline := time.Now().Add(time.Second)
				for time.Now().Before(deadline) { // well past the staleness bound
					if v, ok := s.get(t, "k"); !ok || string(v) != "v" {
						t.Fatalf("stale-reads=serve: k = %q (found %v) while Postgres is down", v, ok)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			db = testdb.Open(t, dsn)
			exec(t, db, `UPDATE cache_entries SET value = 'w' WHERE key = 'k'`)
			s.converges(t, db, 20*time.Second)
			testutil.Eventually(t, 10*time.Second, func() (bool, string) {
				return s.m.State() == mirror.StateReady, s.m.State().String()
			})
		})
	}
}
