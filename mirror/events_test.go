package mirror

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder collects the events a mirror hands its handlers.
type recorder struct {
	mu  sync.Mutex
	evs []Event
}

func (r *recorder) handle(ev Event) {
	ev.Changes = slices.Clone(ev.Changes) // handlers must not keep the mirror's slice
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
}

// wait returns the events once cond holds for them, failing after 5 s.
func (r *recorder) wait(t *testing.T, what string, cond func([]Event) bool) []Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		evs := slices.Clone(r.evs)
		r.mu.Unlock()
		if cond(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s; events: %s", what, render(evs))
		}
		time.Sleep(time.Millisecond)
	}
}

func count(n int) func([]Event) bool { return func(evs []Event) bool { return len(evs) >= n } }

// render describes events compactly: "changes[set a 0, del b 7] flush(truncate) ...".
func render(evs []Event) string {
	var parts []string
	for _, ev := range evs {
		switch ev.Kind {
		case KindChanges:
			var cs []string
			for _, c := range ev.Changes {
				cs = append(cs, fmt.Sprintf("%s %s %d", c.Event, c.Key, c.Origin))
			}
			parts = append(parts, "changes["+strings.Join(cs, ", ")+"]")
		case KindFlush:
			parts = append(parts, "flush("+ev.Flush.String()+")")
		case KindReload:
			parts = append(parts, fmt.Sprintf("reload(%s drift=%d err=%v)", ev.Reason, ev.Reload.Drift, ev.Err))
		case KindLoaders:
			parts = append(parts, "loaders")
		}
	}
	return strings.Join(parts, " ")
}

// withDispatcher runs m's dispatcher (only: no reloads, no clock) until
// the test ends.
func withDispatcher(t *testing.T, m *Mirror) *recorder {
	t.Helper()
	r := &recorder{}
	m.Handle(r.handle)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() { defer close(stopped); m.dispatchLoop(done) }()
	t.Cleanup(func() { close(done); <-stopped })
	return r
}

func del(key string, version int64) Change { return Change{Op: OpDelete, Key: key, Version: version} }

// TestEventsWholeBatchesInOrder: each applied batch, from the stream or a
// write of this sidecar, is one event holding all of its key changes in
// the order applied, and events come in apply order.
func TestEventsWholeBatchesInOrder(t *testing.T) {
	m := newLoaded(t)
	r := withDispatcher(t, m)
	var want []string
	for i := range 200 {
		x := uint64(i + 1)
		a, b := fmt.Sprint("a", i), fmt.Sprint("b", i)
		if i%3 == 2 { // one of this sidecar's writes
			tk := m.BeginWrite()
			c1, c2 := set(a, "w", int64(x)), del(fmt.Sprint("a", i-1), int64(x))
			c1.Origin, c2.Origin = 40+x, 40+x
			m.ApplyWrite(tk, x, []Change{c1, c2})
			want = append(want, fmt.Sprintf("changes[set %s %d, del a%d %d]", a, 40+x, i-1, 40+x))
			continue
		}
		m.Apply(Batch{Xid: x, Changes: []Change{set(a, "v", int64(x)), set(b, "v", int64(x)), {Op: OpSentinel, Token: "t"}}})
		want = append(want, fmt.Sprintf("changes[set %s 0, set %s 0]", a, b))
	}
	// A batch that changes nothing reported (a delete of a missing key) is no event.
	m.Apply(Batch{Xid: 1000, Changes: []Change{del("missing", 1000)}})
	m.Apply(Batch{Xid: 1001, Changes: []Change{set("last", "v", 1001)}})
	want = append(want, "changes[set last 0]")
	evs := r.wait(t, "every batch", count(len(want)))
	if got := render(evs); got != strings.Join(want, " ") {
		t.Fatalf("events:\n%s\nwant:\n%s", got, strings.Join(want, " "))
	}
}

// TestEventsOffTheLock: handlers run with no lock of the mirror held, so a
// handler may call back into the mirror (apply, write, read) without a
// deadlock, and a handler that blocks does not hold up applying.
func TestEventsOffTheLock(t *testing.T) {
	m := newLoaded(t)
	release := make(chan struct{})
	m.Handle(func(ev Event) {
		switch {
		case ev.Kind == KindChanges && ev.Changes[0].Key == "first":
			// Back into the mirror: a read, a batch, a write.
			if _, err := m.Exists("first"); err != nil {
				t.Error(err)
			}
			m.Apply(Batch{Xid: 2, Changes: []Change{set("from-handler", "v", 2)}})
			tk := m.BeginWrite()
			m.ApplyWrite(tk, 3, []Change{set("written-by-handler", "v", 3)})
		case ev.Kind == KindChanges && ev.Changes[0].Key == "block":
			<-release
		}
	})
	r := withDispatcher(t, m)
	m.Apply(Batch{Xid: 1, Changes: []Change{set("first", "v", 1)}})
	r.wait(t, "the handler's own batches", count(3))
	if got := m.state(t, "written-by-handler"); got != "v" {
		t.Fatalf("the handler's write: %q", got)
	}

	// A handler that blocks: the mirror goes on applying, and the events
	// wait for it, in order.
	m.Apply(Batch{Xid: 4, Changes: []Change{set("block", "v", 4)}})
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		for i := range 1000 {
			m.Apply(Batch{Xid: uint64(5 + i), Changes: []Change{set(fmt.Sprint("k", i), "v", int64(5+i))}})
		}
		m.StreamGap("test")
	}()
	select {
	case <-applied:
	case <-time.After(10 * time.Second):
		t.Fatal("a blocked handler held up applying")
	}
	if got := m.state(t, "k999"); got != "v" {
		t.Fatalf("k999: %q", got)
	}
	close(release)
	evs := r.wait(t, "the events held back", count(3+1+1000+1))
	for i, ev := range evs[4:1004] {
		if ev.Kind != KindChanges || ev.Changes[0].Key != fmt.Sprint("k", i) {
			t.Fatalf("event %d after the block: %s", i, render([]Event{ev}))
		}
	}
	if ev := evs[1004]; ev.Kind != KindFlush || ev.Flush != FlushGap || ev.Reason != "test" {
		t.Fatalf("last event: %s %q", render([]Event{ev}), ev.Reason)
	}
}

// TestEventsOrigin: a change of this sidecar's write carries the write's
// origin; the same change notified by the stream (the echo) is not
// reported again, and other changes carry none.
func TestEventsOrigin(t *testing.T) {
	m := newLoaded(t)
	r := withDispatcher(t, m)
	tk := m.BeginWrite()
	c := set("k", "mine", 5)
	c.Origin = 42
	m.ApplyWrite(tk, 5, []Change{c})
	m.Apply(Batch{Xid: 5, Changes: []Change{set("k", "mine", 5)}}) // the echo: skipped
	m.Apply(Batch{Xid: 6, Changes: []Change{set("k", "theirs", 6)}})
	evs := r.wait(t, "two events", count(2))
	if got, want := render(evs), "changes[set k 42] changes[set k 0]"; got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
}

// TestEventsFlushOnTruncate: a truncate's deletes are reported with the
// rest of its batch, followed by a flush of their own.
func TestEventsFlushOnTruncate(t *testing.T) {
	m := newLoaded(t)
	for i := range 3 {
		m.Apply(Batch{Xid: uint64(i + 1), Changes: []Change{set(fmt.Sprint("k", i), "v", int64(i+1))}})
	}
	r := withDispatcher(t, m)
	m.Apply(Batch{Xid: 10, Changes: []Change{set("k0", "w", 10), {Op: OpTruncate}, set("after", "v", 10)}})
	m.Apply(Batch{Xid: 11, Changes: []Change{set("next", "v", 11)}})
	evs := r.wait(t, "truncate", count(3))
	if evs[0].Kind != KindChanges || evs[1].Kind != KindFlush || evs[1].Flush != FlushTruncate || evs[2].Kind != KindChanges {
		t.Fatalf("events: %s", render(evs))
	}
	got := evs[0].Changes
	if got[0] != (KeyChange{Key: "k0", Event: EventSet}) || got[len(got)-1] != (KeyChange{Key: "after", Event: EventSet}) {
		t.Fatalf("the batch's first and last changes: %s", render(evs[:1]))
	}
	var deleted []string
	for _, c := range got[1 : len(got)-1] {
		if c.Event != EventDel {
			t.Fatalf("the truncate reported %s", render(evs[:1]))
		}
		deleted = append(deleted, c.Key)
	}
	slices.Sort(deleted)
	if !slices.Equal(deleted, []string{"k0", "k1", "k2"}) {
		t.Fatalf("the truncate deleted %q", deleted)
	}
}

// TestEventsGapFlushes: notifications lost (the stream down, a gap, a
// dropped payload) are a flush each; a loaders notification is an event.
func TestEventsGapFlushes(t *testing.T) {
	m := newLoaded(t)
	r := withDispatcher(t, m)
	m.StreamDown("listener disconnected: boom")
	m.StreamGap("queue overflow")
	m.Apply(Batch{Xid: 1, Changes: []Change{{Op: OpLoaders}}})
	m.opts.MinResyncInterval = -1 // no limiter timers in this test
	m.RequestRepair("undecodable")
	evs := r.wait(t, "flushes", count(4))
	var got []string
	for _, ev := range evs {
		got = append(got, render([]Event{ev})+" "+ev.Reason)
	}
	want := []string{"flush(gap) listener disconnected: boom", "flush(gap) queue overflow", "loaders ", "flush(gap) repair: undecodable"}
	if !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// TestEventsOverflow: when the handlers fall behind by more than the
// queue holds, key changes are dropped and a flush says so.
func TestEventsOverflow(t *testing.T) {
	defer func(n int64) { maxQueuedEventBytes = n }(maxQueuedEventBytes)
	maxQueuedEventBytes = 100 * (keyChangeCost + 2)
	m := newLoaded(t)
	release := make(chan struct{})
	r := withDispatcher(t, m)
	m.Handle(func(ev Event) { // after the recorder's
		if ev.Kind == KindChanges && ev.Changes[0].Key == "block" {
			<-release
		}
	})
	m.Apply(Batch{Xid: 1, Changes: []Change{set("block", "v", 1)}})
	r.wait(t, "blocked", count(1))
	for i := range 300 {
		m.Apply(Batch{Xid: uint64(2 + i), Changes: []Change{set(fmt.Sprint("k", i%100), "v", int64(2+i))}})
	}
	close(release)
	r.wait(t, "the overflow's flush", func(evs []Event) bool { return evs[len(evs)-1].Kind == KindFlush })
	// The queue is empty again: changes are queued again.
	m.Apply(Batch{Xid: 1000, Changes: []Change{set("later", "v", 1000)}})
	evs := r.wait(t, "after the overflow", func(evs []Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].Kind == KindChanges && evs[len(evs)-1].Changes[0].Key == "later"
	})
	flushes := 0
	for _, ev := range evs {
		if ev.Kind == KindFlush && ev.Flush == FlushOverflow {
			flushes++
		}
	}
	if n := len(evs); flushes != 1 || n < 50 || n > 150 {
		t.Fatalf("%d events with %d overflow flushes; want about 100 and one flush", n, flushes)
	}
	if d := m.ev.dropped.Load(); d < 150 {
		t.Fatalf("%d changes dropped", d)
	}
}
