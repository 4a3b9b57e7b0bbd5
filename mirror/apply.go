package mirror

import (
	"bytes"
	"slices"
)

// Apply applies one notification's changes. Batches must be applied in the
// order they arrive, which is commit order: that order, never the version
// numbers, decides which state of a key is newest.
func (m *Mirror) Apply(b Batch) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	rl := m.reload.Load()
	for i := range b.Changes {
		c := &b.Changes[i]
		switch c.Op {
		case OpSentinel:
			m.sentinelArrived(c.Token)
		case OpLoaders:
			if m.opts.OnLoadersChanged != nil {
				m.opts.OnLoadersChanged()
			}
		case OpTruncate:
			m.applyTruncate(b.Xid, rl)
		default:
			m.applyChange(b.Xid, c, rl, false)
		}
	}
	for t := range m.tickets {
		t.seen = append(t.seen, b.Xid)
	}
	m.stats.batches.Add(1)
	// A value set of a new key is buffered in ristretto; wait for it, so a
	// read right after the change finds the value instead of querying.
	m.values.Wait()
	m.signalApplied()
}

// WriteTicket is held by a writer while its transaction is in flight: the
// stream records in it the transactions it applies meanwhile, so that
// ApplyWrite knows whether the transaction's own notification (its echo)
// arrived before the writer learned that it committed.
type WriteTicket struct {
	seen []uint64 // xids of the batches applied since BeginWrite, in order
}

// BeginWrite is called before a write transaction is sent.
func (m *Mirror) BeginWrite() *WriteTicket {
	t := &WriteTicket{}
	m.applyMu.Lock()
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
func (m *Mirror) ApplyWrite(t *WriteTicket, xid uint64, changes []Change) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	delete(m.tickets, t)
	echo := slices.Index(t.seen, xid)
	if echo >= 0 && slices.ContainsFunc(t.seen[echo:], func(x uint64) bool { return x != xid }) {
		return // the stream is past the echo: everything is applied
	}
	rl := m.reload.Load()
	for i := range changes {
		c := &changes[i]
		if echo >= 0 && m.appliedBy(c, xid) {
			continue // this part of the echo arrived; another may still be on its way
		}
		m.applyChange(xid, c, rl, true)
	}
	m.values.Wait()
	m.signalApplied()
}

// appliedBy reports whether the index already holds what transaction xid
// did to c's key.
func (m *Mirror) appliedBy(c *Change, xid uint64) bool {
	sh := m.ix.shard(c.Key)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	e := sh.m[c.Key]
	if c.Op == OpDelete {
		return e == nil || e.deleted || e.xid == xid
	}
	return e != nil && e.xid == xid
}

// applyChange applies one change of transaction xid to its key.
func (m *Mirror) applyChange(xid uint64, c *Change, rl *reloadState, own bool) {
	sh := m.ix.shard(c.Key)
	sh.mu.Lock()
	delete(sh.negs, c.Key) // the key changed: a remembered absence is over
	e := sh.m[c.Key]
	if e != nil && !own && e.echo != 0 {
		// Until the echo of this sidecar's own write arrives, changes of
		// other transactions committed before it. The echo's own changes
		// are the write itself (or older steps of it): already applied.
		if xid == e.echo && echoComplete(e, c) {
			e.echo = 0
			if e.deleted && rl == nil {
				delete(sh.m, c.Key)
				m.tombs.Add(-1)
			}
		}
		sh.mu.Unlock()
		m.stats.skipped.Add(1)
		return
	}
	if e != nil && rl != nil && e.owned == rl.epoch && rl.sees(xid) {
		// The key holds a reload's snapshot state, and this change is
		// included in that snapshot: it is older than what we serve.
		sh.mu.Unlock()
		m.stats.skipped.Add(1)
		return
	}
	switch c.Op {
	case OpDelete:
		existed := e != nil && !e.deleted
		m.deleteLocked(sh, c.Key, e, xid, c.Version, rl, own)
		sh.mu.Unlock()
		m.values.Del(c.Key)
		m.stats.applied[opIndex(OpDelete)].Add(1)
		if existed {
			m.keyEvent(c.Key, EventDel)
		}
		return
	case OpSet, OpFetch:
		event := EventSet
		if e != nil && !e.deleted && c.Op == OpSet && e.expires != c.Expires && m.sameValue(c.Key, e, c.Value) {
			event = EventExpire
		}
		m.setLocked(sh, c.Key, e, state{version: c.Version, expires: c.Expires, xid: xid, value: c.Value, hasValue: c.Op == OpSet}, own)
		sh.mu.Unlock()
		m.keyEvent(c.Key, event)
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
}

// echoComplete reports whether c, a change of the transaction e is waiting
// for, is the last of it for this key: the state ApplyWrite applied.
func echoComplete(e *entry, c *Change) bool {
	if c.Op == OpDelete {
		return e.deleted
	}
	return !e.deleted && c.Version == e.version
}

// Key events, named as Redis names them in keyspace notifications.
const (
	EventSet     = "set"
	EventDel     = "del"
	EventExpire  = "expire"
	EventExpired = "expired"
)

// keyEvent reports a change of key to OnKeyEvent.
func (m *Mirror) keyEvent(key, event string) {
	if m.opts.OnKeyEvent != nil {
		m.opts.OnKeyEvent(key, event)
	}
}

// sameValue reports whether the cached value of e is value (so a change
// that keeps it only moved the expiry).
func (m *Mirror) sameValue(key string, e *entry, value []byte) bool {
	it, ok := m.values.Get(key)
	return ok && it.digest == e.digest && e.digest != 0 && bytes.Equal(it.data, value)
}

// state is a key's new state as a change or a row describes it.
type state struct {
	version, expires int64
	xid              uint64
	value            []byte
	hasValue         bool
}

// setLocked installs st for key, replacing e (which may be nil or a
// tombstone); sh.mu is held. It returns the new entry.
func (m *Mirror) setLocked(sh *shard, key string, e *entry, st state, own bool) *entry {
	ne := &entry{
		version: st.version,
		expires: st.expires,
		xid:     st.xid,
		size:    len(st.value),
	}
	if st.hasValue {
		ne.digest = RowHash(key, st.version, st.expires, st.value)
	}
	if own {
		ne.echo = st.xid
	}
	if e != nil {
		ne.seen = e.seen
		if e.deleted {
			m.tombs.Add(-1)
		} else {
			m.entries.Add(-1)
			m.keyBytes.Add(-int64(len(key)))
		}
	}
	sh.m[key] = ne
	m.entries.Add(1)
	m.keyBytes.Add(int64(len(key)))
	if st.hasValue {
		data := make([]byte, len(st.value))
		copy(data, st.value)
		m.storeValue(key, ne.digest, data)
	}
	return ne
}

// deleteLocked removes key. While a reload is in flight it leaves a
// tombstone, so the reload's snapshot cannot bring the key back; after this
// sidecar's own delete it leaves one until the echo arrives, so older
// notifications cannot bring it back either.
func (m *Mirror) deleteLocked(sh *shard, key string, e *entry, xid uint64, version int64, rl *reloadState, own bool) {
	if e != nil && !e.deleted {
		m.entries.Add(-1)
		m.keyBytes.Add(-int64(len(key)))
	}
	if rl == nil && !own {
		if e != nil {
			if e.deleted {
				m.tombs.Add(-1)
			}
			delete(sh.m, key)
		}
		return
	}
	if e == nil || !e.deleted {
		m.tombs.Add(1)
	}
	seen := uint32(0)
	if e != nil {
		seen = e.seen
	}
	ne := &entry{version: version, xid: xid, deleted: true, seen: seen}
	if own {
		ne.echo = xid
	}
	sh.m[key] = ne
}

// applyTruncate deletes every key.
func (m *Mirror) applyTruncate(xid uint64, rl *reloadState) {
	var deleted []string
	defer func() {
		for _, k := range deleted {
			m.keyEvent(k, EventDel)
		}
	}()
	for i := range m.ix.shards {
		sh := &m.ix.shards[i]
		sh.mu.Lock()
		for key, e := range sh.m {
			if e.echo != 0 && e.echo != xid || rl != nil && e.owned == rl.epoch && rl.sees(xid) {
				continue // newer than the truncate, as in applyChange
			}
			if e.deleted {
				if rl == nil {
					delete(sh.m, key)
					m.tombs.Add(-1)
				}
				continue
			}
			m.deleteLocked(sh, key, e, xid, e.version, rl, false)
			m.values.Del(key)
			deleted = append(deleted, key)
		}
		sh.mu.Unlock()
	}
	m.stats.applied[opIndex(OpTruncate)].Add(1)
}

// storeValue puts a value into the cache. A Set of a new key is
// asynchronous and may be dropped; the index decides what is current, and a
// missing value is fetched again.
func (m *Mirror) storeValue(key string, digest uint64, data []byte) {
	if !m.values.Set(key, &valueItem{digest: digest, data: data}, int64(len(data)+len(key)+valueItemOverhead)) {
		m.stats.setsDropped.Add(1)
	}
}

func (m *Mirror) sentinelArrived(token string) {
	m.sentinelMu.Lock()
	ch, ok := m.sentinels[token]
	if ok {
		delete(m.sentinels, token)
	}
	m.sentinelMu.Unlock()
	if ok {
		close(ch)
	}
}

// expectSentinel registers token before it is sent.
func (m *Mirror) expectSentinel(token string) <-chan struct{} {
	ch := make(chan struct{})
	m.sentinelMu.Lock()
	m.sentinels[token] = ch
	m.sentinelMu.Unlock()
	return ch
}

func (m *Mirror) forgetSentinel(token string) {
	m.sentinelMu.Lock()
	delete(m.sentinels, token)
	m.sentinelMu.Unlock()
}
