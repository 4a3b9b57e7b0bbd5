package pgstore_test

import (
	"bytes"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

// TestWriteOneRoundTrip: on the Writer's own pool every batch costs one
// round trip (parse, bind and execute leave in one write; no ping), values
// of any bytes are stored as sent (they go raw, in binary), and a block of
// commands and an error answered by Postgres cost no more.
func TestWriteOneRoundTrip(t *testing.T) {
	dsn, db := testdb.New(t)
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{DSN: dsn, MaxValueSize: 1 << 20})
	odd := string([]byte{0, 1, '\\', 'x', 0xff, '\'', 0xc3, 0x28, '{', '"'})
	ops := []mirror.WriteOp{
		setOp("a", odd),
		setOp("b", ""),
		{Kind: mirror.WriteMSet, Keys: ks("c", "d"), Values: vals(odd+"c", `\x00`)},
		{Kind: mirror.WriteAppend, Keys: ks("a"), Values: vals(odd)},
		{Kind: mirror.WriteIncrBy, Keys: ks("n"), Int: 5},
		{Kind: mirror.WriteIncrBy, Keys: ks("a"), Int: 1}, // not an integer: an error reply
		{Kind: mirror.WriteGetDel, Keys: ks("d")},
	}
	for i, op := range ops {
		if _, err := w.Write(ctx(t), op); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	st := w.Stats()
	if st.Batches != uint64(len(ops)) || st.RoundTrips != st.Batches {
		t.Errorf("stats %+v: want %d batches of one round trip each", st, len(ops))
	}
	rows := readRows(t, db)
	for k, want := range map[string]string{"a": odd + odd, "b": "", "c": odd + "c", "n": "5"} {
		if got := rows[k].value; !bytes.Equal(got, []byte(want)) {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if _, ok := rows["d"]; ok {
		t.Error("d survived GETDEL")
	}
}

// TestWriteAfterRestart: Postgres restarted (its backends said FATAL and
// closed) or crashed (they just closed) between two batches. The next batch
// finds the pooled connection closed before sending anything, runs on a new
// one, and commits once: no unknown outcome, no lost or doubled increment,
// still one round trip for the statement. Over TCP a write to the closed
// connection would succeed (only its answer fails), so the statement must
// not go out on it at all.
func TestWriteAfterRestart(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			srv := pgtest.New(t)
			dsn := srv.CreateDB(t)
			db := testdb.Migrate(t, dsn)
			if network == "tcp" {
				dsn = srv.TCPDSN(dbName(t, dsn))
			}
			writeAcrossRestarts(t, srv, db, dsn)
		})
	}
}

// dbName is the dbname of a key=value DSN.
func dbName(t *testing.T, dsn string) string {
	for _, f := range strings.Fields(dsn) {
		if name, ok := strings.CutPrefix(f, "dbname="); ok {
			return name
		}
	}
	t.Fatalf("no dbname in %q", dsn)
	return ""
}

func writeAcrossRestarts(t *testing.T, srv *pgtest.Server, db *sql.DB, dsn string) {
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{DSN: dsn, Timeout: 10 * time.Second})
	incr := mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks("n"), Int: 1}
	crashes := []struct {
		name string
		do   func() error
	}{
		{"restart", srv.Restart},
		{"crash", func() error {
			if err := srv.Kill(); err != nil {
				return err
			}
			return srv.Start()
		}},
	}
	if res, err := w.Write(ctx(t), incr); err != nil || res.Int != 1 {
		t.Fatalf("first INCRBY: %v %+v", err, res)
	}
	for i, c := range crashes {
		if err := c.do(); err != nil {
			t.Fatal(err)
		}
		res, err := w.Write(ctx(t), incr)
		if errors.Is(err, mirror.ErrWriteUnknown) {
			t.Fatalf("after the %s: %v: the statement went out on the closed connection", c.name, err)
		}
		if err != nil || res.Err != nil || res.Int != int64(i+2) {
			t.Fatalf("after the %s: %v %+v, want %d", c.name, err, res, i+2)
		}
	}
	st := w.Stats()
	if st.Unknown != 0 || st.Unavailable != 0 || st.StaleConns != uint64(len(crashes)) || st.RoundTrips != st.Batches {
		t.Errorf("stats %+v: want no failure, %d stale connections replaced, one round trip per batch",
			st, len(crashes))
	}
	if v := readRows(t, db)["n"].value; string(v) != "3" {
		t.Errorf("n = %q in Postgres, want 3", v)
	}
}

// TestWriteRetriedAfterFailedSend: with the look at idle connections
// turned off, a batch after a restart is written to the closed connection;
// over a unix socket that write fails (the peer is gone), so the statement
// never reached Postgres whole and runs on another connection: committed
// once, no unknown outcome.
func TestWriteRetriedAfterFailedSend(t *testing.T) {
	pgstore.NoPeek(t)
	srv := pgtest.New(t)
	dsn := srv.CreateDB(t)
	db := testdb.Migrate(t, dsn)
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{DSN: dsn, Timeout: 10 * time.Second})
	incr := mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks("n"), Int: 1}
	if res, err := w.Write(ctx(t), incr); err != nil || res.Int != 1 {
		t.Fatalf("first INCRBY: %v %+v", err, res)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if res, err := w.Write(ctx(t), incr); err != nil || res.Err != nil || res.Int != 2 {
		t.Fatalf("after the restart: %v %+v, want 2", err, res)
	}
	if st := w.Stats(); st.Unknown != 0 || st.Unavailable != 0 || st.StaleConns != 0 {
		t.Errorf("stats %+v: want no failure, and no connection found closed before sending", st)
	}
	if v := readRows(t, db)["n"].value; string(v) != "2" {
		t.Errorf("n = %q in Postgres, want 2", v)
	}
}
