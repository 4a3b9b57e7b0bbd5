// Package testdb gives tests a fresh database with pgmirror's schema, on the
// package's shared throwaway Postgres cluster (internal/pgtest).
package testdb

import (
	"context"
	"database/sql"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq" // driver "postgres"

	"pgmirror/internal/pgtest"
	"pgmirror/migrations"
)

// New creates a database on the shared cluster, applies the migrations and
// triggers.sql from the working tree, and returns its DSN and an open pool
// that is closed when the test ends.
func New(t testing.TB) (string, *sql.DB) {
	t.Helper()
	srv := pgtest.Shared(t)
	noFsync(t, srv)
	dsn := srv.CreateDB(t)
	return dsn, Migrate(t, dsn)
}

// fsyncOff is done once per test process, for the one shared cluster.
var fsyncOff struct {
	once sync.Once
	err  error
}

// noFsync turns fsync off on the shared cluster: a commit then costs about
// a tenth of what it costs with a flush to disk (measured: 1.4-2.1 ms
// against 0.15-0.19 ms under -race), and the suite commits hundreds of
// thousands of times. Nothing is lost that a test can observe: a crash or
// an immediate shutdown of Postgres leaves the written WAL in the kernel's
// page cache; only the machine failing would lose it, and the cluster is
// thrown away. synchronous_commit stays on, so that an acknowledged commit
// is still in the WAL when a test crashes the server.
func noFsync(t testing.TB, srv *pgtest.Server) {
	t.Helper()
	fsyncOff.once.Do(func() {
		db, err := sql.Open("postgres", srv.DSN("postgres"))
		if err != nil {
			fsyncOff.err = err
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// fsync takes effect on a reload, in every backend.
		if _, err := db.ExecContext(ctx, `ALTER SYSTEM SET fsync = off`); err != nil {
			fsyncOff.err = err
			return
		}
		_, fsyncOff.err = db.ExecContext(ctx, `SELECT pg_reload_conf()`)
	})
	if fsyncOff.err != nil {
		t.Fatalf("testdb: turning fsync off on the shared cluster: %v", fsyncOff.err)
	}
}

// Migrate applies the migrations and the repository's triggers.sql to dsn
// and returns an open pool that is closed when the test ends.
func Migrate(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db := Open(t, dsn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := migrations.Apply(ctx, db, pgtest.RepoFile(t, "triggers.sql"), nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return db
}

// Open returns a pool on dsn that is closed when the test ends.
func Open(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	dsns.Store(db, dsn)
	t.Cleanup(func() {
		db.Close()
		dsns.Delete(db)
	})
	return db
}

var dsns sync.Map // *sql.DB -> DSN, of the pools Open returned

// DSN returns the DSN of a pool New, Migrate or Open returned, for code
// that opens connections of its own beside it.
func DSN(t testing.TB, db *sql.DB) string {
	t.Helper()
	dsn, ok := dsns.Load(db)
	if !ok {
		t.Fatal("testdb.DSN: not a pool of testdb")
	}
	return dsn.(string)
}
