package pgstore_test

import (
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

func TestFetch(t *testing.T) {
	_, db := testdb.New(t)
	s := pgstore.New(db, nil)
	// Keys that an array literal must quote, and one that reads as NULL.
	odd := []string{`a"b`, `c\d`, `{e,f}`, `NULL`, ` g `, "ключ", ""}
	for _, k := range odd {
		exec(t, db, `INSERT INTO cache_entries(key, value, expires_at) VALUES ($1, $2, '2030-01-01 00:00:00.000001+00')`,
			k, []byte("v:"+k))
	}
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, convert_to('v:k' || i, 'UTF8') FROM generate_series(1, 2500) i`)

	rows, err := s.Fetch(ctx(t), append(slices.Clone(odd), "absent", "NULL"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]mirror.Row{}
	for _, r := range rows {
		got[r.Key] = r
	}
	if len(rows) != len(odd) || len(got) != len(odd) {
		t.Errorf("got %d rows (%d keys), want %d", len(rows), len(got), len(odd))
	}
	wantExp := time.Date(2030, 1, 1, 0, 0, 0, 1000, time.UTC).UnixMicro()
	for _, k := range odd {
		if r := got[k]; string(r.Value) != "v:"+k || r.Expires != wantExp || r.Version <= 0 {
			t.Errorf("%q: got %+v", k, r)
		}
	}

	// 2500 keys, half absent: three queries, and every value still intact
	// after the later ones (no slice aliases a driver buffer).
	before := fetchQueries(t, db)
	var many []string
	for i := 1; i <= 2500; i += 2 {
		many = append(many, fmt.Sprintf("k%d", i), fmt.Sprintf("absent%d", i))
	}
	rows, err = s.Fetch(ctx(t), many)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1250 {
		t.Errorf("got %d rows, want 1250", len(rows))
	}
	for _, r := range rows {
		if string(r.Value) != "v:"+r.Key || r.Expires != mirror.NoExpiry {
			t.Errorf("%q: got %+v", r.Key, r)
		}
	}
	if n := fetchQueries(t, db) - before; n != 3 {
		t.Errorf("2500 keys took %d queries, want 3", n)
	}
}

// fetchQueries counts the Fetch queries completed in db's database.
func fetchQueries(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	err := db.QueryRow(`SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND query LIKE '%key = ANY($1)%'`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestFetchNothingQueriesNothing(t *testing.T) {
	db, err := sql.Open("postgres", "host=/nonexistent")
	if err != nil {
		t.Fatal(err)
	}
	db.Close() // any query now fails
	for _, keys := range [][]string{nil, {}} {
		if rows, err := pgstore.New(db, nil).Fetch(ctx(t), keys); rows != nil || err != nil {
			t.Errorf("Fetch(%#v) = %v, %v; want nil, nil", keys, rows, err)
		}
	}
	_, err = pgstore.New(db, nil).Fetch(ctx(t), []string{"a", "b", "c"})
	if err == nil || !strings.HasPrefix(err.Error(), "fetch 3 keys: ") {
		t.Errorf("Fetch on a closed pool: %v; want an error starting \"fetch 3 keys: \"", err)
	}
}

func TestSentinel(t *testing.T) {
	dsn, db := testdb.New(t)
	l := pq.NewListener(dsn, 10*time.Millisecond, time.Second, nil)
	defer l.Close()
	if err := l.Listen(listener.Channel); err != nil {
		t.Fatal(err)
	}
	s := pgstore.New(db, nil)
	// A token the decoder would refuse is never sent: the first payload to
	// arrive is the good one.
	for _, bad := range []string{"", "has space", "new\nline", strings.Repeat("x", 65)} {
		if err := s.Sentinel(ctx(t), bad); err == nil {
			t.Errorf("Sentinel(%q) = nil, want an error", bad)
		}
	}
	start := time.Now()
	if err := s.Sentinel(ctx(t), "tok-1_A"); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-l.Notify:
		if n == nil {
			t.Fatal("listener reconnected")
		}
		p, err := listener.Decode(n.Extra)
		if err != nil {
			t.Fatalf("Decode(%q): %v", n.Extra, err)
		}
		want := []mirror.Change{{Op: mirror.OpSentinel, Token: "tok-1_A"}}
		if p.Xid != 0 || len(p.Changes) != 1 || p.Changes[0].Op != want[0].Op || p.Changes[0].Token != want[0].Token {
			t.Errorf("payload %q decodes to %+v, want Xid 0 and %+v", n.Extra, p, want)
		}
		if d := time.UnixMicro(p.SentAt).Sub(start); d < -time.Second || d > 5*time.Second {
			t.Errorf("SentAt %d is %v from the call", p.SentAt, d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no notification within 30s")
	}
}

func TestNow(t *testing.T) {
	_, db := testdb.New(t)
	us, err := pgstore.New(db, nil).Now(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(time.UnixMicro(us)); d < -3*time.Second || d > 3*time.Second {
		t.Errorf("Now = %d, %v from time.Now()", us, d)
	}
}

func TestCheckPrimary(t *testing.T) {
	_, db := testdb.New(t)
	s := pgstore.New(db, nil)
	if err := s.CheckPrimary(ctx(t)); err != nil {
		t.Errorf("on the primary: %v", err)
	}
	// A hot standby cannot be had cheaply here; play one.
	err := s.CheckPrimaryQuery(ctx(t), `SELECT true`)
	if !errors.Is(err, pgstore.ErrStandby) || !strings.Contains(err.Error(), "target_session_attrs=read-write") {
		t.Errorf("on a standby: %v; want ErrStandby with the target_session_attrs hint", err)
	}
}

func TestCheckSchema(t *testing.T) {
	dsn := pgtest.Shared(t).CreateDB(t)
	s := pgstore.New(testdb.Open(t, dsn), nil)
	wantErr := func(what, want string) {
		t.Helper()
		if err := s.CheckSchema(ctx(t)); err == nil || err.Error() != want {
			t.Errorf("%s: CheckSchema = %v\nwant %s", what, err, want)
		}
	}
	wantErr("empty database", "cache_entries not found in the search_path: run `pgmirror migrate` (or serve --migrate)")

	db := testdb.Migrate(t, dsn)
	if err := s.CheckSchema(ctx(t)); err != nil {
		t.Errorf("migrated: %v", err)
	}

	exec(t, db, `ALTER TABLE cache_entries DISABLE TRIGGER pgmirror_20_notify_update`)
	wantErr("trigger disabled", "the pgmirror triggers on cache_entries are disabled (pgmirror_20_notify_update), "+
		"so changes are not notified: run `pgmirror migrate`, which re-enables them")
	testdb.Migrate(t, dsn) // that advice works
	if err := s.CheckSchema(ctx(t)); err != nil {
		t.Errorf("migrated after disabling: %v", err)
	}

	exec(t, db, `DROP TRIGGER pgmirror_20_notify_insert ON cache_entries`)
	exec(t, db, `DROP TRIGGER pgmirror_10_stamp_insert ON cache_entries`)
	wantErr("triggers dropped", "the pgmirror triggers on cache_entries are missing "+
		"(pgmirror_10_stamp_insert, pgmirror_20_notify_insert), so changes are not notified: "+
		"run `pgmirror migrate`, which reinstalls them")
	testdb.Migrate(t, dsn)
	if err := s.CheckSchema(ctx(t)); err != nil {
		t.Errorf("migrated again: %v", err)
	}
}

// TestKeyring reads pgmirror_secret: its three keys, newest first (the
// pending key, the current one, the previous one), naming the pending one;
// a table from before migration 0008 (no pending key) still reads; no keys
// (and no error) where the table is missing; and an error naming the grant
// to give when the role cannot read it.
func TestKeyring(t *testing.T) {
	dsn, db := testdb.New(t)
	s := pgstore.New(db, nil)
	for range 2 {
		exec(t, db, `SELECT pgmirror_rotate_secret()`)
	}
	kr, err := s.Keyring(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !kr.Signed || len(kr.Keys) != 3 || kr.Keys[0].ID != 4 || kr.Keys[1].ID != 3 || kr.Keys[2].ID != 2 ||
		kr.Pending != 4 || len(kr.Keys[0].Secret) != 32 {
		t.Fatalf("keyring %+v, want keys 4 (pending), 3 and 2 of 32 bytes", kr)
	}

	exec(t, db, `DO $$ BEGIN CREATE ROLE pgstore_nokeys LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
	other := testdb.Open(t, strings.Replace(dsn, "user=postgres", "user=pgstore_nokeys", 1))
	_, err = pgstore.New(other, nil).Keyring(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "GRANT pgmirror_sidecar TO") {
		t.Fatalf("keyring as a role without the grant: %v; want an error naming the grant", err)
	}

	// As before migration 0008: no activated_at, no pending key.
	exec(t, db, `DELETE FROM pgmirror_secret WHERE activated_at IS NULL`)
	exec(t, db, `ALTER TABLE pgmirror_secret DROP COLUMN activated_at`)
	if kr, err := s.Keyring(ctx(t)); err != nil || !kr.Signed || len(kr.Keys) != 2 || kr.Keys[0].ID != 3 || kr.Pending != 0 {
		t.Fatalf("keyring of a table without pending keys: %+v, %v; want keys 3 and 2, none pending", kr, err)
	}

	exec(t, db, `DROP TABLE pgmirror_secret CASCADE`)
	if kr, err := s.Keyring(ctx(t)); err != nil || kr.Signed || len(kr.Keys) != 0 {
		t.Fatalf("keyring without pgmirror_secret: %+v, %v; want no keys, unsigned", kr, err)
	}
}

// TestNextXid: every committed transaction has a lower id.
func TestNextXid(t *testing.T) {
	_, db := testdb.New(t)
	var committed uint64
	if err := db.QueryRow(`SELECT pg_current_xact_id()::text::bigint`).Scan(&committed); err != nil {
		t.Fatal(err)
	}
	next, err := pgstore.New(db, nil).NextXid(ctx(t))
	if err != nil || next <= committed {
		t.Fatalf("next xid %d (%v), want above %d", next, err, committed)
	}
}
