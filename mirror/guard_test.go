package mirror

import (
	"testing"
	"time"
)

func TestReplayGuard(t *testing.T) {
	g := newReplayGuard(4)
	admit := func(xid uint64, macs ...uint64) bool {
		ok, _ := g.admit(&Batch{Xid: xid, MACs: macs})
		return ok
	}
	if !admit(10, 1) || admit(10, 1) || admit(11, 2, 1) {
		t.Fatal("a MAC applied before was admitted again")
	}
	for range 2 {
		if !admit(0) {
			t.Fatal("sentinels (no xid, no MAC) must always pass")
		}
	}
	// A reload: its generation starts before its snapshot, which sees
	// transactions below 20; MACs applied meanwhile stay.
	gen := g.newGen()
	if !admit(25, 3) {
		t.Fatal("a new payload was refused")
	}
	g.switchTo(&Visibility{Xmin: 20, Xmax: 20}, gen)
	if admit(15, 99) {
		t.Fatal("a payload of a transaction the snapshot sees was admitted")
	}
	if admit(25, 3) {
		t.Fatal("a MAC applied after the snapshot was forgotten at the switch")
	}
	if g.size != 1 {
		t.Fatalf("%d MACs kept, want only the one after the snapshot", g.size)
	}
	// The bound: overflow is reported once, and the batch still applies.
	var overflows int
	for i := uint64(0); i < 6; i++ {
		ok, over := g.admit(&Batch{Xid: 30 + i, MACs: []uint64{100 + i}})
		if !ok {
			t.Fatal("a new payload was refused at the bound")
		}
		if over {
			overflows++
		}
	}
	if overflows != 1 || g.size != 4 {
		t.Fatalf("%d overflows, %d kept; want 1 and the bound, 4", overflows, g.size)
	}
}

func TestRequestResyncIsSpacedOut(t *testing.T) {
	t.Parallel()
	m := newWithSource(t, &rowSource{rows: map[string]Row{}}, Options{MinResyncInterval: 200 * time.Millisecond})
	t.Cleanup(m.stopLimiter)
	start := time.Now()
	for range 100 {
		m.RequestResync("loop")
	}
	if r := <-m.resyncCh; r != "loop" {
		t.Fatalf("first request: %q", r)
	}
	select {
	case r := <-m.resyncCh:
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Fatalf("second reload (%q) after %v, want the 200ms gap", r, d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the coalesced requests never got their reload")
	}
	select {
	case r := <-m.resyncCh:
		t.Fatalf("a third reload (%q): 100 requests should have cost two", r)
	case <-time.After(400 * time.Millisecond):
	}
	// A repair waiting for its gap gives way to a full resync.
	m.RequestRepair("x") // the gap has passed: at once
	m.RequestRepair("y")
	m.RequestResync("SIGHUP")
	for _, want := range []string{"repair: x", "SIGHUP"} {
		if r := <-m.resyncCh; r != want {
			t.Fatalf("reload for %q, want %q", r, want)
		}
	}
}

// TestReplayGuardDropped: the MAC of a payload dropped for a key not read
// yet is remembered, so its replay once the key is known is refused like a
// replay of an applied payload; dropped MACs take at most a quarter of the
// window (a forger sends them at will), past which the loss is recorded
// until a reload whose snapshot sees the lost payloads.
func TestReplayGuardDropped(t *testing.T) {
	g := newReplayGuard(8)
	if !g.remember(7) {
		t.Fatal("a dropped MAC was not kept in an empty window")
	}
	if ok, _ := g.admit(&Batch{Xid: 30, MACs: []uint64{7}}); ok {
		t.Fatal("the replay of a dropped payload was admitted")
	}
	if !g.remember(8) || g.remember(9) || !g.lost {
		t.Fatalf("dropped MACs past a quarter of the window: kept %d, lost %v; want 2 kept, lost", g.dropped, g.lost)
	}
	for mac := uint64(100); mac < 106; mac++ {
		if ok, overflow := g.admit(&Batch{Xid: 31, MACs: []uint64{mac}}); !ok || overflow {
			t.Fatalf("applied MAC %d: ok %v, overflow %v; the dropped ones must leave the rest of the window", mac, ok, overflow)
		}
	}
	gen := g.newGen()
	g.switchTo(&Visibility{Xmin: 40, Xmax: 40}, gen)
	if g.lost || g.dropped != 0 || g.size != 0 {
		t.Fatalf("after a reload: lost %v, dropped %d, size %d; want none", g.lost, g.dropped, g.size)
	}
	if ok, _ := g.admit(&Batch{Xid: 30, MACs: []uint64{7}}); ok {
		t.Fatal("the replay of a dropped payload the snapshot sees was admitted")
	}
}
