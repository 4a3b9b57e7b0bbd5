package pgtest_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"pgmirror/internal/pgtest"

	_ "github.com/lib/pq"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// open connects to dsn and closes the pool when the test ends.
func open(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// queryInt runs a query returning one integer.
func queryInt(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func TestSharedServerBasics(t *testing.T) {
	s := pgtest.Shared(t)
	db := open(t, s.DSN("postgres"))
	if n := queryInt(t, db, "SELECT 1"); n != 1 {
		t.Fatalf("SELECT 1 = %d", n)
	}
	queryInt(t, db, "SELECT count(*) FROM pg_stat_statements")
	if n := queryInt(t, open(t, s.TCPDSN("postgres")), "SELECT 2"); n != 2 {
		t.Fatalf("SELECT 2 over TCP = %d", n)
	}
	if len(s.SocketDir()+"/.s.PGSQL.65535") > 107 {
		t.Errorf("socket path too long: %s", s.SocketDir())
	}
	if _, err := os.Stat(filepath.Join(s.BinDir(), "initdb")); err != nil {
		t.Errorf("BinDir: %v", err)
	}
	fi, err := os.Stat("/proc/" + itoa(s.PID()))
	if err != nil {
		t.Fatal(err)
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; os.Geteuid() == 0 && uid == 0 {
		t.Errorf("postmaster runs as root")
	}
}

func TestStatStatementsCountsQueries(t *testing.T) {
	s := pgtest.Shared(t)
	dsn := s.CreateDB(t)
	db := open(t, dsn)
	for range 3 {
		queryInt(t, db, "SELECT 41 + 1 AS pgtest_marker")
	}
	// The view is cluster-wide: restrict it to this test's database.
	n := queryInt(t, db, `SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND query LIKE '%pgtest_marker%' AND query NOT LIKE '%pg_stat_statements%'`)
	if n != 3 {
		t.Fatalf("pg_stat_statements counted %d calls, want 3", n)
	}
}

func TestOptions(t *testing.T) {
	s := pgtest.New(t, pgtest.Options{Settings: map[string]string{"work_mem": "7MB"}, MaxConnections: 42})
	db := open(t, s.DSN("postgres"))
	for setting, want := range map[string]string{
		"work_mem": "7MB", "max_connections": "42",
		"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.track": "all",
	} {
		var got string
		if err := db.QueryRow("SELECT current_setting($1)", setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %q, want %q", setting, got, want)
		}
	}
}

func TestCreateDBIsolated(t *testing.T) {
	s := pgtest.Shared(t)
	a, b := open(t, s.CreateDB(t)), open(t, s.CreateDB(t))
	if _, err := a.Exec("CREATE TABLE only_in_a (x int)"); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, b, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'"); n != 0 {
		t.Fatal("table created in one database is visible in the other")
	}
	for _, db := range []*sql.DB{a, b} {
		if n := queryInt(t, db, "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"); n != 1 {
			t.Fatal("pg_stat_statements extension missing")
		}
	}
}

func TestCreateDBDroppedAfterTest(t *testing.T) {
	s := pgtest.Shared(t)
	var name string
	t.Run("inner", func(t *testing.T) {
		db := open(t, s.CreateDB(t))
		if err := db.QueryRow("SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		// The pool stays open: WITH (FORCE) must cope with leaked sessions.
	})
	db := open(t, s.DSN("postgres"))
	if n := queryInt(t, db, "SELECT count(*) FROM pg_database WHERE datname = $1", name); n != 0 {
		t.Fatalf("database %s survived its test", name)
	}
}

func TestTerminateBackends(t *testing.T) {
	s := pgtest.Shared(t)
	dsn := s.CreateDB(t)
	ctx := context.Background()
	victim, err := open(t, dsn+" application_name=victim").Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	other, err := open(t, dsn).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var dbname string
	if err := other.QueryRowContext(ctx, "SELECT current_database()").Scan(&dbname); err != nil {
		t.Fatal(err)
	}

	n, err := s.TerminateBackends(dbname, "application_name = 'victim'")
	if err != nil || n != 1 {
		t.Fatalf("TerminateBackends = %d, %v; want 1", n, err)
	}
	if _, err := victim.ExecContext(ctx, "SELECT 1"); err == nil {
		t.Error("terminated connection still works")
	}
	if _, err := other.ExecContext(ctx, "SELECT 1"); err != nil {
		t.Errorf("unfiltered connection was hit: %v", err)
	}
	if n, err := s.TerminateBackends(dbname, ""); err != nil || n != 1 {
		t.Fatalf("TerminateBackends without filter = %d, %v; want 1", n, err)
	}
}

func TestRepoFile(t *testing.T) {
	if !strings.Contains(pgtest.RepoFile(t, "go.mod"), "module pgmirror") {
		t.Fatal("RepoFile(go.mod) lacks the module line")
	}
}
