package mirror

import (
	"bytes"
	"context"
	"slices"
	"strings"
)

// Apply applies one notification's changes. Batches must be applied in the
// order they arrive, which is commit order: that order, never the version
// numbers, decides which state of a key is newest.
func (m *Mirror) Apply(b Batch) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.applyLocked(b)
}

// TryApply applies b like Apply if nothing else is applying (a batch or
// this sidecar's write) at this moment, and reports whether it did; it
// never waits for the lock. The listener applies on the goroutine that
// received the notification this way, and queues it when this fails.
func (m *Mirror) TryApply(b Batch) bool {
	if !m.applyMu.TryLock() {
		return false
	}
	defer m.applyMu.Unlock()
	m.applyLocked(b)
	return true
}

func (m *Mirror) applyLocked(b Batch) {
	ok, overflow := m.replay.admit(&b)
	if overflow {
		m.resync(repairPrefix + "replay window full")
	}
	if !ok {
		m.stats.replays.Add(1)
		return
	}
	rl := m.reload.Load()
	sets := m.valueSets.Load()
	truncated, flushed := false, false
	var msgs []Message
	m.lockView()
	defer m.unlockView() // after settle: the values are readable
	for i := range b.Changes {
		c := &b.Changes[i]
		switch c.Op {
		case OpSentinel:
			m.sentinelArrived(c.Token)
		case OpLoaders:
			m.emit(Event{Kind: KindLoaders})
		case OpTruncate:
			m.applyTruncate(b.Xid, rl)
			truncated = true
		case OpFlush:
			m.applyFlush(b.Xid, c, rl)
			flushed = true
		case OpMessage:
			msgs = append(msgs, Message{Channel: c.Key, Data: c.Value})
		default:
			m.applyChange(b.Xid, c, rl, nil)
		}
	}
	m.endBatch(truncated, flushed)
	m.emitMessages(msgs)
	for t := range m.tickets {
		t.seen = append(t.seen, b.Xid)
	}
	if ch, ok := m.awaiting[b.Xid]; ok && b.Xid != 0 {
		// A write ApplyWrite left to the stream: the stream has now
		// delivered it, so its callers read it (or something newer).
		close(ch)
		delete(m.awaiting, b.Xid)
	}
	m.stats.batches.Add(1)
	m.settle(sets)
	m.signalApplied()
}

// settle runs after a batch is applied, before readers are told: if the
// batch gave the value cache a value (a value too large to keep in the
// index), wait until ristretto holds it, since a Set of a new key is
// buffered there, so that a read right after the change finds it instead of
// querying. Small values are in the index already: no wait, no hand-off.
func (m *Mirror) settle(sets int64) {
	if m.valueSets.Load() != sets {
		m.values.Wait()
	}
	m.updateBudget()
}

// WriteTicket is held by a writer while its transaction is in flight: the
// stream records in it the transactions it applies meanwhile, so that
// ApplyWrite knows whether the transaction's own notification (its echo)
// arrived before the writer learned that it committed.
type WriteTicket struct {
	seen []uint64 // xids of the batches applied since BeginWrite, in order
	// begun is Mirror.ownSeq at BeginWrite: this sidecar's writes applied
	// up to then committed before this one was sent.
	begun uint64
	// Set by ApplyWrite when a change of this write could not be ordered
	// against another write of this sidecar (see ApplyWrite): echoed is
	// closed once the stream delivered this write.
	m      *Mirror
	xid    uint64
	echoed chan struct{}
}

// maxAwaiting bounds the writes waiting for their echo (Settle); past it,
// they are all released, as when the stream breaks.
const maxAwaiting = 4096

// BeginWrite is called before a write transaction is sent.
func (m *Mirror) BeginWrite() *WriteTicket {
	t := &WriteTicket{}
	m.applyMu.Lock()
	t.begun = m.ownSeq
	m.tickets[t] = struct{}{}
	m.applyMu.Unlock()
	return t
}

// AbandonWrite ends a ticket whose transaction did not commit (or whose
// outcome is unknown: the stream will deliver it if it committed).
func (m *Mirror) AbandonWrite(t *WriteTicket) {
	m.applyMu.Lock()
	delete(m.tickets, t)
	m.applyMu.Unlock()
}

// ApplyWrite applies the committed effect of this sidecar's own transaction
// xid before the client is answered (read-your-writes), and ends t. Until
// the echo arrives, notifications of other transactions for these keys
// committed before xid and are skipped. If the echo came first, the stream
// has applied the write already, and perhaps newer changes: what it applied
// is kept.
//
// Two writes of this sidecar on one key (a loader's store and a SET that
// waited for the loader's key lock, say) may apply locally in the other
// order than they committed. A key whose state came from another write of
// this sidecar that was applied after this one began (and whose echo has not
// arrived) is therefore left alone: which of the two committed last is not
// known here, and the stream, which delivers both in commit order, decides.
// Settle waits for that when the caller must read its own write.
func (m *Mirror) ApplyWrite(t *WriteTicket, xid uint64, changes []Change) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	delete(m.tickets, t)
	echo := slices.Index(t.seen, xid)
	if echo >= 0 && slices.ContainsFunc(t.seen[echo:], func(x uint64) bool { return x != xid }) {
		return // the stream is past the echo: everything is applied
	}
	m.ownSeq++
	rl := m.reload.Load()
	sets := m.valueSets.Load()
	contested := false
	m.lockView()
	defer m.unlockView() // after settle: the values are readable
	for i := range changes {
		c := &changes[i]
		if c.Op == OpFlush {
			// Left to the stream, which applies it in commit order; the
			// writer waits for it (Settle) unless it has arrived.
			contested = contested || echo < 0
			continue
		}
		if echo >= 0 && m.appliedBy(c, xid) {
			continue // this part of the echo arrived; another may still be on its way
		}
		if !m.applyChange(xid, c, rl, t) {
			contested = true
		}
	}
	if contested && echo < 0 && xid != 0 {
		// (When the echo has arrived while the other write's has not, this
		// write committed first: the state kept is the newer one.)
		if len(m.awaiting) >= maxAwaiting {
			m.releaseAwaiting()
		}
		t.m, t.xid, t.echoed = m, xid, make(chan struct{})
		m.awaiting[xid] = t.echoed
	}
	m.endBatch(false, false)
	m.settle(sets)
	m.signalApplied()
}

// Contested reports whether ApplyWrite left a change of this write to the
// stream (see ApplyWrite), so that the mirror may show an older state of a
// key until its echo arrives.
func (t *WriteTicket) Contested() bool { return t.echoed != nil }

// Settle waits until the stream delivered the write when ApplyWrite left a
// change of it to the stream, or ctx is done; it returns at once otherwise.
// It reports whether the mirror now shows the write or a newer state.
func (t *WriteTicket) Settle(ctx context.Context) bool {
	if t.echoed == nil {
		return true
	}
	select {
	case <-t.echoed:
		return true
	case <-ctx.Done():
	}
	m := t.m
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	if ch, ok := m.awaiting[t.xid]; ok && ch == t.echoed {
		delete(m.awaiting, t.xid)
		return false
	}
	return true // released meanwhile
}

// releaseAwaiting lets every write waiting for its echo go (applyMu held):
// after the stream lost notifications, an echo may never come.
func (m *Mirror) releaseAwaiting() {
	for xid, ch := range m.awaiting {
		close(ch)
		delete(m.awaiting, xid)
	}
}

// appliedBy reports whether the index already holds what transaction xid
// did to c's key.
func (m *Mirror) appliedBy(c *Change, xid uint64) bool {
	sh, h := m.ix.shard(c.Key)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	e := sh.get(c.Key, h)
	if c.Op == OpDelete {
		return e == nil || e.deleted() || e.xid() == xid
	}
	return e != nil && e.xid() == xid
}

// applyChange applies one change of transaction xid to its key: a change
// the stream delivered (own == nil) or this sidecar's write (own is its
// ticket). It returns false when it left an own change to the stream
// because another write of this sidecar, applied since own began, holds the
// key (see ApplyWrite).
func (m *Mirror) applyChange(xid uint64, c *Change, rl *reloadState, own *WriteTicket) bool {
	sh, h := m.ix.shard(c.Key)
	sh.mu.Lock()
	if len(sh.negs) > 0 {
		delete(sh.negs, c.Key) // the key changed: a remembered absence is over
	}
	e := sh.get(c.Key, h)
	if mark := sh.echoMarkOf(e); mark.xid != 0 {
		switch {
		case own == nil:
			// Until the echo of this sidecar's own write arrives, changes of
			// other transactions committed before it. The echo's own changes
			// are the write itself (or older steps of it): already applied.
			if xid == mark.xid && echoComplete(e, c) {
				sh.clearEcho(e)
				if e.deleted() && rl == nil {
					sh.remove(m.ix, e, h)
					m.tombs.Add(-1)
				}
			}
			sh.mu.Unlock()
			m.stats.skipped.Add(1)
			return true
		case mark.xid != xid && mark.seq > own.begun:
			// Another write of this sidecar applied its state while this
			// one was in flight, and its echo has not come: either may
			// have committed last. Its echo guard stays, so the stream
			// settles it: this change is applied when it arrives after
			// the other's echo, and skipped when it arrives before.
			sh.mu.Unlock()
			m.stats.contested.Add(1)
			return false
		}
	}
	if e != nil && rl != nil && e.owned == rl.epoch && rl.sees(xid) {
		// The key holds a reload's snapshot state, and this change is
		// included in that snapshot: it is older than what we serve.
		sh.mu.Unlock()
		m.stats.skipped.Add(1)
		return true
	}
	switch c.Op {
	case OpDelete:
		existed := e != nil && !e.deleted()
		rl.markFresh(m.deleteLocked(sh, h, c.Key, e, xid, c.Version, rl, own != nil))
		sh.mu.Unlock()
		m.stats.applied[opIndex(OpDelete)].Add(1)
		if existed {
			m.changed(c.Key, EventDel, c.Origin)
		}
		return true
	case OpSet, OpFetch:
		event := EventSet
		if e != nil && !e.deleted() && c.Op == OpSet && e.expires() != c.Expires && m.sameValue(c.Key, e, c.Value) {
			event = EventExpire
		}
		ne := m.setLocked(sh, h, c.Key, e, state{version: c.Version, expires: c.Expires, xid: xid, value: c.Value, hasValue: c.Op == OpSet}, own != nil)
		rl.markFresh(ne)
		sh.mu.Unlock()
		m.changed(c.Key, event, c.Origin)
	default:
		sh.mu.Unlock()
	}
	m.stats.applied[opIndex(c.Op)].Add(1)
	if c.Op == OpFetch {
		select {
		case m.prefetchCh <- c.Key:
		default: // reads fetch on demand
		}
	}
	return true
}

// echoComplete reports whether c, a change of the transaction e is waiting
// for, is the last of it for this key: the state ApplyWrite applied.
func echoComplete(e *entry, c *Change) bool {
	if c.Op == OpDelete {
		return e.deleted()
	}
	return !e.deleted() && c.Version == e.version
}

// Key events, named as Redis names them in keyspace notifications.
const (
	EventSet     = "set"
	EventDel     = "del"
	EventExpire  = "expire"
	EventExpired = "expired"
)

// sameValue reports whether the value of e's state is value (so a change
// that keeps it only moved the expiry); false when the mirror does not hold
// that value.
func (m *Mirror) sameValue(key string, e *entry, value []byte) bool {
	if e.inline() {
		return bytes.Equal(e.value(), value)
	}
	d := e.digest()
	it, ok := m.values.Get(key)
	return ok && it.digest == d && d != 0 && bytes.Equal(it.data, value)
}

// state is a key's new state as a change or a row describes it.
type state struct {
	version, expires int64
	xid              uint64
	value            []byte
	hasValue         bool
}

// cachedValue reports whether e's value may be in the value cache (its
// value is neither inline nor absent by deletion).
func cachedValue(e *entry) bool {
	return e != nil && e.meta.Load()&(flagInline|flagDeleted) == 0
}

// fitsInline reports whether the value (n bytes) of state st of key,
// replacing entry old (nil if none), is kept in the index: it is small, and
// the index stays within its part of the budget (or does not grow).
func (m *Mirror) fitsInline(key string, st *state, n int, old *entry) bool {
	if n > m.opts.InlineLimit {
		return false
	}
	size := entryHeader + len(key) + n
	if st.xid != 0 {
		size += 8
	}
	if st.expires != NoExpiry {
		size += 8
	}
	grow := int64(allocSize((size + 7) &^ 7))
	if old != nil {
		grow -= old.allocBytes()
	}
	return grow <= 0 || m.ix.bytes()+grow <= m.inlineBudget
}

// newInline returns an entry of key in state st holding its value inline.
func newInline(key string, st *state) *entry {
	e := newEntry(key, st.version, st.expires, st.xid, len(st.value), flagInline)
	copy(e.rest(len(key) + len(st.value))[len(key):], st.value)
	e.size = uint32(len(st.value))
	return e
}

// setLocked installs st for key (whose hash is h), replacing e (which may be
// nil or a tombstone); sh.mu is held. It returns the new entry. A small
// value goes into the entry; a larger one (or one the index has no room
// for) into the value cache.
func (m *Mirror) setLocked(sh *shard, h uint64, key string, e *entry, st state, own bool) *entry {
	inline := st.hasValue && m.fitsInline(key, &st, len(st.value), e)
	var ne *entry
	if inline {
		ne = newInline(key, &st)
	} else {
		ne = newEntry(key, st.version, st.expires, st.xid, digestLen, 0)
		ne.size = uint32(len(st.value))
	}
	wasCached := cachedValue(e)
	if e != nil {
		ne.seen = e.seen
		if e.deleted() {
			m.tombs.Add(-1)
		} else {
			m.entries.Add(-1)
		}
	}
	ne.meta.Or(fineStamp(m.clock.dbNow() / 1e6)) // a new state resets the idle time
	sh.put(m.ix, h, ne)
	m.entries.Add(1)
	if own {
		sh.setEcho(ne, st.xid, m.ownSeq) // own applies hold applyMu
	}
	switch {
	case st.hasValue && !inline:
		d := RowHash(key, st.version, st.expires, st.value)
		ne.setDigest(d)
		m.storeValue(key, d, bytes.Clone(st.value))
	case wasCached:
		m.values.Del(key) // the old state's value, no longer reachable
	}
	if !inline {
		m.makeRoom(sh)
	}
	return ne
}

// makeRoom moves values held in sh's entries to the value cache while the
// index is over its part of the budget: a key must stay in the index, its
// value need not. A clock hand walks the shard's slots from where it last
// stopped, so the values moved are an arbitrary sample, and the value
// cache's policy decides which of them stay. sh.mu is held for writing.
func (m *Mirror) makeRoom(sh *shard) {
	const maxMoved, maxScanned = 4, 64
	t := &sh.t
	for scanned, moved := 0, 0; scanned < maxScanned && moved < maxMoved && t.n > 0 && m.ix.bytes() > m.inlineBudget; scanned++ {
		if sh.hand++; sh.hand >= len(t.slots) {
			sh.hand = 0
		}
		if e := t.slots[sh.hand]; t.tags[sh.hand] != 0 && e.inline() {
			m.evictInline(sh, e)
			moved++
		}
	}
}

// evictInline replaces inline entry e by one whose value is in the value
// cache; sh.mu is held for writing.
func (m *Mirror) evictInline(sh *shard, e *entry) {
	key, value := e.key(), e.value()
	ne := newEntry(key, e.version, e.expires(), e.xid(), digestLen, 0)
	ne.size, ne.owned, ne.seen = e.size, e.owned, e.seen
	ne.meta.Or(e.meta.Load() & (flagEcho | flagAccessed | flagExpiredSent | stampMask))
	d := RowHash(key, e.version, e.expires(), value)
	ne.setDigest(d)
	sh.put(m.ix, keyHash(key), ne)
	m.storeValue(ne.key(), d, bytes.Clone(value))
	m.stats.inlineEvicted.Add(1)
}

// installValue gives e, a present entry whose value is not inline, the
// value of its state (digest d): in the index if it fits there now, else in
// the value cache (retain: the value may be kept as is, not copied). sh.mu
// is held for writing. It returns the entry now in the index.
func (m *Mirror) installValue(sh *shard, h uint64, e *entry, value []byte, d uint64, retain bool) *entry {
	key := e.key()
	st := state{version: e.version, expires: e.expires(), xid: e.xid(), value: value, hasValue: true}
	if m.fitsInline(key, &st, len(value), e) {
		old := e.digest()
		ne := newInline(key, &st)
		ne.owned, ne.seen = e.owned, e.seen
		ne.meta.Or(e.meta.Load() & (flagEcho | flagAccessed | flagExpiredSent | stampMask))
		sh.put(m.ix, h, ne)
		if old != 0 {
			m.values.Del(ne.key())
		}
		return ne
	}
	e.setDigest(d)
	e.size = uint32(len(value))
	if !retain {
		value = bytes.Clone(value)
	}
	m.storeValue(key, d, value)
	return e
}

// deleteLocked removes key (whose hash is h). While a reload is in flight
// it leaves a tombstone, so the reload's snapshot cannot bring the key
// back; after this sidecar's own delete it leaves one until the echo
// arrives, so older notifications cannot bring it back either. It returns
// the tombstone, or nil.
func (m *Mirror) deleteLocked(sh *shard, h uint64, key string, e *entry, xid uint64, version int64, rl *reloadState, own bool) *entry {
	if cachedValue(e) {
		m.values.Del(key)
	}
	if e != nil && !e.deleted() {
		m.entries.Add(-1)
	}
	if rl == nil && !own {
		if e != nil {
			if e.deleted() {
				m.tombs.Add(-1)
			}
			sh.remove(m.ix, e, h)
		}
		return nil
	}
	if e == nil || !e.deleted() {
		m.tombs.Add(1)
	}
	ne := newEntry(key, version, NoExpiry, xid, 0, flagDeleted)
	if e != nil {
		ne.seen = e.seen
	}
	sh.put(m.ix, h, ne)
	if own {
		sh.setEcho(ne, xid, m.ownSeq) // own applies hold applyMu
	}
	return ne
}

// applyTruncate deletes every key (applyMu held).
func (m *Mirror) applyTruncate(xid uint64, rl *reloadState) {
	m.deleteAll(xid, rl, nil)
	m.stats.applied[opIndex(OpTruncate)].Add(1)
}

// applyFlush deletes the keys a flush deleted (applyMu held): those under
// its prefix, but for those under one of its Keep prefixes.
func (m *Mirror) applyFlush(xid uint64, c *Change, rl *reloadState) {
	m.deleteAll(xid, rl, func(key string) bool { return Flushes(c, key) })
	m.stats.applied[opIndex(OpFlush)].Add(1)
	if rl != nil && !rl.sees(xid) {
		// The reload's snapshot may hold rows the flush deleted that the
		// index does not hold yet, so left no tombstone: load again.
		m.resync(repairPrefix + "a flush committed during a reload")
	}
}

// Flushes reports whether the flush c deletes key.
func Flushes(c *Change, key string) bool {
	if !strings.HasPrefix(key, c.Key) {
		return false
	}
	for _, p := range c.Keep {
		if strings.HasPrefix(key, p) {
			return false
		}
	}
	return true
}

// deleteAll deletes every key, or those match accepts (applyMu held).
func (m *Mirror) deleteAll(xid uint64, rl *reloadState, match func(string) bool) {
	var all []*entry
	for i := range m.ix.shards {
		sh := &m.ix.shards[i]
		sh.mu.Lock()
		all = sh.entries(all[:0])
		for _, e := range all {
			if echo := sh.echoOf(e); echo != 0 && echo != xid || rl != nil && e.owned == rl.epoch && rl.sees(xid) {
				continue // newer than the truncate, as in applyChange
			}
			key := e.key()
			if match != nil && !match(key) {
				continue
			}
			if e.deleted() {
				if rl == nil {
					sh.remove(m.ix, e, keyHash(key))
					m.tombs.Add(-1)
				}
				continue
			}
			rl.markFresh(m.deleteLocked(sh, keyHash(key), key, e, xid, e.version, rl, false))
			m.changed(key, EventDel, 0)
		}
		sh.mu.Unlock()
	}
}

// valueCost is what a value of n bytes costs the value cache: its
// allocation, and about 190 bytes of ristretto's per item (its store and
// policy maps, and our valueItem; measured with ristretto v2.4).
func valueCost(n int) int64 { return int64(allocSize(n) + valueItemOverhead) }

// storeValue puts a value into the cache. A Set of a new key is
// asynchronous and may be dropped; the index decides what is current, and a
// missing value is fetched again.
func (m *Mirror) storeValue(key string, digest uint64, data []byte) {
	m.valueSets.Add(1)
	if !m.values.Set(key, &valueItem{digest: digest, data: data}, valueCost(len(data))) {
		m.stats.setsDropped.Add(1)
	}
}

// sentinelWait is a sentinel this sidecar sent and waits for.
type sentinelWait struct {
	arrived  chan struct{}
	onArrive func() // runs under applyMu as the sentinel is applied; may be nil
}

// sentinelArrived is called under applyMu.
func (m *Mirror) sentinelArrived(token string) {
	m.sentinelMu.Lock()
	w, ok := m.sentinels[token]
	if ok {
		delete(m.sentinels, token)
	}
	m.sentinelMu.Unlock()
	if ok {
		if w.onArrive != nil {
			w.onArrive()
		}
		close(w.arrived)
	}
}

// expectSentinel registers token before it is sent.
func (m *Mirror) expectSentinel(token string, onArrive func()) <-chan struct{} {
	w := &sentinelWait{arrived: make(chan struct{}), onArrive: onArrive}
	m.sentinelMu.Lock()
	m.sentinels[token] = w
	m.sentinelMu.Unlock()
	return w.arrived
}

func (m *Mirror) forgetSentinel(token string) {
	m.sentinelMu.Lock()
	delete(m.sentinels, token)
	m.sentinelMu.Unlock()
}

// lockView takes the view exclusively to apply changes; ViewSeq is odd
// until unlockView.
func (m *Mirror) lockView() {
	m.view.Lock()
	m.viewSeq.Add(1)
}

func (m *Mirror) unlockView() {
	m.viewSeq.Add(1)
	m.view.Unlock()
}

// ViewSeq counts the changes applied to the mirror as a whole (a batch, a
// write): odd while one is being applied. Reads of several keys that see
// the same even number before and after them read one consistent state, a
// transaction never half applied (a seqlock: MULTI/EXEC's reads).
func (m *Mirror) ViewSeq() uint64 { return m.viewSeq.Load() }
