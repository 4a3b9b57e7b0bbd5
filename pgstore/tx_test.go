package pgstore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/lib/pq"

	"pgmirror/internal/testdb"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

// A Tx's writes are invisible until Commit, then committed and notified as
// one transaction (one xid, every change) and applied to the mirror once; a
// command failing in it fails alone; its reads see its own writes.
func TestTxCommitsAsOneUnit(t *testing.T) {
	dsn, db := testdb.New(t)
	l := pq.NewListener(dsn, 10*time.Millisecond, time.Second, nil)
	defer l.Close()
	if err := l.Listen(listener.Channel); err != nil {
		t.Fatal(err)
	}
	apply := newFakeApplier()
	w := newWriter(t, db, apply, pgstore.WriterOptions{})
	tx, err := w.Begin(ctx(t), []string{"b", "a", "n", "a"})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		op   mirror.WriteOp
		want reply
	}{
		{setOp("a", "1"), okReply()},
		{mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks("n"), Int: 5}, intReply(5)},
		{setOp("b", "x"), okReply()},
		{mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks("b"), Int: 1}, errReply("ERR value is not an integer or out of range")},
		{mirror.WriteOp{Kind: mirror.WriteAppend, Keys: ks("a"), Values: vals("2")}, intReply(2)},
	}
	for _, s := range steps {
		res, err := tx.Write(ctx(t), s.op)
		if err != nil {
			t.Fatal(err)
		}
		checkReply(t, res, s.want)
	}
	if _, err := tx.Write(ctx(t), setOp("other", "v")); !errors.Is(err, pgstore.ErrTxUndeclared) {
		t.Fatalf("write of an undeclared key: %v, want ErrTxUndeclared", err)
	}
	if r, err := tx.Read(ctx(t), "a"); err != nil || !r.Live || string(r.Value) != "12" {
		t.Fatalf("read in the transaction: %+v %v, want 12", r, err)
	}
	if rows := readRows(t, db); len(rows) != 0 {
		t.Fatalf("before commit another session sees %v", rows)
	}
	if len(apply.Calls()) != 0 {
		t.Fatal("applied before commit")
	}
	if err := tx.Commit(ctx(t)); err != nil {
		t.Fatal(err)
	}
	rows := readRows(t, db)
	if string(rows["a"].value) != "12" || string(rows["n"].value) != "5" || string(rows["b"].value) != "x" || len(rows) != 3 {
		t.Fatalf("after commit: %v", rows)
	}
	calls := apply.Calls()
	if len(calls) != 1 || calls[0].xid == 0 {
		t.Fatalf("ApplyWrite calls %+v, want one with the xid", calls)
	}
	select {
	case n := <-l.Notify:
		p, err := listener.Decode(n.Extra)
		if err != nil {
			t.Fatal(err)
		}
		if p.Xid != calls[0].xid || len(p.Changes) != 3 {
			t.Fatalf("notified xid %d with %d changes, want xid %d with 3", p.Xid, len(p.Changes), calls[0].xid)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no notification")
	}
	// The next notification is that of a later write: the transaction sent one.
	if _, err := w.Write(ctx(t), setOp("z", "after")); err != nil {
		t.Fatal(err)
	}
	n := <-l.Notify
	if p, err := listener.Decode(n.Extra); err != nil || len(p.Changes) != 1 || p.Changes[0].Key != "z" {
		t.Fatalf("next notification %+v %v, want the write of z", p, err)
	}
}

// Rollback leaves nothing, and a single write on a key the Tx held runs
// once it ends.
func TestTxRollback(t *testing.T) {
	_, db := testdb.New(t)
	apply := newFakeApplier()
	w := newWriter(t, db, apply, pgstore.WriterOptions{})
	tx, err := w.Begin(ctx(t), []string{"k"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Write(ctx(t), setOp("k", "in-tx")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(ctx(t), setOp("k", "single"))
		done <- err
	}()
	tx.Rollback()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rows := readRows(t, db); string(rows["k"].value) != "single" || len(rows) != 1 {
		t.Fatalf("rows %v, want only the single write", rows)
	}
	if err := tx.Commit(ctx(t)); err == nil {
		t.Fatal("commit after rollback succeeded")
	}
}
