package mirror

import (
	"testing"
)

// newLoaded returns a mirror that needs no Postgres: for unit tests of the
// apply rules, which are pure logic.
func newLoaded(t *testing.T) *Mirror {
	t.Helper()
	return newWithSource(t, nil, Options{})
}

func set(key, v string, version int64) Change {
	return Change{Op: OpSet, Key: key, Value: []byte(v), Version: version, Expires: NoExpiry}
}

func (m *Mirror) state(t *testing.T, key string) string {
	t.Helper()
	l, err := m.Exists(key)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Found {
		return "<absent>"
	}
	v, ok := m.heldValue(key, l)
	if !ok {
		return "<no value>"
	}
	return string(v)
}

func TestApplyWriteBeforeEcho(t *testing.T) {
	m := newLoaded(t)
	m.Apply(Batch{Xid: 1, Changes: []Change{set("k", "old", 1)}})
	tk := m.BeginWrite()
	m.Apply(Batch{Xid: 2, Changes: []Change{set("k", "committed-earlier", 2)}})
	m.ApplyWrite(tk, 3, []Change{set("k", "mine", 3)})
	if got := m.state(t, "k"); got != "mine" {
		t.Fatalf("after the write: %q", got)
	}
	// A notification of a transaction that committed before ours, delivered late.
	m.Apply(Batch{Xid: 4, Changes: []Change{set("k", "late-but-older", 4)}})
	if got := m.state(t, "k"); got != "mine" {
		t.Fatalf("an older notification overwrote the write: %q", got)
	}
	m.Apply(Batch{Xid: 3, Changes: []Change{set("k", "mine", 3)}}) // the echo
	m.Apply(Batch{Xid: 5, Changes: []Change{set("k", "newer", 5)}})
	if got := m.state(t, "k"); got != "newer" {
		t.Fatalf("after the echo, a newer change must apply: %q", got)
	}
}

// TestEchoBeforeApplyWrite: the stream delivers the write's own notification,
// and a newer change, before the writer learns its commit succeeded.
func TestEchoBeforeApplyWrite(t *testing.T) {
	m := newLoaded(t)
	tk := m.BeginWrite()
	m.Apply(Batch{Xid: 7, Changes: []Change{set("k", "mine", 7), {Op: OpDelete, Key: "d", Version: 8}}}) // the echo
	m.Apply(Batch{Xid: 9, Changes: []Change{set("k", "newer", 9)}})
	m.ApplyWrite(tk, 7, []Change{set("k", "mine", 7), {Op: OpDelete, Key: "d", Version: 8}})
	if got := m.state(t, "k"); got != "newer" {
		t.Fatalf("ApplyWrite after its echo reverted a newer change: %q", got)
	}
	m.Apply(Batch{Xid: 10, Changes: []Change{set("k", "newest", 10), set("d", "back", 11)}})
	if got := m.state(t, "k"); got != "newest" {
		t.Fatalf("a stale echo marker blocks the stream: %q", got)
	}
	if got := m.state(t, "d"); got != "back" {
		t.Fatalf("a stale delete marker blocks the stream: %q", got)
	}
	if st := m.Stats(); st.Tombstones != 0 {
		t.Fatalf("%d tombstones left", st.Tombstones)
	}
}

// TestEchoSplitAcrossPayloads: the echo's first payload arrived, its second
// not yet, when the writer applies.
func TestEchoSplitAcrossPayloads(t *testing.T) {
	m := newLoaded(t)
	m.Apply(Batch{Xid: 1, Changes: []Change{set("a", "a0", 1), set("b", "b0", 2)}})
	tk := m.BeginWrite()
	m.Apply(Batch{Xid: 5, Changes: []Change{set("a", "a1", 5)}}) // first part of the echo
	m.ApplyWrite(tk, 5, []Change{set("a", "a1", 5), set("b", "b1", 6)})
	if a, b := m.state(t, "a"), m.state(t, "b"); a != "a1" || b != "b1" {
		t.Fatalf("after the write: a=%q b=%q, want a1 b1", a, b)
	}
	m.Apply(Batch{Xid: 5, Changes: []Change{set("b", "b1", 6)}}) // second part
	m.Apply(Batch{Xid: 6, Changes: []Change{set("b", "b2", 7)}})
	if b := m.state(t, "b"); b != "b2" {
		t.Fatalf("b = %q after a newer change, want b2", b)
	}
}
