package pgstore_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

func opStep(op mirror.WriteOp) pgstore.BlockStep { return pgstore.BlockStep{Op: &op} }

// A block runs in one batch: its writes in order (a failing one alone), its
// reads see its earlier writes, and it is applied with one xid.
func TestWriteBlockRunsInOrder(t *testing.T) {
	_, db := testdb.New(t)
	apply := newFakeApplier()
	w := newWriter(t, db, apply, pgstore.WriterOptions{})
	if _, err := w.Write(ctx(t), setOp("a", "old")); err != nil {
		t.Fatal(err)
	}
	res, err := w.WriteBlock(ctx(t), pgstore.Block{Steps: []pgstore.BlockStep{
		{Read: ks("a", "missing")},
		opStep(setOp("a", "1")),
		{Read: ks("a")},
		opStep(mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks("a"), Int: 4}),
		opStep(setOp("b", "x")),
		opStep(mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks("b"), Int: 1}),
		{Read: ks("a", "b")},
		opStep(mirror.WriteOp{Kind: mirror.WriteFlush}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Aborted || len(res.Steps) != 8 {
		t.Fatalf("result %+v", res)
	}
	s := res.Steps
	if r := s[0].Rows; string(r["a"].Value) != "old" || len(r) != 1 {
		t.Fatalf("first read %+v", r)
	}
	checkReply(t, s[1].Res, okReply())
	if r := s[2].Rows["a"]; string(r.Value) != "1" || !r.Live || r.PTTL != -1 {
		t.Fatalf("read after SET %+v", r)
	}
	checkReply(t, s[3].Res, intReply(5))
	checkReply(t, s[5].Res, errReply("ERR value is not an integer or out of range"))
	if r := s[6].Rows; string(r["a"].Value) != "5" || string(r["b"].Value) != "x" {
		t.Fatalf("last read %+v", r)
	}
	if s[7].Res.Err == nil {
		t.Fatal("FLUSHDB inside a block was run")
	}
	calls := apply.Calls()
	if last := calls[len(calls)-1]; len(calls) != 2 || last.xid == 0 {
		t.Fatalf("ApplyWrite calls %+v, want the SET's and one for the block", calls)
	}
	rows := readRows(t, db)
	if string(rows["a"].value) != "5" || string(rows["b"].value) != "x" {
		t.Fatalf("after the block: %v", rows)
	}
}

// WATCH: a key whose version or existence changed aborts the block, and
// nothing of it runs; an unchanged one lets it run.
func TestWriteBlockWatch(t *testing.T) {
	_, db := testdb.New(t)
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{})
	res, err := w.Write(ctx(t), setOp("w", "1"))
	if err != nil {
		t.Fatal(err)
	}
	v := res.States[0].Version
	set := []pgstore.BlockStep{opStep(setOp("out", "ran"))}
	cases := []struct {
		name  string
		watch pgstore.WatchedKey
		abort bool
	}{
		{"unchanged", pgstore.WatchedKey{Key: "w", Found: true, Version: v}, false},
		{"other version", pgstore.WatchedKey{Key: "w", Found: true, Version: v + 1000}, true},
		{"was absent", pgstore.WatchedKey{Key: "w"}, true},
		{"still absent", pgstore.WatchedKey{Key: "none"}, false},
		{"was present", pgstore.WatchedKey{Key: "none", Found: true, Version: 1}, true},
	}
	for _, c := range cases {
		if _, err := db.Exec(`DELETE FROM cache_entries WHERE key = 'out'`); err != nil {
			t.Fatal(err)
		}
		res, err := w.WriteBlock(ctx(t), pgstore.Block{Steps: set, Watch: []pgstore.WatchedKey{c.watch}})
		if err != nil {
			t.Fatal(err)
		}
		_, ran := readRows(t, db)["out"]
		if res.Aborted != c.abort || ran == c.abort {
			t.Errorf("%s: aborted %v, ran %v; want aborted %v", c.name, res.Aborted, ran, c.abort)
		}
	}
	// Expired since WATCH: aborts, though the version is the same.
	if _, err := db.Exec(`UPDATE cache_entries SET expires_at = now() - interval '1 second' WHERE key = 'w'`); err != nil {
		t.Fatal(err)
	}
	var nv int64
	if err := db.QueryRow(`SELECT version FROM cache_entries WHERE key = 'w'`).Scan(&nv); err != nil {
		t.Fatal(err)
	}
	res2, err := w.WriteBlock(ctx(t), pgstore.Block{Steps: set, Watch: []pgstore.WatchedKey{{Key: "w", Found: true, Version: nv}}})
	if err != nil || !res2.Aborted {
		t.Fatalf("watched key expired: %+v %v, want aborted", res2, err)
	}
}

// Blocks and single writes on the same keys, concurrently, share batches
// without deadlocking, and every command runs once.
func TestWriteBlocksShareBatches(t *testing.T) {
	_, db := testdb.New(t)
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{})
	const workers, rounds = 8, 40
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				incr := func(k string) mirror.WriteOp {
					return mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks(k), Int: 1}
				}
				var err error
				if g%2 == 0 {
					_, err = w.WriteBlock(ctx(t), pgstore.Block{Steps: []pgstore.BlockStep{opStep(incr("y")), opStep(incr("x"))}})
				} else {
					_, err = w.Write(ctx(t), incr("x"))
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rows := readRows(t, db)
	if string(rows["x"].value) != "320" || string(rows["y"].value) != "160" {
		t.Fatalf("x=%s y=%s, want 320 and 160", rows["x"].value, rows["y"].value)
	}
}

// A block counts as its steps and its head toward MaxBatch (so a batch's
// subtransactions stay within the subxid cache): with MaxBatch 8, a single
// command and a block of six fill a batch, and the next command waits for
// the next batch.
func TestWriteBlockCountsTowardMaxBatch(t *testing.T) {
	_, db := testdb.New(t)
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{MaxBatch: 8, Linger: time.Second})
	var steps []pgstore.BlockStep
	for i := range 6 {
		steps = append(steps, opStep(setOp(fmt.Sprint("b", i), "v")))
	}
	errs := make(chan error, 3)
	queued := func(n int) {
		testutil.Eventually(t, 10*time.Second, func() (bool, string) {
			q := w.Stats().Queued
			return q == n, fmt.Sprintf("%d queued, want %d", q, n)
		})
	}
	go func() { _, err := w.Write(ctx(t), setOp("first", "v")); errs <- err }()
	queued(1)
	go func() { _, err := w.WriteBlock(ctx(t), pgstore.Block{Steps: steps}); errs <- err }()
	queued(2)
	go func() { _, err := w.Write(ctx(t), setOp("last", "v")); errs <- err }()
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st := w.Stats(); st.Batches != 2 {
		t.Fatalf("%d batches, want 2 (the block and the first command fill one)", st.Batches)
	}
}
