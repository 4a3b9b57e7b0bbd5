package pgstore_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/pgstore"
)

// sleeping counts this database's backends running a loader's pg_sleep.
func sleeping(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
		AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLoaderTimeoutStoresNothing: a loader running longer than its timeout
// is cancelled by the server, answers an error quickly, and stores nothing.
func TestLoaderTimeoutStoresNothing(t *testing.T) {
	_, db := testdb.New(t)
	if _, err := db.Exec(`INSERT INTO cache_loaders(prefix, query) VALUES ('slow:', 'SELECT $1::text FROM pg_sleep(30)')`); err != nil {
		t.Fatal(err)
	}
	apply := newFakeApplier()
	l := pgstore.NewLoaders(db, nil)
	l.Timeout = 300 * time.Millisecond
	ctx := context.Background()
	if err := l.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err := l.Load(ctx, apply, "slow:1")
	took := time.Since(start)
	if !errors.Is(err, pgstore.ErrLoaderFailed) || !strings.Contains(err.Error(), "--loader-timeout") {
		t.Fatalf("a loader past its timeout returned %v", err)
	}
	if took > 3*time.Second {
		t.Fatalf("the loader answered after %v, its timeout is 300ms", took)
	}
	var rows int
	if err := db.QueryRow(`SELECT count(*) FROM cache_entries`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("cache_entries holds %d rows (%v) after a loader timed out", rows, err)
	}
	if calls := apply.Calls(); len(calls) != 0 {
		t.Fatalf("the mirror was given %v", calls)
	}
	if n := sleeping(t, db); n != 0 {
		t.Fatalf("%d loader queries still run on the server", n)
	}
	// The key's lock was released with the transaction: a later load runs.
	if _, err := db.Exec(`UPDATE cache_loaders SET query = 'SELECT ''ok:'' || $1::text' WHERE prefix = 'slow:'`); err != nil {
		t.Fatal(err)
	}
	if err := l.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := l.Load(ctx, apply, "slow:1"); err != nil || !ok || string(v) != "ok:1" {
		t.Fatalf("load after the timeout: %q %v %v", v, ok, err)
	}
}

// TestLoaderGate: loaders never run more computations at once than their
// gate allows, and one that cannot get a slot within its timeout fails
// with ErrBusy; fetches share the gate.
func TestLoaderGate(t *testing.T) {
	_, db := testdb.New(t)
	if _, err := db.Exec(`INSERT INTO cache_loaders(prefix, query) VALUES ('slow:', 'SELECT $1::text FROM pg_sleep(0.5)')`); err != nil {
		t.Fatal(err)
	}
	gate := pgstore.NewGate(2)
	apply := newFakeApplier()
	l := pgstore.NewLoaders(db, nil)
	l.Gate, l.Timeout = gate, 10*time.Second
	ctx := context.Background()
	if err := l.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v, ok, err := l.Load(ctx, apply, fmt.Sprint("slow:", i)); err != nil || !ok || string(v) != fmt.Sprint(i) {
				errs <- fmt.Errorf("load %d: %q %v %v", i, v, ok, err)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	most := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-time.After(20 * time.Millisecond):
			most = max(most, sleeping(t, db))
		}
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if most > 2 || most == 0 {
		t.Fatalf("%d loader queries ran at once through a gate of 2", most)
	}

	// Every slot taken: a loader waits its timeout, then fails.
	if err := gate.Acquire(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := gate.Acquire(ctx, 0); err != nil {
		t.Fatal(err)
	}
	l.Timeout = 200 * time.Millisecond
	start := time.Now()
	if _, _, err := l.Load(ctx, apply, "slow:busy"); !errors.Is(err, pgstore.ErrBusy) || !errors.Is(err, pgstore.ErrLoaderFailed) {
		t.Fatalf("a loader without a slot returned %v", err)
	}
	if took := time.Since(start); took < 150*time.Millisecond || took > 3*time.Second {
		t.Fatalf("a loader without a slot failed after %v, its timeout is 200ms", took)
	}
	s := pgstore.New(db, nil)
	s.Gate, s.GateWait = gate, 100*time.Millisecond
	if _, err := s.Fetch(ctx, []string{"k"}); !errors.Is(err, pgstore.ErrBusy) {
		t.Fatalf("a fetch without a slot returned %v", err)
	}
	gate.Release()
	if _, err := s.Fetch(ctx, []string{"k"}); err != nil {
		t.Fatalf("a fetch with a free slot: %v", err)
	}
	if gate.InUse() != 1 {
		t.Fatalf("%d slots in use, want the one the test holds", gate.InUse())
	}
}

// TestLimitPool: the pool opens at most maxConns connections, and the gate
// gets all but the reserved ones.
func TestLimitPool(t *testing.T) {
	_, db := testdb.New(t)
	if _, err := pgstore.LimitPool(db, 4, 1); err == nil {
		t.Fatal("4 connections with 4 reserved were accepted")
	}
	gate, err := pgstore.LimitPool(db, 10, 1)
	if err != nil || gate.Cap() != 6 {
		t.Fatalf("LimitPool(10, 1): gate of %d, %v; want 6", gate.Cap(), err)
	}
	if got := db.Stats().MaxOpenConnections; got != 10 {
		t.Fatalf("MaxOpenConnections = %d", got)
	}
}

// TestLimitPoolKeepsItsConnections: connections a burst opened stay open
// for the next (database/sql would keep 2 and close the rest; each new one
// pays a connect and compiling pgmirror_write's PL/pgSQL on first use).
func TestLimitPoolKeepsItsConnections(t *testing.T) {
	dsn, _ := testdb.New(t)
	db := testdb.Open(t, dsn)
	if _, err := pgstore.LimitPool(db, 8, 1); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conns := make([]*sql.Conn, 6)
	for i := range conns {
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	for _, c := range conns {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if st := db.Stats(); st.Idle != 6 || st.MaxIdleClosed != 0 {
		t.Fatalf("after a burst of 6: %d idle, %d closed as surplus; want 6 and 0", st.Idle, st.MaxIdleClosed)
	}
}
