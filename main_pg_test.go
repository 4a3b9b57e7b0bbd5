package main

// The command line against a real Postgres (internal/pgtest).

import (
	"context"
	"errors"
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
	"pgmirror/migrations"
)

func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Shared(t).CreateDB(t)
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}

	cmd, stdout, stderr := command(t, nil, "migrate", "--dsn", dsn)
	if code := exitCode(t, cmd); code != 0 {
		t.Fatalf("first migrate exited %d: %s", code, stderr)
	}
	for _, m := range all {
		if !strings.Contains(stdout.String(), "applied "+m.Name+"\n") {
			t.Errorf("first migrate output lacks %q:\n%s", "applied "+m.Name, stdout)
		}
	}
	if !strings.Contains(stdout.String(), "triggers.sql installed\n") {
		t.Errorf("first migrate output lacks the triggers:\n%s", stdout)
	}

	cmd, stdout, stderr = command(t, nil, "migrate", "--dsn", dsn)
	if code := exitCode(t, cmd); code != 0 {
		t.Fatalf("second migrate exited %d: %s", code, stderr)
	}
	if got := stdout.String(); got != "nothing to do: schema up to date\n" {
		t.Fatalf("second migrate printed %q, want that nothing was applied", got)
	}
}

func TestMigrateConcurrentProcesses(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Shared(t).CreateDB(t)
	var wg sync.WaitGroup
	outs := make([]string, 5)
	for i := range outs {
		cmd, stdout, stderr := command(t, []string{"PGMIRROR_DSN=" + dsn}, "migrate")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code := waitExit(t, cmd, time.Minute); code != 0 {
				t.Errorf("migrate process %d exited %d: %s", i, code, stderr)
			}
			outs[i] = stdout.String()
		}()
	}
	wg.Wait()
	installed := 0
	for _, out := range outs {
		if strings.Contains(out, "triggers.sql installed") {
			installed++
		} else if out != "nothing to do: schema up to date\n" {
			t.Errorf("unexpected output %q", out)
		}
	}
	if installed != 1 {
		t.Fatalf("%d of 5 runs installed the schema, want 1: %q", installed, outs)
	}
	var tables, triggers int
	err := testdb.Open(t, dsn).QueryRow(`SELECT
		(SELECT count(*) FROM pg_tables WHERE tablename IN ('cache_entries', 'cache_loaders')),
		(SELECT count(*) FROM pg_trigger WHERE tgrelid = 'cache_entries'::regclass AND NOT tgisinternal)`).Scan(&tables, &triggers)
	if err != nil || tables != 2 || triggers != 6 {
		t.Fatalf("schema after 5 concurrent runs: %d tables, %d triggers (%v); want 2 and 6", tables, triggers, err)
	}
}

// TestMigrateSharedSchema: migrate refuses a schema PUBLIC may CREATE in,
// exits 1 saying why and how to fix it, and proceeds with
// --allow-shared-schema or PGMIRROR_ALLOW_SHARED_SCHEMA.
func TestMigrateSharedSchema(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t)
	dsn := srv.CreateDB(t)
	srv.Exec(t, dsn, `GRANT CREATE ON SCHEMA public TO PUBLIC`)
	cmd, stdout, stderr := command(t, nil, "migrate", "--dsn", dsn)
	if code := exitCode(t, cmd); code != 1 || stdout.String() != "" ||
		!strings.Contains(stderr.String(), `REVOKE CREATE ON SCHEMA "public" FROM PUBLIC`) ||
		!strings.Contains(stderr.String(), "--allow-shared-schema") {
		t.Fatalf("migrate in a shared schema: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	cmd, stdout, stderr = command(t, []string{"PGMIRROR_ALLOW_SHARED_SCHEMA=true"}, "migrate", "--dsn", dsn)
	if code := exitCode(t, cmd); code != 0 || !strings.Contains(stdout.String(), "triggers.sql installed") {
		t.Fatalf("migrate with PGMIRROR_ALLOW_SHARED_SCHEMA: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	cmd, stdout, stderr = command(t, nil, "migrate", "--allow-shared-schema", "--dsn", dsn)
	if code := exitCode(t, cmd); code != 0 || stdout.String() != "nothing to do: schema up to date\n" {
		t.Fatalf("migrate --allow-shared-schema again: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

func TestMigrateUnreachable(t *testing.T) {
	t.Parallel()
	cmd, _, stderr := command(t, nil, "migrate", "--dsn",
		"postgres://u:hunter2secret@/x?host=/nonexistent-pgmirror&port=1&connect_timeout=1&sslmode=disable")
	if code := exitCode(t, cmd); code != 1 {
		t.Fatalf("exit %d, want 1; stderr: %s", code, stderr)
	}
	if !strings.Contains(stderr.String(), "cannot reach Postgres") || strings.Contains(stderr.String(), "hunter2secret") {
		t.Fatalf("stderr should say Postgres is unreachable without the password:\n%s", stderr)
	}
}

// TestServeWaitsForPostgres starts serve while Postgres is down: it retries,
// connects once the server is up, migrates (--migrate), and stops with exit 0
// on SIGTERM.
func TestServeWaitsForPostgres(t *testing.T) {
	t.Parallel()
	srv := pgtest.New(t)
	dsn := srv.CreateDB(t)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	cmd, _, stderr := command(t, nil, "serve", "--dsn", dsn, "--migrate", "--http=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, stderr, "will retry", 30*time.Second)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, stderr, "connected", 30*time.Second)
	waitFor(t, stderr, "schema ready", 30*time.Second)
	var n int
	if err := testdb.Open(t, dsn).QueryRow(`SELECT count(*) FROM cache_entries`).Scan(&n); err != nil {
		t.Fatalf("serve --migrate did not create the schema: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd, 10*time.Second); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr.String(), "stopped") {
		t.Fatalf("serve did not log its stop:\n%s", stderr)
	}
}

// TestServeLoadsAndResyncsOnSIGHUP runs the sidecar over a table with rows:
// it loads them, reports ready, reloads on SIGHUP and stops on SIGTERM.
func TestServeLoadsAndResyncsOnSIGHUP(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	if _, err := db.Exec(`INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'v' FROM generate_series(1, 250) i`); err != nil {
		t.Fatal(err)
	}
	cmd, _, stderr := command(t, nil, "serve", "--dsn", dsn, "--http=", "--reload-interval=0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, stderr, "ready: entries=250", 30*time.Second)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, stderr, `reason=SIGHUP rows=250 drift=0`, 30*time.Second)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd, 10*time.Second); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM; stderr:\n%s", code, stderr)
	}
}

func TestServeRefusesUnmigratedDatabase(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Shared(t).CreateDB(t)
	cmd, _, stderr := command(t, nil, "serve", "--dsn", dsn, "--http=")
	if code := exitCode(t, cmd); code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr.String(), "run `pgmirror migrate`") {
		t.Fatalf("stderr should point at migrate:\n%s", stderr)
	}
}

// TestSIGTERMWhileWriting stops the sidecar while 50 clients write: it exits
// 0, removes its socket, and every SET that was answered OK is in the table.
func TestSIGTERMWhileWriting(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	dir, err := os.MkdirTemp("", "pgm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "s.sock")
	cmd, _, stderr := command(t, nil, "serve", "--dsn", dsn, "--http=", "--socket", socket)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, stderr, "ready:", 30*time.Second)
	rc := redis.NewClient(&redis.Options{Network: "unix", Addr: socket, PoolSize: 50, MaxRetries: -1})
	defer rc.Close()
	var (
		mu   sync.Mutex
		oked []string
		wg   sync.WaitGroup
	)
	ctx := context.Background()
	for c := 0; c < 50; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				key := fmt.Sprintf("c%d-%d", c, i)
				if err := rc.Set(ctx, key, "v", 0).Err(); err != nil {
					return // the server is going away
				}
				mu.Lock()
				oked = append(oked, key)
				mu.Unlock()
			}
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(oked)
		mu.Unlock()
		if n >= 500 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, stderr)
	}
	wg.Wait()
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after exit: %v", err)
	}
	var missing []string
	for _, key := range oked {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM cache_entries WHERE key = $1`, key).Scan(&n); err != nil || n != 1 {
			missing = append(missing, key)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d acknowledged SETs are not in the table, e.g. %q", len(missing), len(oked), missing[0])
	}
	t.Logf("%d acknowledged SETs, all in the table", len(oked))
}

// TestLoaderOnceAcrossProcesses runs three sidecar processes; 50 concurrent
// cold GETs of one key on each run its loader once in all.
func TestLoaderOnceAcrossProcesses(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	for _, q := range []string{
		`CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL)`,
		`INSERT INTO users VALUES (1, 'ada'), (2, 'bob')`,
		`INSERT INTO cache_loaders(prefix, query, ttl) VALUES ('user:', 'SELECT name FROM users WHERE id = $1::int', '1 hour')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "pgm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	var clients []*redis.Client
	for i := 0; i < 3; i++ {
		socket := filepath.Join(dir, fmt.Sprintf("s%d.sock", i))
		cmd, _, stderr := command(t, nil, "serve", "--dsn", dsn, "--http=", "--socket", socket)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Signal(syscall.SIGTERM); waitExit(t, cmd, 20*time.Second) }()
		waitFor(t, stderr, "ready:", 30*time.Second)
		rc := redis.NewClient(&redis.Options{Network: "unix", Addr: socket, PoolSize: 50})
		defer rc.Close()
		clients = append(clients, rc)
	}
	var before int64
	countRuns := func() int64 {
		var n int64
		db.QueryRow(`SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
			WHERE d.datname = current_database() AND s.query LIKE 'SELECT name FROM users%'`).Scan(&n)
		return n
	}
	before = countRuns()
	var wg sync.WaitGroup
	var mu sync.Mutex
	replies := map[string]int{}
	gate := make(chan struct{})
	for _, rc := range clients {
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				v, err := rc.Get(context.Background(), "user:2").Result()
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
	if len(replies) != 1 || replies["bob"] != 150 {
		t.Fatalf("replies %v, want bob 150 times", replies)
	}
	if d := countRuns() - before; d != 1 {
		t.Fatalf("the loader ran %d times across three processes, want 1", d)
	}
}

// TestPasswordNeverLogged runs a full startup, a reconnect and failed
// connections with a password in the DSN, at debug level: no line of the
// output contains the password.
func TestPasswordNeverLogged(t *testing.T) {
	t.Parallel()
	srv := pgtest.New(t)
	dsn := srv.CreateDB(t)
	testdb.Migrate(t, dsn)
	const secret = "hunter2-Secret"
	dir, err := os.MkdirTemp("", "pgm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cmd, stdout, stderr := command(t, nil, "serve", "--dsn", dsn+" password="+secret, "--http=127.0.0.1:0",
		"--log-level=trace", "--socket", filepath.Join(dir, "s.sock"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, stderr, "ready:", 30*time.Second)
	if _, err := srv.TerminateBackends(dsnName(dsn), ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, stderr, "listener reconnected", 30*time.Second)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, stderr, "listener cannot connect", 30*time.Second)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, stderr, "reason=reconnected", 30*time.Second)
	cmd.Process.Signal(syscall.SIGTERM)
	waitExit(t, cmd, 20*time.Second)
	if out := stdout.String() + stderr.String(); strings.Contains(out, secret) {
		t.Fatalf("the password appears in the output:\n%s", out)
	}
}

func dsnName(dsn string) string {
	rest := dsn[strings.Index(dsn, "dbname=")+len("dbname="):]
	return strings.Fields(rest)[0]
}
