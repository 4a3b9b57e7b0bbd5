package main

// The sidecar's share of Postgres's connections (docs/operations.md, Connections): clients that
// make loaders run cannot exhaust the server.

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
)

// sidecarApp names the sidecar's connections so the test can count them.
const sidecarApp = "pgmirror-sidecar"

// startSidecarProcess runs `pgmirror serve` with the default limits on
// dsn and returns a client on its socket once it is ready.
func startSidecarProcess(t *testing.T, dsn string) *redis.Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "s.sock")
	cmd, _, stderr := command(t, nil, "serve", "--dsn", dsn+" application_name="+sidecarApp, "--http=", "--socket", socket)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if code := waitExit(t, cmd, 30*time.Second); code != 0 {
			t.Errorf("serve exited %d; stderr:\n%s", code, stderr)
		}
	})
	waitFor(t, stderr, "ready:", 30*time.Second)
	rc := redis.NewClient(&redis.Options{Network: "unix", Addr: socket, PoolSize: 200, MaxRetries: -1,
		ReadTimeout: 60 * time.Second, DialTimeout: 10 * time.Second})
	t.Cleanup(func() { rc.Close() })
	return rc
}

// TestLoadersCannotExhaustPostgres: a client tries to take every Postgres
// connection through the loaders, with 150 concurrent GETs of distinct keys
// whose loader runs pg_sleep(3), against a server with max_connections =
// 40. The sidecar stays within its limit (--max-db-conns, default 10, plus
// the listener), another role can still connect, and the writer still
// writes while the loaders run. Every GET is answered: with its value, or,
// when no loader connection freed up within --loader-timeout, with an error
// saying so.
func TestLoadersCannotExhaustPostgres(t *testing.T) {
	t.Parallel()
	srv := pgtest.New(t, pgtest.Options{MaxConnections: 40})
	dsn := srv.CreateDB(t)
	db := testdb.Migrate(t, dsn)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO cache_loaders(prefix, query) VALUES ('slow:', 'SELECT $1::text FROM pg_sleep(3)')`,
		`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'other') THEN CREATE ROLE other LOGIN; END IF; END $$`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	// Held from the start: on a full server the test could not connect to look.
	monitor, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer monitor.Close()
	count := func(where string) int {
		var n int
		if err := monitor.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE `+where).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rc := startSidecarProcess(t, dsn)

	type reply struct {
		i     int
		value string
		err   error
	}
	replies := make(chan reply, 150)
	start := time.Now()
	for i := range 150 {
		go func() {
			v, err := rc.Get(ctx, fmt.Sprint("slow:", i)).Result()
			replies <- reply{i, v, err}
		}()
	}
	deadline := time.Now().Add(15 * time.Second)
	for count(`state = 'active' AND query LIKE '%pg_sleep(3)%'`) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the loaders did not start within 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Another role connects while the loaders run.
	other, err := sql.Open("postgres", dsn+" user=other")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var one int
	if err := other.QueryRowContext(octx, `SELECT 1`).Scan(&one); err != nil {
		t.Fatalf("another role cannot connect while the sidecar's loaders run: %v", err)
	}
	// The writer writes while they run.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := rc.Set(wctx, "written", "during the loaders", 0).Err(); err != nil {
		t.Fatalf("SET while the loaders run: %v", err)
	}
	var stored string
	if err := monitor.QueryRowContext(ctx, `SELECT convert_from(value, 'UTF8') FROM cache_entries WHERE key = 'written'`).Scan(&stored); err != nil {
		t.Fatalf("the SET is not in the table: %v", err)
	}

	most := 0
	var ok, busy int
	var odd []string
	for range 150 {
		var r reply
		select {
		case r = <-replies:
		case <-time.After(60 * time.Second):
			t.Fatalf("a GET was not answered within 60s (%d ok, %d busy so far)", ok, busy)
		}
		most = max(most, count(`application_name = '`+sidecarApp+`'`))
		switch {
		case r.err == nil && r.value == fmt.Sprint(r.i):
			ok++
		case r.err != nil && strings.Contains(r.err.Error(), "connections for loaders and fetches are in use"):
			busy++
		default:
			odd = append(odd, fmt.Sprintf("%q %v", r.value, r.err))
		}
	}
	t.Logf("150 GETs in %v: %d computed, %d refused as busy; at most %d sidecar connections seen",
		time.Since(start).Round(time.Millisecond), ok, busy, most)
	if len(odd) > 0 {
		t.Fatalf("%d GETs answered otherwise, e.g. %s", len(odd), odd[0])
	}
	if ok < 6 {
		t.Fatalf("only %d GETs computed their value", ok)
	}
	if most > 11 {
		t.Fatalf("the sidecar held %d connections; --max-db-conns is 10, plus the listener's", most)
	}
}

// TestLoaderTimeoutAnswersError: a loader running longer than
// --loader-timeout (default 5s) answers an error at the timeout and
// stores nothing.
func TestLoaderTimeoutAnswersError(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	if _, err := db.Exec(`INSERT INTO cache_loaders(prefix, query) VALUES ('slow:', 'SELECT $1::text FROM pg_sleep(9)')`); err != nil {
		t.Fatal(err)
	}
	rc := startSidecarProcess(t, dsn)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			v, err := rc.Get(ctx, fmt.Sprint("slow:", i)).Result()
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), "--loader-timeout") {
				t.Errorf("GET of a loader past its timeout: %q, %v (after %v)", v, err, took)
			}
			if took > 8*time.Second {
				t.Errorf("answered after %v; the timeout is 5s", took)
			}
		}()
	}
	wg.Wait()
	var rows int
	if err := db.QueryRow(`SELECT count(*) FROM cache_entries`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("%d rows stored (%v) by loaders that timed out", rows, err)
	}
}
