package mirror_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/mirror"
)

// value is the deterministic content of row i, with bytes of every kind.
func value(i int) []byte {
	v := make([]byte, 40+i%60)
	for j := range v {
		v[j] = byte(i*31 + j*7)
	}
	return v
}

func TestWarmLoad100k(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	const n = 100000
	exec(t, db, `INSERT INTO cache_entries(key, value)
		SELECT 'k' || i, decode(repeat(lpad(to_hex(i % 256), 2, '0'), 40 + i % 60), 'hex') FROM generate_series(0, $1 - 1) i`, n)
	s := start(t, dsn, mirror.Options{})
	if st := s.m.Stats(); st.Entries != n {
		t.Fatalf("entries %d, want %d", st.Entries, n)
	}
	for i := 0; i < n; i++ {
		want := bytes.Repeat([]byte{byte(i % 256)}, 40+i%60)
		got, ok := s.get(t, fmt.Sprint("k", i))
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("k%d = %x (found %v), want %x", i, got, ok, want)
		}
	}
	if st := s.m.Stats(); st.Fetches > n/100 {
		t.Errorf("%d fetches after a warm load of %d rows; the load should have cached the values", st.Fetches, n)
	}
}

func TestPlainSQLPropagates(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	s := start(t, dsn, mirror.Options{})
	wait := func(key string, want []byte, present bool) {
		t.Helper()
		testutil.Eventually(t, 5*time.Second, func() (bool, string) {
			got, ok := s.get(t, key)
			return ok == present && bytes.Equal(got, want), fmt.Sprintf("%s = %q (found %v)", key, got, ok)
		})
	}
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('a', 'one')`)
	wait("a", []byte("one"), true)
	exec(t, db, `UPDATE cache_entries SET value = 'two' WHERE key = 'a'`)
	wait("a", []byte("two"), true)
	big := bytes.Repeat([]byte("B"), 20000) // travels as a fetch marker
	exec(t, db, `UPDATE cache_entries SET value = $1 WHERE key = 'a'`, big)
	wait("a", big, true)
	exec(t, db, `DELETE FROM cache_entries WHERE key = 'a'`)
	wait("a", nil, false)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('b', 'x'), ('c', 'y')`)
	wait("c", []byte("y"), true)
	exec(t, db, `TRUNCATE cache_entries`)
	wait("b", nil, false)
	wait("c", nil, false)
}

// writer runs random upserts and deletes over nkeys keys until stop is closed.
func writer(t testing.TB, dsn string, nkeys int, stop <-chan struct{}, wg *sync.WaitGroup) *atomic.Int64 {
	db := testdb.Open(t, dsn)
	var n atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
		for {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("w%d", r.IntN(nkeys))
			var err error
			switch r.IntN(4) {
			case 0:
				_, err = db.Exec(`DELETE FROM cache_entries WHERE key = $1`, k)
			case 1:
				_, err = db.Exec(`INSERT INTO cache_entries(key, value)
					SELECT $1 || '-' || g, $2 FROM generate_series(1, 5) g
					ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, k, value(r.IntN(1000)))
			default:
				_, err = db.Exec(`INSERT INTO cache_entries(key, value) VALUES ($1, $2)
					ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, k, value(r.IntN(1000)))
			}
			if err != nil {
				select {
				case <-stop:
				default:
					// The server may be restarting in chaos tests.
					time.Sleep(20 * time.Millisecond)
				}
				continue
			}
			n.Add(1)
		}
	}()
	return &n
}

func TestWritersDuringStartup(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	counts := []*atomic.Int64{writer(t, dsn, 300, stop, &wg), writer(t, dsn, 300, stop, &wg)}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) { return counts[0].Load() > 50, "writers started" })
	s := start(t, dsn, mirror.Options{})
	testutil.Eventually(t, 10*time.Second, func() (bool, string) { return counts[0].Load() > 500, "writers kept writing" })
	close(stop)
	wg.Wait()
	s.converges(t, db, 10*time.Second)
}

func TestListenerKilledConverges(t *testing.T) {
	t.Parallel()
	srv := pgtest.New(t)
	dsn := srv.CreateDB(t)
	db := testdb.Migrate(t, dsn)
	s := start(t, dsn, mirror.Options{})
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'pre' || i, 'v' FROM generate_series(1, 100) i`)
	s.converges(t, db, 5*time.Second)

	for round := 0; round < 3; round++ {
		if n := killListener(t, srv, dsn); n != 1 {
			t.Fatalf("killed %d listener backends, want 1", n)
		}
		// Writes while the listener is down: their notifications are lost.
		exec(t, db, `UPDATE cache_entries SET value = $1 WHERE key LIKE 'pre%'`, fmt.Sprint("round", round))
		exec(t, db, `DELETE FROM cache_entries WHERE key = $1`, fmt.Sprint("pre", round+1))
		exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ($1, 'new')`, fmt.Sprint("during", round))
		s.converges(t, db, 10*time.Second)
	}
	if st := s.l.Stats(); st.Reconnects < 1 {
		t.Fatalf("listener stats %+v: no reconnect seen", st)
	}
}

func TestServerRestartConverges(t *testing.T) {
	t.Parallel()
	srv := pgtest.New(t)
	dsn := srv.CreateDB(t)
	db := testdb.Migrate(t, dsn)
	s := start(t, dsn, mirror.Options{})
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'before' FROM generate_series(1, 200) i`)
	s.converges(t, db, 5*time.Second)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	db = testdb.Open(t, dsn)
	exec(t, db, `UPDATE cache_entries SET value = 'after' WHERE key LIKE 'k1%'`)
	exec(t, db, `DELETE FROM cache_entries WHERE key LIKE 'k2%'`)
	s.converges(t, db, 20*time.Second)
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		return s.m.State() == mirror.StateReady, s.m.State().String()
	})
}

func TestReloadRepairsSilentChanges(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"SIGHUP", "periodic", "periodic by ranges"} {
		t.Run(how, func(t *testing.T) {
			dsn, db := testdb.New(t)
			exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'v' FROM generate_series(1, 5000) i`)
			opts := mirror.Options{RangeReloadMin: -1}
			switch how {
			case "periodic":
				opts.ReloadInterval = time.Second
			case "periodic by ranges":
				opts.ReloadInterval, opts.RangeReloadMin = time.Second, 1
			}
			s := start(t, dsn, opts)
			exec(t, db, `ALTER TABLE cache_entries DISABLE TRIGGER USER`)
			exec(t, db, `UPDATE cache_entries SET value = 'silent' WHERE key IN ('k1', 'k2')`) // same versions
			exec(t, db, `DELETE FROM cache_entries WHERE key = 'k3'`)
			exec(t, db, `INSERT INTO cache_entries(key, value, version) VALUES ('ghost', 'g', 1)`)
			exec(t, db, `ALTER TABLE cache_entries ENABLE TRIGGER USER`)
			if d := s.diff(t, db); d == "" {
				t.Fatal("the mirror saw changes made without triggers; the test proves nothing")
			}
			before := s.m.Stats().Drift
			if how == "SIGHUP" {
				s.m.RequestResync("SIGHUP")
			}
			s.converges(t, db, 10*time.Second)
			testutil.Eventually(t, 5*time.Second, func() (bool, string) {
				drift := s.m.Stats().Drift - before
				return drift == 4, fmt.Sprintf("drift counted %d, want 4 (two values, one delete, one insert)", drift)
			})
		})
	}
}

func TestChurnLeavesNoMarkers(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	s := start(t, dsn, mirror.Options{MinResyncInterval: -1}) // reloads back to back, as requested
	// Churn 100,000 distinct keys through insert and delete, with reloads
	// running meanwhile (deletes leave tombstones only while one is in flight).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				s.m.RequestResync("test")
			}
		}
	}()
	for i := 0; i < 100; i++ {
		exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'c' || $1 || '-' || g, 'v' FROM generate_series(1, 1000) g`, i)
		exec(t, db, `DELETE FROM cache_entries WHERE key LIKE 'c' || $1 || '-%'`, i)
	}
	close(stop)
	wg.Wait()
	s.m.RequestResync("quiet")
	// The counters and the index's bytes are updated one after the other
	// (the last removal of the quiet reload may be between them), so all
	// three are waited for together.
	testutil.Eventually(t, 20*time.Second, func() (bool, string) {
		st := s.m.Stats()
		return st.Tombstones == 0 && st.Entries == 0 && st.IndexBytes == 0,
			fmt.Sprintf("tombstones %d entries %d index bytes %d", st.Tombstones, st.Entries, st.IndexBytes)
	})
}

func TestBackToBackReloadsNeverHideKeys(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'v' FROM generate_series(1, 2000) i`)
	s := start(t, dsn, mirror.Options{})
	stop := make(chan struct{})
	var misses, reads atomic.Int64
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprint("k", 1+rand.IntN(2000))
				if _, ok, err := s.m.Get(context.Background(), k); err != nil || !ok {
					misses.Add(1)
				}
				reads.Add(1)
			}
		}()
	}
	// Churn other keys meanwhile, so reloads have work to reconcile.
	wstop := make(chan struct{})
	var wwg sync.WaitGroup
	writer(t, dsn, 100, wstop, &wwg)
	for i := 0; i < 20; i++ {
		if _, err := s.m.Reload(context.Background(), "test"); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
	close(wstop)
	wwg.Wait()
	if misses.Load() != 0 {
		t.Fatalf("%d of %d reads missed a key that existed throughout", misses.Load(), reads.Load())
	}
	t.Logf("%d reads during 20 reloads", reads.Load())
	s.converges(t, db, 10*time.Second)
}

func TestRangeReloadReadsOnlyWhatDiffers(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'v' FROM generate_series(1, 5000) i`)
	s := start(t, dsn, mirror.Options{})
	ctx := context.Background()
	res, err := s.m.ReloadRanges(ctx, "test", 64)
	if err != nil || res.Differed != 0 || res.Rows != 0 {
		t.Fatalf("in sync: %+v, %v; want no range to differ and no row read", res, err)
	}
	exec(t, db, `ALTER TABLE cache_entries DISABLE TRIGGER USER`)
	exec(t, db, `UPDATE cache_entries SET value = 'silent' WHERE key IN ('k10', 'k20')`)
	exec(t, db, `ALTER TABLE cache_entries ENABLE TRIGGER USER`)
	res, err = s.m.ReloadRanges(ctx, "test", 64)
	if err != nil {
		t.Fatal(err)
	}
	if res.Differed < 1 || res.Differed > 2 || res.Rows > 2*5000/64*2 || res.Drift != 2 {
		t.Fatalf("after two silent changes: %+v; want 1-2 ranges re-read, few rows, drift 2", res)
	}
	if d := s.diff(t, db); d != "" {
		t.Fatalf("not converged after the range reload: %s", d)
	}
	t.Logf("range reload re-read %d of %d ranges, %d rows", res.Differed, res.Ranges, res.Rows)
}
