package pgstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// ctx is a context for one test's calls.
func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func exec(t *testing.T, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// snapshot reads every row (values copied, as a caller must) by key.
func snapshot(t *testing.T, s *pgstore.Store, visible func(mirror.Visibility)) map[string]mirror.Row {
	t.Helper()
	got := map[string]mirror.Row{}
	report := func(v mirror.Visibility) error {
		if visible != nil {
			visible(v)
		}
		return nil
	}
	err := s.Snapshot(ctx(t), report, func(r mirror.Row) error {
		if _, dup := got[r.Key]; dup {
			return fmt.Errorf("key %q twice", r.Key)
		}
		r.Value = bytes.Clone(r.Value)
		got[r.Key] = r
		return nil
	})
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return got
}

// xid returns the transaction id of tx, assigning one.
func xid(t *testing.T, tx *sql.Tx) uint64 {
	t.Helper()
	var s string
	if err := tx.QueryRow(`SELECT pg_current_xact_id()::text`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	x, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestParseSnapshot(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want mirror.Visibility
		bad  bool
	}{
		{in: "100:105:", want: mirror.Visibility{Xmin: 100, Xmax: 105}},
		{in: "100:100:", want: mirror.Visibility{Xmin: 100, Xmax: 100}},
		{in: "100:105:100", want: mirror.Visibility{Xmin: 100, Xmax: 105, Xip: []uint64{100}}},
		{in: "100:110:104,100,107", want: mirror.Visibility{Xmin: 100, Xmax: 110, Xip: []uint64{100, 104, 107}}},
		{in: "4294967296:4294967300:4294967297", want: mirror.Visibility{Xmin: 1 << 32, Xmax: 1<<32 + 4, Xip: []uint64{1<<32 + 1}}},
		{in: "", bad: true},
		{in: "100:105", bad: true},
		{in: "100:105::", bad: true},
		{in: "x:105:", bad: true},
		{in: "100:-1:", bad: true},
		{in: "105:100:", bad: true},
		{in: "100:105:101,", bad: true},
		{in: "100:105:99", bad: true},
		{in: "100:105:105", bad: true},
		{in: "100:105: 101", bad: true},
	} {
		got, err := pgstore.ParseSnapshot(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseSnapshot(%q) = %+v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseSnapshot(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestVisibilitySees(t *testing.T) {
	v := mirror.Visibility{Xmin: 100, Xmax: 110, Xip: []uint64{100, 104, 107}}
	for xid, want := range map[uint64]bool{
		1: true, 99: true, 100: false, 101: true, 103: true, 104: false,
		105: true, 107: false, 109: true, 110: false, 111: false, 1 << 40: false,
	} {
		if got := v.Sees(xid); got != want {
			t.Errorf("Sees(%d) = %v, want %v", xid, got, want)
		}
	}
	empty := mirror.Visibility{Xmin: 5, Xmax: 5}
	if !empty.Sees(4) || empty.Sees(5) {
		t.Errorf("empty snapshot 5:5: Sees(4)=%v Sees(5)=%v", empty.Sees(4), empty.Sees(5))
	}
}

func TestSnapshotRows(t *testing.T) {
	_, db := testdb.New(t)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := make([]byte, 1<<20)
	rand.Read(big)
	at := time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)
	type row struct {
		key     string
		value   []byte
		expires string // SQL literal
		want    int64
	}
	rows := []row{
		{"empty", []byte{}, "NULL", mirror.NoExpiry},
		{"bytes", all, "'infinity'", mirror.NoExpiry},
		{"big", big, "'-infinity'", 0},
		{"at", []byte("v"), "'2030-01-02 03:04:05.123456+00'", at.UnixMicro()},
		{"before-epoch", []byte("w"), "'1969-12-31 23:59:59.999999+00'", -1},
		{"ключ ✓ 'quoted' {a,b} \\", []byte("\x00"), "'2030-01-02 04:04:05.123456+01'", at.UnixMicro()},
	}
	for _, r := range rows {
		exec(t, db, `INSERT INTO cache_entries(key, value, expires_at) VALUES ($1, $2, `+r.expires+`)`, r.key, r.value)
	}
	// The triggers' own encoding of each expiry, to prove both agree.
	notified := map[string]string{}
	q, err := db.Query(`SELECT key, pgmirror_expiry(expires_at) FROM cache_entries`)
	if err != nil {
		t.Fatal(err)
	}
	for q.Next() {
		var k, e string
		if err := q.Scan(&k, &e); err != nil {
			t.Fatal(err)
		}
		notified[k] = e
	}
	q.Close()

	got := snapshot(t, pgstore.New(db, nil), nil)
	if len(got) != len(rows) {
		t.Errorf("got %d rows, want %d", len(got), len(rows))
	}
	for _, want := range rows {
		r, ok := got[want.key]
		switch {
		case !ok:
			t.Errorf("%q missing", want.key)
			continue
		case !bytes.Equal(r.Value, want.value):
			t.Errorf("%q: value of %d bytes differs from the %d written", want.key, len(r.Value), len(want.value))
		case r.Expires != want.want:
			t.Errorf("%q: Expires = %d, want %d", want.key, r.Expires, want.want)
		case r.Version <= 0:
			t.Errorf("%q: Version = %d", want.key, r.Version)
		}
		trig := strconv.FormatInt(r.Expires, 10)
		if r.Expires == mirror.NoExpiry {
			trig = "-"
		}
		if trig != notified[want.key] {
			t.Errorf("%q: Expires %s, pgmirror_expiry %s", want.key, trig, notified[want.key])
		}
	}
}

// TestSnapshotVisibility checks the reported snapshot against transactions
// committed before it, in progress at it, and begun after it.
func TestSnapshotVisibility(t *testing.T) {
	_, db := testdb.New(t)
	before, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	exec(t, before, `INSERT INTO cache_entries(key, value) VALUES ('before', 'b')`)
	xBefore := xid(t, before)
	if err := before.Commit(); err != nil {
		t.Fatal(err)
	}
	open, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer open.Rollback()
	exec(t, open, `INSERT INTO cache_entries(key, value) VALUES ('open', 'o')`)
	xOpen := xid(t, open)

	var v mirror.Visibility
	var xAfter uint64
	got := snapshot(t, pgstore.New(db, nil), func(vis mirror.Visibility) {
		v = vis
		// Both commit while the snapshot's rows are still to be read.
		if err := open.Commit(); err != nil {
			t.Error(err)
		}
		after, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		exec(t, after, `INSERT INTO cache_entries(key, value) VALUES ('after', 'a')`)
		xAfter = xid(t, after)
		if err := after.Commit(); err != nil {
			t.Error(err)
		}
	})
	if !v.Sees(xBefore) || v.Sees(xOpen) || v.Sees(xAfter) {
		t.Errorf("snapshot %+v: Sees(before %d)=%v Sees(open %d)=%v Sees(after %d)=%v; want true, false, false",
			v, xBefore, v.Sees(xBefore), xOpen, v.Sees(xOpen), xAfter, v.Sees(xAfter))
	}
	if _, ok := got["before"]; !ok || len(got) != 1 {
		t.Errorf("rows %v, want only before", keys(got))
	}
}

// TestSnapshotConsistent changes rows from another connection after the
// snapshot was taken: the snapshot still reads them as they were.
func TestSnapshotConsistent(t *testing.T) {
	_, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'old' FROM generate_series(1, 1000) i`)
	other, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	got := snapshot(t, pgstore.New(db, nil), func(mirror.Visibility) {
		exec(t, other, `INSERT INTO cache_entries(key, value) VALUES ('new', 'n')`)
		exec(t, other, `UPDATE cache_entries SET value = 'changed' WHERE key = 'k1'`)
		exec(t, other, `DELETE FROM cache_entries WHERE key = 'k2'`)
	})
	if len(got) != 1000 {
		t.Errorf("got %d rows, want 1000", len(got))
	}
	if _, ok := got["new"]; ok {
		t.Error("a row inserted after the snapshot was read")
	}
	if string(got["k1"].Value) != "old" || got["k2"].Value == nil {
		t.Errorf("k1 = %q, k2 = %q: want both as they were", got["k1"].Value, got["k2"].Value)
	}
}

// TestLockTakesNoSnapshot checks what Snapshot relies on to lock the table
// first: LOCK TABLE does not fix a REPEATABLE READ transaction's snapshot.
func TestLockTakesNoSnapshot(t *testing.T) {
	_, db := testdb.New(t)
	tx, err := db.BeginTx(context.Background(), &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	exec(t, tx, `LOCK TABLE cache_entries IN ACCESS SHARE MODE`)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('k', 'v')`)
	var n int
	if err := tx.QueryRow(`SELECT count(*) FROM cache_entries`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("after LOCK, a row committed before the first query is not seen (count %d)", n)
	}
}

// TestSnapshotStops checks that an error from row ends the read at once
// and is returned, and that the pool stays usable.
func TestSnapshotStops(t *testing.T) {
	_, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'v' FROM generate_series(1, 100000) i`)
	s := pgstore.New(db, nil)
	stop := errors.New("stop")
	seen := 0
	err := s.Snapshot(ctx(t), nil, func(mirror.Row) error {
		seen++
		if seen == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || seen != 10 {
		t.Fatalf("Snapshot = %v after %d rows; want stop after 10", err, seen)
	}

	cctx, cancel := context.WithCancel(ctx(t))
	seen = 0
	err = s.Snapshot(cctx, nil, func(mirror.Row) error {
		if seen++; seen == 10 {
			cancel()
		}
		return nil
	})
	if err == nil || seen >= 100000 {
		t.Fatalf("Snapshot with its context cancelled = %v after %d rows; want an error", err, seen)
	}
	t.Logf("cancelled: %v after %d rows", err, seen)

	// pg_stat_statements counts only statements that ran to completion: the
	// stopped reads must have been aborted, not drained.
	if n := completedReads(t, db); n != 0 {
		t.Errorf("%d stopped reads ran to completion", n)
	}
	if got := snapshot(t, s, nil); len(got) != 100000 {
		t.Errorf("after the stops, got %d rows, want 100000", len(got))
	}
	if n := completedReads(t, db); n != 1 {
		t.Errorf("pg_stat_statements counts %d completed reads, want 1", n)
	}
}

// completedReads counts the snapshot reads of cache_entries that completed
// in db's database.
func completedReads(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	err := db.QueryRow(`SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND query LIKE 'SELECT key, value, version,%' AND query NOT LIKE '%ANY%'`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func keys(m map[string]mirror.Row) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
