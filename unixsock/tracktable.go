package unixsock

import (
	"container/heap"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"pgmirror/mirror"
)

// DefaultTrackingTableMaxKeys bounds the table of tracked keys, as Redis's
// tracking-table-max-keys.
const DefaultTrackingTableMaxKeys = 1_000_000

// trackingClient is one tracking connection's mode; tracker.mu guards it.
type trackingClient struct {
	c      *client
	opts   trackOpts
	broken bool // the redirect target disconnected
	// NOLOOP: keys the client is writing, and invalidations held until
	// its write ends (tracking.go's beginOwnWrite).
	writing map[string]int
	held    map[string]bool
}

// keyTrack is one tracked key: the clients that read it since its last
// invalidation, and its expiry when it was registered.
type keyTrack struct {
	one     int64              // the first client
	more    map[int64]struct{} // the others, when several read it
	expires int64              // mirror.Lookup.Expires at registration; 0: none known
}

// tracker is the server's table of tracked keys (namespaced, as the mirror
// names them), its tracking clients and their redirect targets. Like
// Redis's, the table keeps client ids: a client that left or turned
// tracking off is skipped when its keys are invalidated.
type tracker struct {
	mu      sync.Mutex
	keys    map[string]*keyTrack
	clients map[int64]*trackingClient // tracking on, BCAST or not
	bcast   map[int64]*trackingClient
	targets map[int64]*client // connected redirect targets
	exp     expiryHeap
	wake    chan struct{}
	n       atomic.Int32 // len(clients): zero makes the mirror's events free
	gap     atomic.Bool  // notifications were lost: expiryLoop watches for the staleness bound
	sent    atomic.Int64 // invalidation messages sent
	evicted atomic.Int64 // keys evicted by the bound
	tracked atomic.Int64 // len(keys)
}

// initLocked makes the maps on first use (tracker.mu held).
func (t *tracker) initLocked() {
	if t.keys == nil {
		t.keys = map[string]*keyTrack{}
		t.clients = map[int64]*trackingClient{}
		t.bcast = map[int64]*trackingClient{}
		t.targets = map[int64]*client{}
	}
}

// listed is what CLIENT LIST shows of client id's tracking: its flags
// (t tracking, B broadcast, R redirect target gone) and redir (-1 when not
// tracking, 0 when pushes go to the client itself), as Redis shows them.
func (t *tracker) listed(id int64) (flags string, redir int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tc := t.clients[id]
	if tc == nil {
		return "", -1
	}
	flags = "t"
	if tc.broken {
		flags += "R"
	}
	if tc.opts.bcast {
		flags += "B"
	}
	return flags, tc.opts.redirect
}

// enable records c's tracking mode and returns it.
func (t *tracker) enable(c *client, o trackOpts) *trackingClient {
	tc := &trackingClient{c: c, opts: o}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.initLocked()
	t.clients[c.id] = tc
	delete(t.bcast, c.id)
	if o.bcast {
		t.bcast[c.id] = tc
	}
	t.n.Store(int32(len(t.clients)))
	return tc
}

// disable forgets c's tracking mode.
func (t *tracker) disable(c *client) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.clients, c.id)
	delete(t.bcast, c.id)
	t.n.Store(int32(len(t.clients)))
	if len(t.clients) == 0 { // no one to invalidate: the table is moot
		clear(t.keys)
		t.exp = nil
		t.tracked.Store(0)
	}
}

// gone forgets a disconnected client, as a tracking client and as a
// redirect target.
func (t *tracker) gone(c *client) {
	if c.trk.tc == nil && !t.isTarget(c.id) {
		return
	}
	t.disable(c)
	t.mu.Lock()
	if t.targets[c.id] == c {
		delete(t.targets, c.id)
	}
	t.mu.Unlock()
}

func (t *tracker) isTarget(id int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.targets[id] != nil
}

// addTarget records the connected client id as a redirect target; false
// when no such client is connected.
func (t *tracker) addTarget(s *Server, id int64) bool {
	for _, o := range s.connected() {
		if o.id == id && !o.evicted.Load() {
			t.mu.Lock()
			t.initLocked()
			t.targets[id] = o
			t.mu.Unlock()
			return true
		}
	}
	return false
}

func (t *tracker) broken(tc *trackingClient) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return tc.broken
}

// remember registers keys as read by tc's client. Keys new to the table
// get their expiry looked up after they are registered (a change after
// that invalidates them anyway), and past the bound other keys are evicted
// by invalidating them. With try (the event loop), nothing is registered
// and it returns false when the table's lock is taken.
func (t *tracker) remember(s *Server, tc *trackingClient, keys []string, try bool) bool {
	id := tc.c.id
	bound := s.TrackingTableMaxKeys
	if bound <= 0 {
		bound = DefaultTrackingTableMaxKeys
	}
	var fresh []string
	var out deliveries
	if try {
		if !t.mu.TryLock() {
			return false
		}
	} else {
		t.mu.Lock()
	}
	if t.clients[id] != tc {
		t.mu.Unlock()
		return true // turned off meanwhile
	}
	for _, k := range keys {
		kt := t.keys[k]
		if kt == nil {
			t.keys[k] = &keyTrack{one: id}
			fresh = append(fresh, k)
			continue
		}
		if kt.one != id {
			if kt.more == nil {
				kt.more = map[int64]struct{}{}
			}
			kt.more[id] = struct{}{}
		}
	}
	for k := range t.keys {
		if len(t.keys) <= bound {
			break
		}
		t.invalidateLocked(k, 0, &out)
		t.evicted.Add(1)
	}
	t.tracked.Store(int64(len(t.keys)))
	t.mu.Unlock()
	out.send(s, t)
	for _, k := range fresh {
		t.watchExpiry(s, k)
	}
	return true
}

// watchExpiry schedules the invalidation of a tracked key at its expiry:
// the mirror expires keys when they are read, and a cached key is not.
func (t *tracker) watchExpiry(s *Server, key string) {
	l, err := s.Mirror.Exists(key)
	if err != nil || !l.Found || l.Expires == mirror.NoExpiry {
		return
	}
	ms, found, err := s.Mirror.PTTL(key)
	if err != nil || !found || ms < 0 {
		return
	}
	at := time.Now().Add(time.Duration(ms+1) * time.Millisecond)
	t.mu.Lock()
	kt := t.keys[key]
	if kt == nil || kt.expires == l.Expires {
		t.mu.Unlock()
		return
	}
	kt.expires = l.Expires
	first := len(t.exp) == 0 || at.Before(t.exp[0].at)
	heap.Push(&t.exp, expiryEntry{at: at, key: key, expires: l.Expires})
	if len(t.exp) > 2*len(t.keys)+1024 {
		t.exp.compact(t.keys)
	}
	t.mu.Unlock()
	if first {
		wakeUp(t.wake)
	}
}

// invalidateLocked removes key from the table and queues its invalidation
// for every client that tracks it, but the writer when it asked for
// NOLOOP (origin: the client whose write changed it, or 0).
func (t *tracker) invalidateLocked(key string, origin uint64, out *deliveries) {
	kt := t.keys[key]
	if kt == nil {
		return
	}
	delete(t.keys, key)
	t.to(kt.one, key, origin, out)
	for id := range kt.more {
		t.to(id, key, origin, out)
	}
}

func (t *tracker) to(id int64, key string, origin uint64, out *deliveries) {
	tc := t.clients[id]
	if tc == nil || tc.opts.bcast || tc.opts.noloop && origin == uint64(id) {
		return
	}
	if origin == 0 && tc.writing[key] > 0 {
		tc.held[key] = true // maybe the client's own write, notified first
		return
	}
	out.add(t, tc, []string{key}, false)
}

// handleTrackingEvent is the server's handler of the mirror's events for
// client-side caching: key changes invalidate the keys read, a flush
// invalidates everything.
func (s *Server) handleTrackingEvent(ev mirror.Event) {
	t := &s.trk
	if t.n.Load() == 0 {
		return
	}
	var out deliveries
	t.mu.Lock()
	switch ev.Kind {
	case mirror.KindChanges:
		for i := range ev.Changes {
			ch := &ev.Changes[i]
			t.invalidateLocked(ch.Key, ch.Origin, &out)
		}
		t.broadcastLocked(s, ev.Changes, &out)
	case mirror.KindFlush:
		t.flushLocked(&out)
		if ev.Flush == mirror.FlushGap && t.gap.CompareAndSwap(false, true) {
			wakeUp(t.wake)
		}
	case mirror.KindReload:
		if ev.Err == nil {
			t.gap.Store(false)
		}
	}
	t.tracked.Store(int64(len(t.keys)))
	t.mu.Unlock()
	out.send(s, t)
}

// flushLocked empties the table and queues a flush-everything
// invalidation for every tracking client.
func (t *tracker) flushLocked(out *deliveries) {
	clear(t.keys)
	t.exp = nil
	for _, tc := range t.clients {
		out.add(t, tc, nil, true)
	}
}

func wakeUp(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default: // awake already, or will look again
	}
}

// staleFlush sends a flush-everything invalidation once reads fail past
// the staleness bound (--stale-reads=error) after notifications were
// lost: what the clients read since the gap may be stale, and reads can
// no longer refresh it. It reports whether the gap is still watched.
func (s *Server) staleFlush() bool {
	t := &s.trk
	if !t.gap.Load() {
		return false
	}
	if _, err := s.Mirror.Exists(""); !errors.Is(err, mirror.ErrStale) {
		return true
	}
	var out deliveries
	t.mu.Lock()
	if t.gap.CompareAndSwap(true, false) {
		t.flushLocked(&out)
	}
	t.mu.Unlock()
	out.send(s, t)
	return false
}

// broadcastLocked queues, for each BCAST client, the changed keys of its
// namespace that match its prefixes, as one message.
func (t *tracker) broadcastLocked(s *Server, changes []mirror.KeyChange, out *deliveries) {
	for _, tc := range t.bcast {
		var keys []string
		for i := range changes {
			ch := &changes[i]
			if tc.opts.noloop && ch.Origin == uint64(tc.c.id) || len(ch.Key) < len(s.Namespace) || ch.Key[:len(s.Namespace)] != s.Namespace {
				continue
			}
			k := ch.Key[len(s.Namespace):]
			for _, p := range tc.opts.prefixes {
				if len(k) >= len(p) && k[:len(p)] == p {
					keys = append(keys, ch.Key)
					break
				}
			}
		}
		if len(keys) > 0 {
			out.add(t, tc, keys, false)
		}
	}
}

// delivery is one invalidation message for a tracking client: keys
// (namespaced), or everything (flush).
type delivery struct {
	tc     *trackingClient
	target *client // the client itself, or its redirect target; nil: broken
	keys   []string
	flush  bool
}

type deliveries []delivery

// add queues a message for tc, resolving its redirect (tracker.mu held).
func (out *deliveries) add(t *tracker, tc *trackingClient, keys []string, flush bool) {
	target := tc.c
	if r := tc.opts.redirect; r != 0 {
		target = t.targets[r]
		if target == nil {
			tc.broken = true
		}
	}
	*out = append(*out, delivery{tc: tc, target: target, keys: keys, flush: flush})
}

// send encodes and queues the messages (no lock held), disconnecting a
// target that has more waiting than its bounds allow.
func (out deliveries) send(s *Server, t *tracker) {
	if len(out) == 0 {
		return
	}
	touched := map[*client]struct{}{}
	for _, d := range out {
		msg := d.encode(s)
		target := d.target
		if target == nil {
			target = d.tc.c // told its redirect is broken, in RESP3
		}
		if msg == nil || target.evicted.Load() {
			continue
		}
		if !target.out.push(target, msg) {
			s.evict(target, reasonSubscriber, fmt.Sprintf("a tracking client does not read its invalidations "+
				"(more than %d messages or %d bytes waiting)", s.SubscriberBuffer, s.MaxClientOutput))
			continue
		}
		t.sent.Add(1)
		touched[target] = struct{}{}
	}
	for c := range touched {
		c.out.kick(c)
	}
}

// encode is the message as Redis sends it: an "invalidate" push to a
// RESP3 connection, a message of channel __redis__:invalidate to a RESP2
// redirect target in subscribe mode, nothing to a RESP2 connection
// without redirect; a null for a flush, in the tracking client's protocol.
func (d delivery) encode(s *Server) []byte {
	own3 := d.tc.c.push3.Load()
	if d.target == nil {
		if !own3 {
			return nil
		}
		b := appendNumber(nil, '>', 2)
		b = appendBulkString(b, "tracking-redir-broken")
		return appendNumber(b, ':', d.tc.opts.redirect)
	}
	var b []byte
	switch {
	case d.target.push3.Load():
		b = appendBulkString(appendNumber(nil, '>', 2), "invalidate")
	case d.target != d.tc.c && subscribedAny(d.target):
		b = appendNumber(nil, '*', 3)
		b = appendBulkString(appendBulkString(b, "message"), "__redis__:invalidate")
	default:
		return nil
	}
	if d.flush {
		if own3 {
			return append(b, "_\r\n"...)
		}
		return append(b, "$-1\r\n"...)
	}
	b = appendNumber(b, '*', int64(len(d.keys)))
	for _, k := range d.keys {
		b = appendBulkString(b, k[len(s.Namespace):])
	}
	return b
}

// subscribedAny reports whether c is in subscribe mode, from another
// goroutine than c's command loop (hub.mu orders it with SUBSCRIBE).
func subscribedAny(c *client) bool {
	sub, psub := c.subscriptions()
	return sub+psub > 0
}

// expiryEntry is a tracked key's expiry: at is when to invalidate it (the
// local clock), expires the mirror's expiry it stands for.
type expiryEntry struct {
	at      time.Time
	key     string
	expires int64
}

type expiryHeap []expiryEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// compact drops the entries of keys no longer tracked with that expiry.
func (h *expiryHeap) compact(keys map[string]*keyTrack) {
	kept := (*h)[:0]
	for _, e := range *h {
		if kt := keys[e.key]; kt != nil && kt.expires == e.expires {
			kept = append(kept, e)
		}
	}
	clear((*h)[len(kept):])
	*h = kept
	heap.Init(h)
}

// staleCheck is how often expiryLoop checks the staleness bound while
// notifications are lost.
const staleCheck = 20 * time.Millisecond

// expiryLoop invalidates tracked keys as they expire, and everything when
// the staleness bound passes (staleFlush), until Close.
func (s *Server) expiryLoop() {
	defer s.helpers.Done()
	t := &s.trk
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		t.mu.Lock()
		var out deliveries
		now := time.Now()
		for len(t.exp) > 0 && !t.exp[0].at.After(now) {
			e := heap.Pop(&t.exp).(expiryEntry)
			if kt := t.keys[e.key]; kt != nil && kt.expires == e.expires {
				t.invalidateLocked(e.key, 0, &out)
			}
		}
		wait := time.Hour
		if len(t.exp) > 0 {
			wait = time.Until(t.exp[0].at)
		}
		t.tracked.Store(int64(len(t.keys)))
		t.mu.Unlock()
		out.send(s, t)
		if s.staleFlush() {
			wait = min(wait, staleCheck)
		}
		timer.Reset(wait)
		select {
		case <-s.stop:
			return
		case <-t.wake:
		case <-timer.C:
		}
	}
}

// TrackingStats are the counters of client-side caching.
type TrackingStats struct {
	Keys          int64 // keys in the tracking table now
	Clients       int   // connections with tracking on now
	Invalidations int64 // invalidation messages sent since start
	Evicted       int64 // keys evicted by --tracking-table-max-keys (each invalidated)
}

func (t *tracker) stats() TrackingStats {
	return TrackingStats{Keys: t.tracked.Load(), Clients: int(t.n.Load()),
		Invalidations: t.sent.Load(), Evicted: t.evicted.Load()}
}

// beginOwnWrite marks keys as being written by a NOLOOP client: a change
// of them reported without its origin (the notification of the write came
// before the write's own apply) is held until the write ends. It reports
// whether endOwnWrite must follow.
func (c *client) beginOwnWrite(keys []string) bool {
	tc := c.trk.tc
	if tc == nil || !tc.opts.noloop || c.txn.blk != nil {
		return false
	}
	t := &c.s.trk
	t.mu.Lock()
	if tc.writing == nil {
		tc.writing, tc.held = map[string]int{}, map[string]bool{}
	}
	for _, k := range keys {
		tc.writing[k]++
	}
	t.mu.Unlock()
	return true
}

// endOwnWrite sends the invalidations held during the write, but of keys
// whose mirror state is still the one the write left: those changes were
// the write itself, or older than it.
func (c *client) endOwnWrite(keys []string, states []mirror.Change) {
	tc := c.trk.tc
	t := &c.s.trk
	t.mu.Lock()
	var held []string
	for _, k := range keys {
		if tc.writing[k]--; tc.writing[k] <= 0 {
			delete(tc.writing, k)
			if tc.held[k] {
				delete(tc.held, k)
				held = append(held, k)
			}
		}
	}
	t.mu.Unlock()
	var out deliveries
	for _, k := range held {
		if c.wroteLast(k, states) {
			continue
		}
		t.mu.Lock()
		out.add(t, tc, []string{k}, false)
		t.mu.Unlock()
	}
	out.send(c.s, t)
}

// wroteLast reports whether the mirror holds key as states left it.
func (c *client) wroteLast(key string, states []mirror.Change) bool {
	for i := range states {
		st := &states[i]
		if st.Key != key {
			continue
		}
		l, err := c.s.Mirror.Exists(key)
		if err != nil {
			return false
		}
		if st.Op == mirror.OpDelete {
			return !l.Found
		}
		return l.Found && l.Version == st.Version
	}
	return false
}
