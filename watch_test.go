package main

// pgmirror watch / unwatch, run as the binary against a real Postgres.

import (
	"database/sql"
	"strings"
	"testing"

	"pgmirror/internal/testdb"
)

// watchState is what a watch leaves in the database.
type watchState struct {
	triggers, functions, watches, entries int
	seq                                   int64 // last value of the version sequence: any write to cache_entries moves it
}

func readWatchState(t *testing.T, db *sql.DB, table, prefix string) watchState {
	t.Helper()
	var s watchState
	err := db.QueryRow(`SELECT
		(SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal),
		(SELECT count(*) FROM pg_proc WHERE proname LIKE 'pgmirror\_watch\_%' AND prorettype = 'trigger'::regtype),
		(SELECT count(*) FROM pgmirror_watches),
		(SELECT count(*) FROM cache_entries WHERE starts_with(key, $2)),
		(SELECT last_value FROM cache_entries_version_seq)`, table, prefix).
		Scan(&s.triggers, &s.functions, &s.watches, &s.entries, &s.seq)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func runPgmirror(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd, out, errOut := command(t, nil, args...)
	code = exitCode(t, cmd)
	return code, out.String(), errOut.String()
}

func TestWatchCommand(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	for _, q := range []string{
		`CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL, plan text NOT NULL)`,
		`INSERT INTO users VALUES (1, 'ada', 'free'), (2, 'bob', 'pro')`,
		`CREATE TABLE events (msg text)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}

	// Bad usage: exit 2, nothing done.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"watch", "--dsn", dsn, "--table", "users", "--key", "id"}, "pgmirror watch needs --prefix"},
		{[]string{"watch", "--dsn", dsn}, "pgmirror watch needs --table, --key, --prefix"},
		{[]string{"watch", "--dsn", dsn, "--table", "users", "--key", "id", "--prefix", "u:", "--mode", "mirror"},
			`invalid value "mirror" for flag --mode: want copy or invalidate`},
		{[]string{"watch", "--dsn", dsn, "--table", "users", "--key", "id", "--prefix", ""}, "for flag --prefix: want a non-empty prefix"},
		{[]string{"watch", "--dsn", dsn, "--table", "users", "--key", "id", "--prefix", "u:", "--columns", "name,,plan"},
			"for flag --columns: want a comma-separated list"},
		{[]string{"watch", "--dsn", dsn, "--table", "users", "--key", "id", "--prefix", "u:", "extra"}, `unexpected argument "extra"`},
		{[]string{"watch", "--table", "users", "--key", "id", "--prefix", "u:", "--socket", "/x"}, "flag provided but not defined: --socket"},
		{[]string{"unwatch", "--dsn", dsn}, "pgmirror unwatch needs --table"},
		{[]string{"unwatch", "--dsn", dsn, "--table", "users", "--key", "id"}, "flag provided but not defined: --key"},
	} {
		code, _, stderr := runPgmirror(t, tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and %q", tt.args[1:], code, stderr, tt.want)
		}
	}
	if s := readWatchState(t, db, "users", "user:"); s.triggers != 0 || s.watches != 0 {
		t.Fatalf("bad usage changed the database: %+v", s)
	}

	// Failures: exit 1 with a clear message.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--table", "events", "--key", "id", "--prefix", "ev:"}, "pgmirror: watch events: table events has no column id (Its columns: msg)"},
		{[]string{"--table", "users", "--key", "id", "--prefix", "user:", "--columns", "name,bogus"}, "table users has no column bogus"},
		{[]string{"--table", "nosuch", "--key", "id", "--prefix", "n:"}, `relation "nosuch" does not exist`},
		{[]string{"--table", "events", "--key", "msg", "--prefix", "ev:"}, "copy mode needs column msg of events to be unique"},
		{[]string{"--table", "cache_entries", "--key", "key", "--prefix", "ce:"}, "one of pgmirror's own tables"},
	} {
		code, stdout, stderr := runPgmirror(t, append([]string{"watch", "--dsn", dsn}, tt.args...)...)
		if code != 1 || !strings.Contains(stderr, tt.want) || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 1 and %q", tt.args, code, stdout, stderr, tt.want)
		}
	}
	if code, _, stderr := runPgmirror(t, "watch", "--dsn", "host=/nonexistent-dir port=1 dbname=x connect_timeout=1",
		"--table", "users", "--key", "id", "--prefix", "user:"); code != 1 || !strings.Contains(stderr, "watch: cannot reach Postgres") {
		t.Errorf("unreachable: exit %d, %q", code, stderr)
	}

	// Watch: the table is copied at once.
	code, stdout, stderr := runPgmirror(t, "watch", "--dsn", dsn, "--table", "users", "--key", "id", "--prefix", "user:")
	if code != 0 || !strings.Contains(stdout, "watching users in copy mode: keys 'user:' || id, all columns") ||
		!strings.Contains(stdout, "copied 2 rows of users") {
		t.Fatalf("watch: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if s := readWatchState(t, db, "users", "user:"); s.triggers != 4 || s.functions != 1 || s.watches != 1 || s.entries != 2 {
		t.Fatalf("after watch: %+v; want 4 triggers, 1 function, 1 watch, 2 entries", s)
	}

	// Watch again, with other columns: replaces, idempotently.
	for i := 0; i < 2; i++ {
		code, stdout, stderr = runPgmirror(t, "watch", "--dsn", dsn, "--table", "users", "--key", "id", "--prefix", "user:", "--columns", "name, plan")
		if code != 0 || !strings.Contains(stdout, "replaced the earlier watch (copy mode, prefix 'user:')") {
			t.Fatalf("watch again: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		if s := readWatchState(t, db, "users", "user:"); s.triggers != 4 || s.functions != 1 || s.watches != 1 || s.entries != 2 {
			t.Fatalf("after watch %d: %+v; want 4 triggers, 1 function, 1 watch, 2 entries", i+2, s)
		}
	}
	if !strings.Contains(stdout, "copied 2 rows of users: 0 entries written") {
		t.Errorf("the same watch twice rewrote entries:\n%s", stdout)
	}
	var v string
	if err := db.QueryRow(`SELECT convert_from(value, 'UTF8') FROM cache_entries WHERE key = 'user:1'`).Scan(&v); err != nil ||
		v != `{"name":"ada","plan":"free"}` {
		t.Fatalf("user:1 = %q, %v", v, err)
	}
	if _, err := db.Exec(`UPDATE users SET plan = 'pro' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT convert_from(value, 'UTF8') FROM cache_entries WHERE key = 'user:1'`).Scan(&v); err != nil ||
		v != `{"name":"ada","plan":"pro"}` {
		t.Fatalf("user:1 after the app's update = %q, %v", v, err)
	}
	// Another watch may not overlap the prefix.
	if code, _, stderr := runPgmirror(t, "watch", "--dsn", dsn, "--table", "events", "--key", "msg", "--prefix", "user:x",
		"--mode", "invalidate"); code != 1 || !strings.Contains(stderr, "prefix 'user:x' overlaps prefix 'user:' of the watch on users") {
		t.Errorf("overlapping prefix: exit %d, %q", code, stderr)
	}

	// Unwatch: the triggers go, and app writes no longer touch cache_entries.
	code, stdout, stderr = runPgmirror(t, "unwatch", "--dsn", dsn, "--table", "users")
	if code != 0 || !strings.Contains(stdout, "stopped watching users (copy mode, prefix 'user:'): dropped 4 triggers") ||
		!strings.Contains(stdout, "removed 2 entries under 'user:'") {
		t.Fatalf("unwatch: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	before := readWatchState(t, db, "users", "user:")
	if before.triggers != 0 || before.functions != 0 || before.watches != 0 || before.entries != 0 {
		t.Fatalf("after unwatch: %+v", before)
	}
	for _, q := range []string{
		`INSERT INTO users VALUES (3, 'cy', 'free')`,
		`UPDATE users SET plan = 'team'`,
		`DELETE FROM users WHERE id = 2`,
		`TRUNCATE users`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if after := readWatchState(t, db, "users", "user:"); after != before {
		t.Fatalf("app writes after unwatch touched cache_entries: %+v -> %+v", before, after)
	}
	code, stdout, _ = runPgmirror(t, "unwatch", "--dsn", dsn, "--table", "users")
	if code != 0 || stdout != "nothing to do: users is not watched\n" {
		t.Fatalf("unwatch again: exit %d, %q", code, stdout)
	}

	// Invalidate mode on a column that is not unique, with a loader note.
	code, stdout, stderr = runPgmirror(t, "watch", "--dsn", dsn, "--table", "events", "--key", "msg", "--prefix", "ev:", "--mode", "INVALIDATE")
	if code != 0 || !strings.Contains(stdout, "watching events in invalidate mode") || !strings.Contains(stdout, "no loader in cache_loaders covers 'ev:'") {
		t.Fatalf("watch --mode invalidate: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// TestWatchHelp: help watch and unwatch describe their flags.
func TestWatchHelp(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"help", "watch"}, "--mode copy|invalidate"},
		{[]string{"watch", "-h"}, "Usage: pgmirror watch --table T --key COLUMN --prefix P"},
		{[]string{"help", "unwatch"}, "Usage: pgmirror unwatch --table T"},
		{[]string{"help"}, "pgmirror watch   [flags]"},
	} {
		code, stdout, stderr := runPgmirror(t, tt.args...)
		if code != 0 || !strings.Contains(stdout, tt.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %q", tt.args, code, stdout, stderr, tt.want)
		}
	}
}
