package mirror

import (
	"context"
	"testing"
	"time"
)

// Two writes of this sidecar on one key, applied locally in the opposite
// order of their commits: the loader commits, a SET
// that waited for the loader's key lock commits after it, the SET applies,
// then the loader. The mirror must keep serving the SET, and converge with
// the table once the stream delivers both.
func TestOwnWritesAppliedOutOfCommitOrder(t *testing.T) {
	m := newLoaded(t)
	loader := m.BeginWrite() // computing, holding the key lock
	setW := m.BeginWrite()   // waiting for that lock
	// The loader commits (xid 10), then the SET (xid 11); the SET's goroutine
	// is the first to apply.
	m.ApplyWrite(setW, 11, []Change{set("k", "from SET", 11)})
	m.ApplyWrite(loader, 10, []Change{set("k", "from loader", 10)})
	if got := m.state(t, "k"); got != "from SET" {
		t.Fatalf("after both local applies the mirror serves %q, want the SET's value (it committed last)", got)
	}
	if setW.Contested() {
		t.Fatal("the SET applied first; nothing was left to the stream for it")
	}
	// The stream, in commit order.
	m.Apply(Batch{Xid: 10, Changes: []Change{set("k", "from loader", 10)}})
	if got := m.state(t, "k"); got != "from SET" {
		t.Fatalf("the loader's echo brought back its older value: %q", got)
	}
	m.Apply(Batch{Xid: 11, Changes: []Change{set("k", "from SET", 11)}})
	m.Apply(Batch{Xid: 12, Changes: []Change{set("k", "later", 12)}})
	if got := m.state(t, "k"); got != "later" {
		t.Fatalf("after both echoes a newer change must apply (no echo mark left): %q", got)
	}
}

// The same with a DEL that waited for the loader's lock: the loader's late
// local apply must not bring the key back.
func TestOwnDeleteThenLateLoaderApply(t *testing.T) {
	m := newLoaded(t)
	loader := m.BeginWrite()
	delW := m.BeginWrite()
	m.ApplyWrite(delW, 11, []Change{{Op: OpDelete, Key: "k", Version: 10}})
	m.ApplyWrite(loader, 10, []Change{set("k", "from loader", 10)})
	if got := m.state(t, "k"); got != "<absent>" {
		t.Fatalf("a late loader apply brought back a key deleted after it: %q", got)
	}
	m.Apply(Batch{Xid: 10, Changes: []Change{set("k", "from loader", 10)}})
	m.Apply(Batch{Xid: 11, Changes: []Change{{Op: OpDelete, Key: "k", Version: 12}}})
	if got := m.state(t, "k"); got != "<absent>" {
		t.Fatalf("after the echoes: %q", got)
	}
	if st := m.Stats(); st.Tombstones != 0 {
		t.Fatalf("%d tombstones left after the echoes", st.Tombstones)
	}
}

// The other order: the loader committed first and applied first, while the
// SET was in flight. The SET's state cannot be ordered locally against the
// loader's, so the stream decides, and Settle waits for it: once it returns,
// the SET reads its own write.
func TestContestedWriteSettlesByStream(t *testing.T) {
	m := newLoaded(t)
	setW := m.BeginWrite()
	loader := m.BeginWrite()
	m.ApplyWrite(loader, 10, []Change{set("k", "from loader", 10)})
	m.ApplyWrite(setW, 11, []Change{set("k", "from SET", 11), set("other", "o", 12)})
	if !setW.Contested() {
		t.Fatal("the SET's change was applied over a write it cannot be ordered against")
	}
	if got := m.state(t, "other"); got != "o" {
		t.Fatalf("an uncontested key of the same write was not applied: %q", got)
	}
	settled := make(chan bool, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		settled <- setW.Settle(ctx)
	}()
	m.Apply(Batch{Xid: 10, Changes: []Change{set("k", "from loader", 10)}})
	select {
	case <-settled:
		t.Fatal("Settle returned before the write's echo")
	case <-time.After(20 * time.Millisecond):
	}
	m.Apply(Batch{Xid: 11, Changes: []Change{set("k", "from SET", 11), set("other", "o", 12)}})
	if ok := <-settled; !ok {
		t.Fatal("Settle reported a timeout after the echo arrived")
	}
	if got := m.state(t, "k"); got != "from SET" {
		t.Fatalf("after Settle the SET reads %q", got)
	}
	if st := m.Stats(); st.Contested != 1 {
		t.Fatalf("Contested = %d, want 1", st.Contested)
	}
}

// Writes applied before another began committed before it: no contest, the
// later write applies at once (the common case: two SETs in a row).
func TestSequentialOwnWritesApplyAtOnce(t *testing.T) {
	m := newLoaded(t)
	a := m.BeginWrite()
	m.ApplyWrite(a, 1, []Change{set("k", "a", 1)})
	b := m.BeginWrite()
	m.ApplyWrite(b, 2, []Change{set("k", "b", 2)})
	if got := m.state(t, "k"); got != "b" || b.Contested() {
		t.Fatalf("the second write: %q (contested %v), want b applied", got, b.Contested())
	}
}

// A write waiting for its echo is released when the stream breaks (the echo
// may never come), and a wait that times out leaves nothing behind.
func TestSettleReleasedOrTimedOut(t *testing.T) {
	m := newLoaded(t)
	for _, broken := range []bool{true, false} {
		setW := m.BeginWrite()
		loader := m.BeginWrite()
		m.ApplyWrite(loader, 20, []Change{set("k", "l", 20)})
		m.ApplyWrite(setW, 21, []Change{set("k", "s", 21)})
		if !setW.Contested() {
			t.Fatal("not contested")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		if broken {
			m.StreamDown("test")
			if !setW.Settle(ctx) {
				t.Fatal("Settle after the stream broke reported a timeout")
			}
		} else if setW.Settle(ctx) {
			t.Fatal("Settle without an echo reported success")
		}
		cancel()
		m.applyMu.Lock()
		n := len(m.awaiting)
		m.applyMu.Unlock()
		if n != 0 {
			t.Fatalf("%d waits left registered", n)
		}
		m.Apply(Batch{Xid: 20, Changes: []Change{set("k", "l", 20)}})
		m.Apply(Batch{Xid: 21, Changes: []Change{set("k", "s", 21)}})
	}
}
