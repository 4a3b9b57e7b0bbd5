package mirror

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// EventKind says what an Event reports.
type EventKind int

// The kinds of event.
const (
	// KindChanges: Changes holds the key changes of one applied batch, in
	// the order they were applied: a notification's, one of this sidecar's
	// writes', a reload's corrections, or keys reads found expired.
	KindChanges EventKind = iota + 1
	// KindFlush: everything may have changed; Flush says why and Reason
	// gives the detail. A consumer that keeps anything derived from the
	// mirror's content (client-side caches) drops all of it.
	KindFlush
	// KindReload: a reload ended: Reason (as requested: "connected",
	// "reconnected", "SIGHUP", "periodic", "repair: ...", ...), Reload,
	// and Err (nil on success). For metrics.
	KindReload
	// KindLoaders: cache_loaders changed (a notification), or may have
	// (after every reload, since notifications may have been lost): the
	// loaders are to be read again.
	KindLoaders
	// KindMessage: Messages holds the application pub/sub messages of one
	// applied batch (OpMessage records), in the order they were published;
	// it follows the batch's KindChanges event. Messages are dropped
	// (counted in Stats.MessagesDropped), never queued past the bound of
	// the event queue.
	KindMessage
)

// FlushCause says why everything may have changed (KindFlush).
type FlushCause int

// The causes of a flush.
const (
	// FlushTruncate: the table was truncated. The batch's event lists
	// the deletes, and comes just before.
	FlushTruncate FlushCause = iota + 1
	// FlushGap: notifications were lost (the listener disconnected, its
	// queue overflowed, or a payload had to be dropped): the mirror may
	// miss changes until the reload that follows corrects it.
	FlushGap
	// FlushDrift: a reload found the mirror had drifted from the table
	// and corrected it (its corrections were reported as key changes).
	FlushDrift
	// FlushOverflow: the handlers fell so far behind that key changes
	// were dropped instead of queued.
	FlushOverflow
	// FlushDB: FLUSHDB/FLUSHALL (a flush record) deleted every key of a
	// namespace, or all. The batch's event lists the deletes, and comes
	// just before.
	FlushDB
)

func (c FlushCause) String() string {
	switch c {
	case FlushTruncate:
		return "truncate"
	case FlushGap:
		return "gap"
	case FlushDrift:
		return "drift"
	case FlushOverflow:
		return "overflow"
	case FlushDB:
		return "flushdb"
	}
	return "unknown"
}

// KeyChange is one change of a key, as keyspace notifications name it.
type KeyChange struct {
	Key string
	// Event is EventSet, EventDel, EventExpire (the value stayed, the
	// expiry moved) or EventExpired (a read found the key expired; once
	// per key).
	Event string
	// Origin is the WriteOp.Origin of this sidecar's write that made the
	// change (the socket server's client id); 0 for a change that came
	// from elsewhere (another sidecar, SQL, a loader, a reload), and for
	// one of this sidecar's writes whose notification the mirror applied
	// before the write itself (it cannot tell the two apart then).
	Origin uint64
}

// Event is what the mirror tells its handlers (Handle).
type Event struct {
	Kind    EventKind
	Changes []KeyChange  // KindChanges; handlers must neither keep nor modify it
	Flush   FlushCause   // KindFlush
	Reason  string       // KindFlush: the detail; KindReload: the reload's reason
	Reload  ReloadResult // KindReload
	Err     error        // KindReload: nil when the reload succeeded
	// Messages: KindMessage; handlers must neither keep nor modify it.
	Messages []Message
}

// Message is one application pub/sub message: the channel (a key's view:
// the namespace, if any, included) and the message's bytes.
type Message struct {
	Channel string
	Data    []byte
}

// messageCost is what a queued message costs beyond its bytes.
const messageCost = 64

// emitMessages queues the messages of an applied batch as one event, or
// drops them (counted) when the queue is at its bound.
func (m *Mirror) emitMessages(msgs []Message) {
	if len(msgs) == 0 || !m.handled() {
		return
	}
	m.stats.messages.Add(int64(len(msgs)))
	var cost int64
	for i := range msgs {
		cost += int64(len(msgs[i].Channel)+len(msgs[i].Data)) + messageCost
	}
	q := &m.ev
	q.mu.Lock()
	if q.bytes > 0 && q.bytes+cost > maxQueuedEventBytes {
		q.mu.Unlock()
		m.stats.messagesDropped.Add(int64(len(msgs)))
		return
	}
	q.queue = append(q.queue, queuedEvent{ev: Event{Kind: KindMessage, Messages: msgs}})
	q.bytes += cost
	q.mu.Unlock()
	m.wakeDispatcher()
}

// maxQueuedEventBytes bounds the key changes waiting for the handlers
// (each counted as its key plus keyChangeCost); past it, further key
// changes are dropped, and one FlushOverflow event is queued instead. A
// single event is always queued when nothing waits. A variable for tests.
var maxQueuedEventBytes int64 = 64 << 20

const (
	keyChangeCost  = 64
	maxSpareEvents = 1024 // the largest queue kept for reuse
)

// merge tags: a key-change event that is not an applied batch (a reload's
// corrections, keys found expired) joins the previous event of its tag
// while that one still waits, so that a large drift is a few events.
const (
	mergeNone = iota
	mergeReload
	mergeExpired
)

type queuedEvent struct {
	ev    Event
	merge int
}

// events is the queue between the mirror and its handlers: the mirror
// appends under mu (a leaf lock, taken under applyMu or a shard lock so
// that events are queued in the order their changes were made), and the
// dispatcher calls the handlers with no lock of the mirror held.
type events struct {
	mu       sync.Mutex
	handlers []func(Event)
	queue    []queuedEvent
	spare    []queuedEvent // the dispatcher's last queue, emptied, for reuse
	bytes    int64         // of the key changes queued
	overflow bool          // a FlushOverflow is queued
	any      atomic.Bool
	wake     chan struct{}
	dropped  atomic.Int64
	reported int64 // dropped, as last logged (dispatcher)
	lastLog  time.Time
}

// Handle registers h to be told of every event of the mirror: whole
// applied batches of key changes, flushes, reload ends and loader changes,
// in the order they happened. Register before Open, so that nothing is
// missed. Handlers run one at a time on the mirror's dispatcher goroutine,
// never under a lock of the mirror (they may call it), but they delay one
// another: keep them fast, and queue what takes time. Events that arrive
// while the handlers are behind wait in a bounded queue.
func (m *Mirror) Handle(h func(Event)) {
	m.ev.mu.Lock()
	m.ev.handlers = append(slices.Clip(m.ev.handlers), h)
	m.ev.mu.Unlock()
	m.ev.any.Store(true)
}

// handled reports whether anything listens: without handlers, events are
// not even collected.
func (m *Mirror) handled() bool { return m.ev.any.Load() }

// emit queues ev for the handlers.
func (m *Mirror) emit(ev Event) {
	if !m.handled() {
		return
	}
	q := &m.ev
	q.mu.Lock()
	q.queue = append(q.queue, queuedEvent{ev: ev})
	q.mu.Unlock()
	m.wakeDispatcher()
}

// emitChanges queues key changes as one event, or merges them into the
// last queued event of the same merge tag.
func (m *Mirror) emitChanges(changes []KeyChange, merge int) {
	if len(changes) == 0 || !m.handled() {
		return
	}
	var cost int64
	for i := range changes {
		cost += int64(len(changes[i].Key)) + keyChangeCost
	}
	q := &m.ev
	q.mu.Lock()
	switch n := len(q.queue); {
	case q.bytes > 0 && q.bytes+cost > maxQueuedEventBytes:
		m.ev.dropped.Add(int64(len(changes)))
		if !q.overflow {
			q.overflow = true
			q.queue = append(q.queue, queuedEvent{ev: Event{Kind: KindFlush, Flush: FlushOverflow,
				Reason: "the mirror's event handlers fell behind; key changes were dropped"}})
		}
	case merge != mergeNone && n > 0 && q.queue[n-1].merge == merge:
		last := &q.queue[n-1].ev
		last.Changes = append(last.Changes, changes...)
		q.bytes += cost
	default:
		q.queue = append(q.queue, queuedEvent{ev: Event{Kind: KindChanges, Changes: changes}, merge: merge})
		q.bytes += cost
	}
	q.mu.Unlock()
	m.wakeDispatcher()
}

// emitChange queues one key change (see emitChanges).
func (m *Mirror) emitChange(key, event string, merge int) {
	if m.handled() {
		m.emitChanges([]KeyChange{{Key: key, Event: event}}, merge)
	}
}

func (m *Mirror) wakeDispatcher() {
	select {
	case m.ev.wake <- struct{}{}:
	default: // awake already, or will look again
	}
}

// changed records a key change of the batch being applied (applyMu held);
// endBatch queues them as one event.
func (m *Mirror) changed(key, event string, origin uint64) {
	if m.handled() {
		m.batch = append(m.batch, KeyChange{Key: key, Event: event, Origin: origin})
	}
}

// endBatch queues the changes of the batch just applied (applyMu held),
// then the flush of a truncate or FLUSHDB in it.
func (m *Mirror) endBatch(truncated, flushed bool) {
	if len(m.batch) > 0 {
		m.emitChanges(m.batch, mergeNone)
		m.batch = nil
	}
	switch {
	case truncated:
		m.emit(Event{Kind: KindFlush, Flush: FlushTruncate, Reason: "truncate"})
	case flushed:
		m.emit(Event{Kind: KindFlush, Flush: FlushDB, Reason: "flushdb"})
	}
}

// dispatchLoop calls the handlers until ctx is done, then once more for
// what is queued.
func (m *Mirror) dispatchLoop(done <-chan struct{}) {
	for {
		select {
		case <-done:
			m.dispatch()
			return
		case <-m.ev.wake:
		}
		m.dispatch()
	}
}

// dispatch hands everything queued to the handlers, in order.
func (m *Mirror) dispatch() {
	q := &m.ev
	for {
		q.mu.Lock()
		taken, handlers := q.queue, q.handlers
		q.queue, q.spare, q.bytes, q.overflow = q.spare, nil, 0, false
		q.mu.Unlock()
		if len(taken) == 0 {
			m.reportDropped()
			return
		}
		for i := range taken {
			for _, h := range handlers {
				h(taken[i].ev)
			}
		}
		clear(taken)
		if cap(taken) <= maxSpareEvents {
			q.mu.Lock()
			q.spare = taken[:0]
			q.mu.Unlock()
		}
	}
}

// reportDropped logs, at most every 10 seconds, key changes dropped
// because the handlers fell behind.
func (m *Mirror) reportDropped() {
	q := &m.ev
	if d := q.dropped.Load(); d != q.reported && time.Since(q.lastLog) >= 10*time.Second {
		m.log.Warn("mirror events dropped: their handlers fell behind; a flush was sent instead",
			"dropped", d-q.reported, "dropped_total", d)
		q.reported, q.lastLog = d, time.Now()
	}
}
