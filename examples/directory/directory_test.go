package main

// The directory against a real Postgres (internal/pgtest) and an in-process
// pgmirror sidecar (internal/sidecartest).

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"pgmirror/examples/internal/demo"
	"pgmirror/internal/pgtest"
	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
)

func TestMain(m *testing.M) {
	demo.RunMainIfAsked(main) // demo_test.go runs `directory demo` as make demo-directory does
	pgtest.Main(m)
}

// The sample rows of schema.sql.
const (
	engineering = "d0000000-0000-4000-8000-000000000001"
	sales       = "d0000000-0000-4000-8000-000000000002"
	grace       = "e0000000-0000-4000-8000-000000000001"
	alan        = "e0000000-0000-4000-8000-000000000002"
	katherine   = "e0000000-0000-4000-8000-000000000003"
	mary        = "e0000000-0000-4000-8000-000000000004"
)

// setup is a database with schema.sql applied and both tables watched as
// README.md says (pgmirror_watch is the SQL function behind `pgmirror
// watch`), and a sidecar on it.
func setup(t *testing.T) (*sql.DB, *sidecartest.Sidecar) {
	t.Helper()
	dsn, db := testdb.New(t)
	for _, q := range []string{
		pgtest.RepoFile(t, "examples/directory/schema.sql"),
		`SELECT pgmirror_watch('employees', 'id', 'employee:', '{name,title,department}', 'copy')`,
		`SELECT pgmirror_watch('departments', 'id', 'department:', '{name,location,manager_id}', 'copy')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// No jobs: the access-time flush is the one statement the sidecar runs
	// because of reads, later and in batches; without it, a GET that
	// touched Postgres could only be a value fetch, which the count below sees.
	return db, sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true})
}

func managerOf(d *Directory, employee string) (string, error) {
	_, dep, err := d.ManagerOf(context.Background(), employee)
	return dep.ManagerID, err
}

func TestManagerOf(t *testing.T) {
	t.Parallel()
	db, sc := setup(t)
	d := &Directory{Cache: sc.Client}
	for employee, want := range map[string]string{alan: grace, katherine: grace, grace: grace, mary: mary} {
		if got, err := managerOf(d, employee); got != want || err != nil {
			t.Fatalf("manager of %s: %q, %v; want %s", employee, got, err, want)
		}
	}

	// A new manager, set in SQL, is the answer within moments.
	if _, err := db.Exec(`UPDATE departments SET manager_id = $1 WHERE id = $2`, katherine, engineering); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		got, err := managerOf(d, alan)
		return got == katherine, fmt.Sprintf("manager of Alan after the UPDATE: %q, %v; want Katherine %s", got, err, katherine)
	})
	// So is a move to another department (the first of the two lookups).
	if _, err := db.Exec(`UPDATE employees SET department = $1 WHERE id = $2`, sales, alan); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		got, err := managerOf(d, alan)
		return got == mary, fmt.Sprintf("manager of Alan after the move: %q, %v; want Mary %s", got, err, mary)
	})

	// The command line says the same.
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"-socket", sc.Socket, "manager-of", alan}, &out, &errOut); code != 0 ||
		out.String() != "Alan Turing (Engineer, Sales in Building 2) is managed by Mary Jackson (Head of Sales), employee "+mary+"\n" {
		t.Fatalf("directory manager-of: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
}

// TestReadPathIssuesNoSQL counts, with pg_stat_statements, the statements
// run in the database that name the directory's tables or the cache: the
// lookups must add none.
func TestReadPathIssuesNoSQL(t *testing.T) {
	t.Parallel()
	db, sc := setup(t)
	d := &Directory{Cache: sc.Client}
	count := func() int64 {
		t.Helper()
		var n int64
		err := db.QueryRow(`SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
			WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
			  AND query ~ '(employees|departments|cache_entries)' AND query !~ 'pg_stat_statements'`).Scan(&n)
		if err != nil {
			t.Fatalf("pg_stat_statements: %v", err)
		}
		return n
	}
	lookups := func() {
		t.Helper()
		for i := 0; i < 50; i++ {
			for _, employee := range []string{alan, katherine, mary} {
				if _, err := managerOf(d, employee); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// The count sees a lookup done in SQL: the check below can fail.
	before := count()
	var manager string
	if err := db.QueryRow(`SELECT d.manager_id FROM employees e JOIN departments d ON d.id = e.department WHERE e.id = $1`,
		alan).Scan(&manager); err != nil || manager != grace {
		t.Fatalf("manager of Alan in SQL: %q, %v", manager, err)
	}
	if after := count(); after != before+1 {
		t.Fatalf("pg_stat_statements counted %d statements for one lookup in SQL; want 1", after-before)
	}

	lookups() // a value the sidecar's value cache had dropped would be fetched (SQL) once, here
	before = count()
	lookups()
	if after := count(); after != before {
		t.Fatalf("150 lookups through the socket ran %d statements on the directory's tables or the cache; want 0", after-before)
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	db, sc := setup(t)
	d := &Directory{Cache: sc.Client}
	nobody := "e0000000-0000-4000-8000-000000000099"
	if _, err := managerOf(d, nobody); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "employee "+nobody) {
		t.Fatalf("unknown employee: %v; want ErrNotFound naming it", err)
	}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"-socket", sc.Socket, "manager-of", nobody}, &out, &errOut); code != 1 ||
		!strings.Contains(errOut.String(), "key employee:"+nobody+" is not in the cache") {
		t.Fatalf("directory manager-of unknown: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"-socket", sc.Socket, "who-is", alan}, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "usage: directory") {
		t.Fatalf("bad usage: exit %d, stderr %q", code, errOut.String())
	}

	// A row deleted in SQL leaves the cache too.
	if _, err := db.Exec(`DELETE FROM employees WHERE id = $1`, katherine); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		_, err := managerOf(d, katherine)
		return errors.Is(err, ErrNotFound), fmt.Sprintf("after DELETE: %v; want ErrNotFound", err)
	})
}
