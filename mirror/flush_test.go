package mirror

import (
	"context"
	"testing"
	"time"
)

// TestApplyFlush: a flush record deletes the keys under its prefix but for
// those under a kept prefix, and nothing else.
func TestApplyFlush(t *testing.T) {
	m := newLoaded(t)
	m.Apply(Batch{Xid: 1, Changes: []Change{set("a:1", "v", 1), set("a:item:1", "row", 2), set("ab:1", "v", 3),
		set("b:1", "v", 4), set("a", "v", 5)}})
	m.Apply(Batch{Xid: 2, Changes: []Change{{Op: OpFlush, Version: 6, Key: "a:", Keep: []string{"a:item:"}}}})
	for key, want := range map[string]string{"a:1": "<absent>", "a:item:1": "row", "ab:1": "v", "b:1": "v", "a": "v"} {
		if got := m.state(t, key); got != want {
			t.Errorf("%s after the flush: %q, want %q", key, got, want)
		}
	}
	m.Apply(Batch{Xid: 3, Changes: []Change{{Op: OpFlush, Version: 7}}})
	for _, key := range []string{"a:item:1", "ab:1", "b:1", "a"} {
		if got := m.state(t, key); got != "<absent>" {
			t.Errorf("%s after a flush of every key: %q", key, got)
		}
	}
	if n := m.Stats().Applied["flush"]; n != 2 {
		t.Errorf("%d flushes counted, want 2", n)
	}
}

// TestOwnFlushWaitsForItsEcho: the writer does not apply its own flush; it
// waits for the stream to deliver it, so that the client reads the flush
// in commit order with every other change.
func TestOwnFlushWaitsForItsEcho(t *testing.T) {
	m := newLoaded(t)
	m.Apply(Batch{Xid: 1, Changes: []Change{set("k", "v", 1)}})
	tk := m.BeginWrite()
	m.ApplyWrite(tk, 9, []Change{{Op: OpFlush, Version: 2}})
	if !tk.Contested() {
		t.Fatal("an own flush was not left to the stream")
	}
	done := make(chan bool, 1)
	go func() { done <- tk.Settle(context.Background()) }()
	m.Apply(Batch{Xid: 9, Changes: []Change{{Op: OpFlush, Version: 2}}})
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("Settle reported the echo missing")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Settle did not return after the echo")
	}
	if got := m.state(t, "k"); got != "<absent>" {
		t.Fatalf("k after the flush's echo: %q", got)
	}
}
