package pgstore_test

import (
	"sync"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/pgstore"
)

// HandleBatch tells each batch's size, duration and result before its
// callers are answered: committed, then unavailable while Postgres is down.
// Registering after Open is a wiring bug and panics.
func TestHandleBatch(t *testing.T) {
	srv := pgtest.New(t)
	db := testdb.Migrate(t, srv.CreateDB(t))
	w := pgstore.NewWriter(db, newFakeApplier(), pgstore.WriterOptions{Timeout: 2 * time.Second})
	var mu sync.Mutex
	var seen []pgstore.BatchDone
	w.HandleBatch(func(b pgstore.BatchDone) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, b)
	})
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	last := func() pgstore.BatchDone {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			t.Fatal("no batch reported")
		}
		return seen[len(seen)-1]
	}

	if res, err := w.Write(ctx(t), setOp("a", "1")); err != nil || res.Err != nil {
		t.Fatalf("write: %v %v", err, res.Err)
	}
	// Reported before the caller was answered: no wait needed.
	if b := last(); b.Result != pgstore.BatchCommitted || b.Ops != 1 || b.Took <= 0 {
		t.Errorf("committed batch reported as %+v", b)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(ctx(t), setOp("a", "2")); err == nil {
		t.Fatal("write with Postgres stopped succeeded")
	}
	if b := last(); b.Result != pgstore.BatchUnavailable || b.Ops != 1 {
		t.Errorf("failed batch reported as %+v", b)
	}
	mu.Lock()
	n := len(seen)
	mu.Unlock()
	if n != 2 {
		t.Errorf("%d batches reported, want 2", n)
	}

	defer func() {
		if recover() == nil {
			t.Errorf("HandleBatch after Open did not panic")
		}
	}()
	w.HandleBatch(func(pgstore.BatchDone) {})
}
