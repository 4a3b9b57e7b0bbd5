package pgstore_test

import (
	"bytes"
	"context"
	"database/sql"
	"sync/atomic"
	"testing"
	"time"

	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

// orderRig is a mirror fed by a real listener whose deliveries the test can
// pause, with loaders and a writer on one database.
type orderRig struct {
	db      *sql.DB
	m       *mirror.Mirror
	loaders *pgstore.Loaders
	w       *pgstore.Writer
	paused  atomic.Bool
	resume  chan struct{}
}

func newOrderRig(t *testing.T) *orderRig {
	t.Helper()
	dsn, db := testdb.New(t)
	if _, err := db.Exec(`INSERT INTO cache_loaders(prefix, query) VALUES ('l:', 'SELECT ''from loader'' WHERE $1::text IS NOT NULL')`); err != nil {
		t.Fatal(err)
	}
	r := &orderRig{db: db, resume: make(chan struct{})}
	sc := sidecartest.Start(t, dsn, sidecartest.Config{
		NoJobs: true,
		Listener: func(l *listener.Listener) {
			l.BeforeApply = func() {
				if r.paused.Load() {
					<-r.resume
				}
			}
		},
	})
	t.Cleanup(r.unpause) // before the sidecar stops: cleanups run last first
	r.m, r.loaders, r.w = sc.Mirror, sc.Loaders, sc.Writer
	return r
}

// unpause lets the held notifications through, in order.
func (r *orderRig) unpause() {
	if r.paused.Swap(false) {
		close(r.resume)
	}
}

func (r *orderRig) served(t *testing.T, key string) string {
	t.Helper()
	v, ok, err := r.m.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return "<absent>"
	}
	return string(v)
}

// converges waits until the mirror serves what the table holds for key.
func (r *orderRig) converges(t *testing.T, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var want []byte
		err := r.db.QueryRow(`SELECT value FROM cache_entries WHERE key = $1`, key).Scan(&want)
		if err != nil {
			t.Fatal(err)
		}
		got := r.served(t, key)
		if got == string(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mirror serves %q for %s, the table holds %q", got, key, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLoaderApplyAfterNewerSet: the loader commits, a SET of the same key
// that waited for the loader's key lock commits after it and is applied
// locally, and only then is the loader's store applied locally. The mirror
// must serve the SET's value throughout (never the loader's older one), and
// converge with the table.
func TestLoaderApplyAfterNewerSet(t *testing.T) {
	r := newOrderRig(t)
	ctx := context.Background()
	computed, store := make(chan struct{}), make(chan struct{})
	committed, apply := make(chan struct{}), make(chan struct{})
	r.loaders.Hooks.AfterCompute = func(string) { close(computed); <-store }
	r.loaders.Hooks.BeforeApply = func(string) { close(committed); <-apply }

	loaded := make(chan string, 1)
	go func() {
		v, _, err := r.loaders.Load(ctx, r.m, "l:k")
		if err != nil {
			t.Error(err)
		}
		loaded <- string(v)
	}()
	within(t, computed, "the loader's computation")
	r.paused.Store(true) // no echo reaches the mirror before both local applies
	setDone := make(chan error, 1)
	go func() {
		res, err := r.w.Write(ctx, setOp("l:k", "from SET"))
		if err == nil {
			err = res.Err
		}
		setDone <- err
	}()
	waitBlocked(t, r.db) // the SET waits for the loader's key lock
	close(store)
	within(t, committed, "the loader's commit")
	if err := receive(t, setDone); err != nil {
		t.Fatal(err)
	}
	if got := r.served(t, "l:k"); got != "from SET" {
		t.Fatalf("after the SET: %q", got)
	}
	close(apply)
	if v := receive(t, loaded); v != "from loader" {
		t.Fatalf("the loader returned %q", v)
	}
	if got := r.served(t, "l:k"); got != "from SET" {
		t.Fatalf("the loader's later local apply overwrote the newer SET: the mirror serves %q", got)
	}
	r.unpause()
	r.converges(t, "l:k")
	// No echo mark is left behind: a later change from plain SQL shows.
	if _, err := r.db.Exec(`UPDATE cache_entries SET value = 'from sql' WHERE key = 'l:k'`); err != nil {
		t.Fatal(err)
	}
	r.converges(t, "l:k")
}

// TestSetAfterLoaderReadsItsWrite is the other order: the loader's store is
// applied while a SET of the key is in flight, and the SET commits after it.
// The SET cannot be ordered locally against the loader's store, so it waits
// for its own notification before answering; then it reads its write.
func TestSetAfterLoaderReadsItsWrite(t *testing.T) {
	r := newOrderRig(t)
	ctx := context.Background()
	computed, store := make(chan struct{}), make(chan struct{})
	r.loaders.Hooks.AfterCompute = func(string) { close(computed); <-store }
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		if _, _, err := r.loaders.Load(ctx, r.m, "l:k"); err != nil {
			t.Error(err)
		}
	}()
	within(t, computed, "the loader's computation")
	r.paused.Store(true)
	hold := gate(t, r.db, "z") // keeps the SET from committing until the loader's store is applied
	setDone := make(chan error, 1)
	go func() {
		res, err := r.w.Write(ctx, mirror.WriteOp{Kind: mirror.WriteMSet, Keys: ks("l:k", "z"), Values: vals("from SET", "z")})
		if err == nil {
			err = res.Err
		}
		setDone <- err
	}()
	waitBlocked(t, r.db)
	close(store)
	within(t, loaded, "the loader")
	if got := r.served(t, "l:k"); got != "from loader" {
		t.Fatalf("after the loader: %q", got)
	}
	hold()
	select {
	case err := <-setDone:
		t.Fatalf("the SET answered (%v) before the mirror could show it; the mirror serves %q", err, r.served(t, "l:k"))
	case <-time.After(200 * time.Millisecond):
	}
	r.unpause()
	if err := receive(t, setDone); err != nil {
		t.Fatal(err)
	}
	if got := r.served(t, "l:k"); got != "from SET" {
		t.Fatalf("the SET does not read its write: %q", got)
	}
	if st := r.m.Stats(); st.Contested != 1 {
		t.Fatalf("Contested = %d, want 1", st.Contested)
	}
	r.converges(t, "l:k")
	if !bytes.Equal([]byte(r.served(t, "z")), []byte("z")) {
		t.Fatalf("z = %q", r.served(t, "z"))
	}
}

// within waits for ch to be closed, failing the test after 30 s.
func within(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not happen within 30s", what)
	}
}

// receive returns the next value of ch, failing the test after 30 s.
func receive[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatal("no result within 30s")
	}
	var zero T
	return zero
}
