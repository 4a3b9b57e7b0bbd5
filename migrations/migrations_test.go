package migrations_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func apply(t *testing.T, dsn string) migrations.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := migrations.Apply(ctx, testdb.Open(t, dsn), pgtest.RepoFile(t, "triggers.sql"), nil)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res
}

func TestApplyTwice(t *testing.T) {
	dsn := pgtest.Shared(t).CreateDB(t)
	all, err := migrations.All()
	if err != nil || len(all) == 0 {
		t.Fatalf("embedded migrations: %v (%d files)", err, len(all))
	}
	first := apply(t, dsn)
	if len(first.Applied) != len(all) || !first.TriggersUpdated || first.Schema != "public" {
		t.Fatalf("first run: %+v, want all %d migrations and the triggers in public", first, len(all))
	}
	second := apply(t, dsn)
	if second.Changed() {
		t.Fatalf("second run changed something: %+v", second)
	}
	var n int
	db := testdb.Open(t, dsn)
	if err := db.QueryRow(`SELECT count(*) FROM pgmirror_schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(all)+1 {
		t.Fatalf("%d recorded files, want %d", n, len(all)+1)
	}
}

func TestApplyConcurrently(t *testing.T) {
	dsn := pgtest.Shared(t).CreateDB(t)
	var wg sync.WaitGroup
	results := make([]migrations.Result, 5)
	errs := make([]error, 5)
	for i := range results {
		db := testdb.Open(t, dsn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = migrations.Apply(context.Background(), db, pgtest.RepoFile(t, "triggers.sql"), nil)
		}()
	}
	wg.Wait()
	changed := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if results[i].Changed() {
			changed++
		}
	}
	if changed != 1 {
		t.Fatalf("%d runs changed the schema, want exactly 1", changed)
	}
	assertSchemaOnce(t, dsn)
}

// assertSchemaOnce checks that every object exists exactly once.
func assertSchemaOnce(t *testing.T, dsn string) {
	t.Helper()
	db := testdb.Open(t, dsn)
	var tables, triggers, seqs int
	err := db.QueryRow(`SELECT
		(SELECT count(*) FROM pg_tables WHERE tablename IN ('cache_entries', 'cache_loaders', 'pgmirror_schema_migrations')),
		(SELECT count(*) FROM pg_trigger WHERE tgrelid = 'cache_entries'::regclass AND NOT tgisinternal),
		(SELECT count(*) FROM pg_class WHERE relname = 'cache_entries_version_seq')`).Scan(&tables, &triggers, &seqs)
	if err != nil {
		t.Fatal(err)
	}
	if tables != 3 || triggers != 6 || seqs != 1 {
		t.Fatalf("tables %d, triggers %d, sequences %d; want 3, 6, 1", tables, triggers, seqs)
	}
}

func TestTriggersReappliedWhenChanged(t *testing.T) {
	dsn := pgtest.Shared(t).CreateDB(t)
	apply(t, dsn)
	db := testdb.Open(t, dsn)
	edited := pgtest.RepoFile(t, "triggers.sql") + "\n-- a later edit\n"
	res, err := migrations.Apply(context.Background(), db, edited, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Applied) != 0 || !res.TriggersUpdated {
		t.Fatalf("after editing triggers.sql: %+v, want only the triggers reinstalled", res)
	}
	assertSchemaOnce(t, dsn)
}

func TestEditedMigrationIsRefused(t *testing.T) {
	dsn := pgtest.Shared(t).CreateDB(t)
	apply(t, dsn)
	db := testdb.Open(t, dsn)
	if _, err := db.Exec(`UPDATE pgmirror_schema_migrations SET checksum = 'different' WHERE name LIKE '0001%'`); err != nil {
		t.Fatal(err)
	}
	_, err := migrations.Apply(context.Background(), db, pgtest.RepoFile(t, "triggers.sql"), nil)
	if err == nil || !strings.Contains(err.Error(), "changed after it was applied") {
		t.Fatalf("err = %v, want a refusal naming the edited migration", err)
	}
}

func TestApplyInOtherSchema(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := srv.CreateDB(t)
	srv.Exec(t, dsn, `CREATE SCHEMA cachesch`)
	res := apply(t, dsn+" search_path=cachesch")
	if res.Schema != "cachesch" {
		t.Fatalf("schema %q, want cachesch", res.Schema)
	}
	db := testdb.Open(t, dsn)
	if _, err := db.Exec(`INSERT INTO cachesch.cache_entries(key, value) VALUES ('k', 'v')`); err != nil {
		t.Fatalf("insert into the other schema: %v", err)
	}
}

func TestDroppedOrDisabledTriggersAreRepaired(t *testing.T) {
	dsn := pgtest.Shared(t).CreateDB(t)
	apply(t, dsn)
	db := testdb.Open(t, dsn)
	for _, breakIt := range []string{
		`DROP TRIGGER pgmirror_20_notify_delete ON cache_entries`,
		`ALTER TABLE cache_entries DISABLE TRIGGER pgmirror_10_stamp_update`,
		`ALTER TABLE cache_entries ENABLE TRIGGER pgmirror_20_notify_insert`, // fires, but not under replica role
	} {
		if _, err := db.Exec(breakIt); err != nil {
			t.Fatal(err)
		}
		if res := apply(t, dsn); !res.TriggersUpdated || len(res.Applied) != 0 {
			t.Fatalf("after %q: %+v, want the triggers reinstalled", breakIt, res)
		}
		assertSchemaOnce(t, dsn)
		if res := apply(t, dsn); res.Changed() {
			t.Fatalf("after the repair of %q a second run changed something: %+v", breakIt, res)
		}
	}
}
