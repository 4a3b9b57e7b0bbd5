package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	_ "github.com/lib/pq" // the "postgres" driver
)

// DSN is a key=value connection string for dbname over the unix socket.
func (s *Server) DSN(dbname string) string {
	return s.dsn(s.root, dbname)
}

// TCPDSN is a key=value connection string for dbname over TCP to 127.0.0.1.
func (s *Server) TCPDSN(dbname string) string {
	return s.dsn("127.0.0.1", dbname)
}

func (s *Server) dsn(host, dbname string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable",
		dsnQuote(host), s.port, dsnQuote(dbname))
}

// dsnQuote quotes a key=value connection string value when it needs it.
func dsnQuote(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// quoteIdent quotes an SQL identifier.
func quoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

var dbSeq atomic.Int64

// CreateDB creates a fresh database with pg_stat_statements, drops it when
// the test ends, and returns its DSN.
func (s *Server) CreateDB(t testing.TB) string {
	t.Helper()
	name := dbName(t.Name(), dbSeq.Add(1))
	if err := s.execSQL("postgres", "CREATE DATABASE "+quoteIdent(name)); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if s.PID() == 0 {
			return // stopped or closed: nothing to drop, or no way to
		}
		// FORCE: connections the test leaked must not fail the drop.
		if err := s.execSQL("postgres", "DROP DATABASE IF EXISTS "+quoteIdent(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
		}
	})
	if err := s.execSQL(name, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		t.Fatalf("pgtest: %s: %v", name, err)
	}
	return s.DSN(name)
}

// dbName makes a database name that says which test it belongs to, within
// the 63 bytes postgres keeps of a name.
func dbName(testName string, seq int64) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		if b.Len() >= 40 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return "t_" + b.String() + "_" + strconv.FormatInt(seq, 10)
}

// TerminateBackends terminates every client backend connected to dbname
// other than the caller's own, optionally only those matching filter (an SQL
// condition on pg_stat_activity, e.g. "application_name = 'x'"), waits for
// them to exit, and returns how many there were.
func (s *Server) TerminateBackends(dbname string, filter string) (int, error) {
	if filter == "" {
		filter = "true"
	}
	// MATERIALIZED: SQL does not promise to evaluate WHERE conditions in
	// order, and pg_terminate_backend must only see rows the filter kept.
	// The 5 s timeout makes it wait until each backend is gone.
	q := `WITH victims AS MATERIALIZED (
		SELECT pid FROM pg_stat_activity
		WHERE datname = $1 AND pid <> pg_backend_pid()
		  AND backend_type IN ('client backend', 'walsender')
		  AND (` + filter + `))
	SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM victims`
	db, err := sql.Open("postgres", s.DSN("postgres"))
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(q, dbname).Scan(&n); err != nil {
		return 0, fmt.Errorf("pgtest: terminating backends of %s: %w", dbname, err)
	}
	return n, nil
}

// Exec runs one statement on a fresh connection to dsn and fails the test
// on error.
func (s *Server) Exec(t testing.TB, dsn, query string, args ...any) {
	t.Helper()
	if err := execDSN(dsn, query, args...); err != nil {
		t.Fatalf("pgtest: %s: %v", query, err)
	}
}

// execSQL runs one statement in dbname.
func (s *Server) execSQL(dbname, query string) error {
	return execDSN(s.DSN(dbname), query)
}

func execDSN(dsn, query string, args ...any) error {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(context.Background(), query, args...)
	return err
}
