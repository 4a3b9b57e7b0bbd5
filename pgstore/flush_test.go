package pgstore_test

import (
	"context"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

// TestFlushRunsAlone: a flush waits for the batches in flight, runs in a
// batch of its own, and holds back every command queued after it, even on
// keys no batch holds; it deletes what committed before it and nothing
// written after it, and reports one flush change.
func TestFlushRunsAlone(t *testing.T) {
	_, db := testdb.New(t)
	apply := newFakeApplier()
	w := newWriter(t, db, apply, pgstore.WriterOptions{InFlight: 2, MaxBatch: 4})
	release := gate(t, db, "gate")
	write := func(op mirror.WriteOp) chan mirror.WriteResult {
		ch := make(chan mirror.WriteResult, 1)
		go func() {
			res, err := w.Write(context.Background(), op)
			if err != nil {
				res.Err = err
			}
			ch <- res
		}()
		return ch
	}
	queued := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for w.Stats().Queued != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d commands queued, want %d", w.Stats().Queued, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	a := write(setOp("gate", "a"))
	waitBlocked(t, db)
	f := write(mirror.WriteOp{Kind: mirror.WriteFlush, Prefix: ""})
	queued(1) // a batch is in flight
	y := write(setOp("y", "after"))
	queued(2) // behind the flush, though no batch holds y
	if _, ok := readRows(t, db)["y"]; ok {
		t.Fatal("a command queued after a flush ran before it")
	}
	release()
	for _, ch := range []chan mirror.WriteResult{a, f, y} {
		if res := <-ch; res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	rows := readRows(t, db)
	if _, ok := rows["gate"]; ok || string(rows["y"].value) != "after" || len(rows) != 1 {
		t.Fatalf("rows after the flush: %v; want y alone", rows)
	}
	flushes := 0
	for _, c := range apply.Calls() {
		for _, ch := range c.changes {
			if ch.Op == mirror.OpFlush {
				flushes++
				if len(c.changes) != 1 || ch.Key != "" || ch.Version <= 0 {
					t.Errorf("flush applied as %+v", c.changes)
				}
			}
		}
	}
	if flushes != 1 {
		t.Errorf("%d flush changes applied, want 1", flushes)
	}
}
