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
	dsn := pgtest.Shared(t).CreateDB(t)
	return dsn, Migrate(t, dsn)
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
