package mirror

import (
	"bytes"
	"context"
	"math"
	"sync"
	"time"
)

// Lookup is what the index says of a key at one moment.
type Lookup struct {
	Found bool
	// Absent is set when the key is known to have no row for a while:
	// its loader found nothing (RememberAbsent).
	Absent  bool
	Version int64
	Expires int64 // epoch microseconds, or NoExpiry
	Size    int   // value length
	digest  uint64
	value   []byte // the value when the index holds it (non-nil then)
	stamp   uint32 // the access stamp (idle.go)
}

// lookup reads the index; expired and deleted keys are not found (but for
// --serve-stale). It never queries Postgres. touch marks a read access.
func (m *Mirror) lookup(key string, now int64, touch bool) Lookup {
	sh, h := m.ix.shard(key)
	sh.mu.RLock()
	e := sh.get(key, h)
	var l Lookup
	var expires int64
	if e != nil {
		expires = e.expires()
	}
	switch {
	case e == nil || e.deleted():
		if until, ok := sh.negs[key]; ok && until > now {
			l.Absent = true
		}
	case expires > now || m.servesStale(key, expires, now):
		l = Lookup{Found: true, Version: e.version, Expires: expires, Size: int(e.size)}
		if e.inline() {
			l.value = e.value()
		} else {
			l.digest = e.digest()
		}
		if touch {
			e.touch(fineStamp(now / 1e6))
		}
		l.stamp = e.meta.Load() & stampMask
	case m.handled() && e.meta.Load()&flagExpiredSent == 0 && e.meta.Or(flagExpiredSent)&flagExpiredSent == 0:
		// Queued under the shard's lock: before any later change of the key.
		m.emitChange(key, EventExpired, mergeExpired)
	}
	sh.mu.RUnlock()
	return l
}

// servesStale reports whether an expired value may still be served: within
// --serve-stale of its expiry, for a key whose loader refreshes it.
func (m *Mirror) servesStale(key string, expires, now int64) bool {
	return m.opts.ServeStale > 0 && now < expires+m.opts.ServeStale.Microseconds() &&
		m.opts.HasLoader != nil && m.opts.HasLoader(key)
}

// RememberAbsent records that key has no row and its loader found none, so
// reads answer "absent" without asking again until ttl passes or the key
// changes. Memory is bounded: when a shard holds too many, it forgets some.
func (m *Mirror) RememberAbsent(key string, ttl time.Duration) {
	until := m.clock.dbNow() + ttl.Microseconds()
	sh, h := m.ix.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.get(key, h); e != nil && !e.deleted() {
		return // it exists after all
	}
	if len(sh.negs) >= maxNegativePerShard {
		for k := range sh.negs { // forget an arbitrary one
			delete(sh.negs, k)
			break
		}
	}
	sh.negs[key] = until
}

// TakeAccessed returns the keys read since the last call, and clears their
// marks: what the access-time flush writes to last_accessed_at.
func (m *Mirror) TakeAccessed() []string {
	var keys []string
	for i := range m.ix.shards {
		sh := &m.ix.shards[i]
		sh.mu.RLock()
		sh.t.all(func(e *entry) bool {
			if e.meta.Load()&flagAccessed != 0 {
				e.meta.And(^flagAccessed)
				keys = append(keys, e.key())
			}
			return true
		})
		sh.mu.RUnlock()
	}
	return keys
}

// Exists reports whether key is present and unexpired, with its expiry.
func (m *Mirror) Exists(key string) (Lookup, error) {
	if err := m.readable(); err != nil {
		return Lookup{}, err
	}
	return m.lookup(key, m.clock.dbNow(), false), nil
}

// PTTL returns the time to live of key in milliseconds as Redis reports
// it: ok is false for a missing key, and ms is -1 for a key without expiry.
// It is computed in int64 milliseconds (saturating), so an expiry centuries
// away is reported as such (a time.Duration ends after 292 years).
func (m *Mirror) PTTL(key string) (ms int64, ok bool, err error) {
	l, err := m.Exists(key)
	if err != nil || !l.Found {
		return 0, false, err
	}
	if l.Expires == NoExpiry {
		return -1, true, nil
	}
	// Measured from the late end of the clock estimate, as expiry is.
	return max(subSaturating(l.Expires, m.clock.dbNow())/1000, 0), true, nil
}

// subSaturating returns a-b, or the int64 bound it would cross.
func subSaturating(a, b int64) int64 {
	d := a - b
	switch {
	case b < 0 && d < a:
		return math.MaxInt64
	case b > 0 && d > a:
		return math.MinInt64
	}
	return d
}

// StrLen returns the length of key's value, 0 for a missing key (STRLEN).
// The index knows the length of every value it has seen; a value that came
// as a fetch marker and was never fetched is fetched to measure it. It is
// an access, as in Redis (unless ctx is WithoutTouch).
func (m *Mirror) StrLen(ctx context.Context, key string) (int64, error) {
	if err := m.readable(); err != nil {
		return 0, err
	}
	l := m.lookup(key, m.clock.dbNow(), touches(ctx))
	if !l.Found {
		return 0, nil
	}
	if l.value != nil || l.digest != 0 {
		return int64(l.Size), nil
	}
	v, found, err := m.Get(ctx, key)
	if err != nil || !found {
		return 0, err
	}
	return int64(len(v)), nil
}

// Get returns key's value, or found == false. A hit never queries Postgres;
// a value the cache dropped is fetched again, once however many callers ask.
// The returned slice must not be modified.
func (m *Mirror) Get(ctx context.Context, key string) (value []byte, found bool, err error) {
	if err := m.readable(); err != nil {
		return nil, false, err
	}
	deadline := time.Now().Add(m.opts.CatchUpWait)
	touch := touches(ctx)
	for {
		l := m.lookup(key, m.clock.dbNow(), touch)
		if !l.Found {
			if !l.Absent && m.opts.Loader != nil && m.opts.Loader.Covers(key) {
				return m.load(ctx, key)
			}
			m.stats.misses.Add(1)
			return nil, false, nil
		}
		if v, ok := m.heldValue(key, l); ok {
			m.stats.hits.Add(1)
			return v, true, nil
		}
		v, ok, err := m.fetchValue(ctx, key, l)
		if err != nil {
			return nil, false, err
		}
		if ok {
			m.stats.hits.Add(1)
			return v, true, nil
		}
		// Postgres holds another state than the index: notifications are
		// on their way. Wait for the stream, then look again.
		if err := m.waitApplied(ctx, deadline); err != nil {
			return nil, false, err
		}
	}
}

// GetNow is Get for a caller that must not wait (the socket server's event
// loop): done is false, and nothing is counted, when the answer needs
// Postgres (a loader's key, a value the mirror no longer holds, a state
// the notifications have not caught up with); the caller then asks Get.
func (m *Mirror) GetNow(ctx context.Context, key string) (value []byte, found, done bool, err error) {
	if err := m.readable(); err != nil {
		return nil, false, true, err
	}
	switch v, hit, slow := m.readNow(key, m.lookup(key, m.clock.dbNow(), touches(ctx))); {
	case hit:
		m.stats.hits.Add(1)
		return v, true, true, nil
	case slow:
		return nil, false, false, nil
	}
	m.stats.misses.Add(1)
	return nil, false, true, nil
}

// readNow sorts a lookup of key: its value when the mirror holds it (hit);
// else slow when answering needs Postgres (a value to fetch again, or a
// loader's key); neither is a miss.
func (m *Mirror) readNow(key string, l Lookup) (v []byte, hit, slow bool) {
	if !l.Found {
		return nil, false, !l.Absent && m.opts.Loader != nil && m.opts.Loader.Covers(key)
	}
	v, hit = m.heldValue(key, l)
	return v, hit, !hit
}

// mgetParallel bounds the keys one GetMulti reads from Postgres at once
// (loaders, and values the cache dropped); the store's connection limit
// bounds them across all callers.
const mgetParallel = 8

// MGetSlack is what GetMulti may hold beyond one value of the largest size:
// with values of at most 1 MiB its reads run mgetParallel at a time, with
// 16 MiB ones one at a time, so a client's MGET never holds more than
// valueBound + MGetSlack of values it has not handed on.
const MGetSlack = 8 << 20

// GetMulti reads keys as Get does (MGET) and hands each value to emit in
// key order, nil for a missing key, as soon as every key before it has been
// handed on, so a caller that writes each out holds few of them. Hits are
// answered from the mirror; the keys that need Postgres (a loader, or a
// value to fetch again) are read up to mgetParallel at once while the reads
// in flight, each reserving valueBound (the largest value a read may
// return), and the values read but not yet handed on fit in
// valueBound + MGetSlack; at least one is always in flight. The first error
// stops the call: emit has been called for the keys before it.
func (m *Mirror) GetMulti(ctx context.Context, keys []string, valueBound int64, emit func(v []byte)) error {
	if err := m.readable(); err != nil {
		return err
	}
	hits, slow := m.lookupMulti(keys, touches(ctx))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	valueBound = max(valueBound, 1)
	pending := make(map[int]*slowRead, mgetParallel) // started, not handed on
	// room reports whether one more read fits: a read in flight counts as
	// valueBound, a finished one as its value's size.
	room := func() bool {
		if len(pending) == 0 {
			return true
		}
		if len(pending) >= mgetParallel {
			return false
		}
		cost := valueBound
		for _, r := range pending {
			select {
			case <-r.done:
				cost += int64(len(r.v))
			default:
				cost += valueBound
			}
		}
		return cost <= valueBound+MGetSlack
	}
	next := 0 // slow[:next] have been started
	startReads := func() {
		for next < len(slow) && room() {
			r := &slowRead{done: make(chan struct{})}
			i := slow[next]
			pending[i] = r
			next++
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(r.done)
				v, found, err := m.Get(ctx, keys[i])
				if found {
					r.v = v
				}
				r.err = err
			}()
		}
	}
	startReads()
	s := 0 // slow[:s] have been handed on
	for i := range keys {
		if s == len(slow) || slow[s] != i {
			emit(hits[i])
			hits[i] = nil
			continue
		}
		s++
		startReads() // every read before this one was handed on: this one fits
		r := pending[i]
		<-r.done
		if r.err != nil {
			return r.err
		}
		delete(pending, i)
		emit(r.v)
		startReads()
	}
	return nil
}

// GetMultiNow is GetMulti for a caller that must not wait (the socket
// server's event loop): it appends the value of each key to values (nil
// for a missing key) when the mirror holds them all and they add up to at
// most maxBytes. Otherwise done is false and nothing is counted: a key
// needs Postgres (a loader's key, a value to fetch again), the values are
// too large to send at once, or a change is being applied; the caller then
// asks GetMulti.
func (m *Mirror) GetMultiNow(ctx context.Context, keys []string, maxBytes int, values [][]byte) (_ [][]byte, done bool, err error) {
	if err := m.readable(); err != nil {
		return values, true, err
	}
	if !m.view.TryRLock() { // a batch is being applied: do not wait for it
		return values, false, nil
	}
	defer m.view.RUnlock()
	now := m.clock.dbNow()
	touch := touches(ctx)
	start, size, hits := len(values), 0, 0
	for _, k := range keys {
		switch v, hit, slow := m.readNow(k, m.lookup(k, now, touch)); {
		case hit:
			size += len(v)
			if size > maxBytes {
				clear(values[start:]) // no reference kept in the caller's scratch
				return values[:start], false, nil
			}
			values = append(values, v)
			hits++
		case slow:
			clear(values[start:])
			return values[:start], false, nil
		default:
			values = append(values, nil)
		}
	}
	m.stats.hits.Add(int64(hits))
	m.stats.misses.Add(int64(len(keys) - hits))
	return values, true, nil
}

// slowRead is one of GetMulti's reads from Postgres.
type slowRead struct {
	v    []byte
	err  error
	done chan struct{} // closed when v and err are set
}

// lookupMulti answers what it can of keys from the mirror (touch: the
// reads count as accesses): hits holds the
// values the mirror holds (nil for a miss and for a key in slow), slow
// lists, in order, the indexes of the keys that need Postgres (a value to
// fetch again, or a loader).
func (m *Mirror) lookupMulti(keys []string, touch bool) (hits [][]byte, slow []int) {
	m.view.RLock()
	defer m.view.RUnlock()
	now := m.clock.dbNow()
	hits = make([][]byte, len(keys))
	for i, k := range keys {
		switch v, hit, isSlow := m.readNow(k, m.lookup(k, now, touch)); {
		case hit:
			m.stats.hits.Add(1)
			hits[i] = v
		case isSlow:
			slow = append(slow, i)
		default:
			m.stats.misses.Add(1)
		}
	}
	return hits, slow
}

// heldValue returns the value of the state l found, if the mirror holds
// it: in the index, or in the value cache under the state's digest.
func (m *Mirror) heldValue(key string, l Lookup) ([]byte, bool) {
	if l.value != nil {
		return l.value, true
	}
	if it, ok := m.values.Get(key); ok && l.digest != 0 && it.digest == l.digest {
		return it.data, true
	}
	return nil, false
}

// load computes an absent key with its loader: once however many readers
// ask at once here, and once across sidecars (the loader's key lock).
func (m *Mirror) load(ctx context.Context, key string) ([]byte, bool, error) {
	type result struct {
		value []byte
		found bool
	}
	r, err, _ := m.fetch.Do("\x00load:"+key, func() (any, error) {
		v, found, err := m.opts.Loader.Load(ctx, m, key)
		if err == nil && !found {
			m.RememberAbsent(key, m.opts.NegativeTTL)
		}
		return result{v, found}, err
	})
	m.stats.loads.Add(1)
	if err != nil {
		return nil, false, err
	}
	res := r.(result)
	if !res.found {
		m.stats.misses.Add(1)
	}
	return res.value, res.found, nil
}

// fetchValue reads key's row from Postgres and installs its value when the
// row is the state the index holds (same version); ok is false when the
// row is another state, which the stream has not delivered yet.
func (m *Mirror) fetchValue(ctx context.Context, key string, l Lookup) ([]byte, bool, error) {
	type result struct {
		value []byte
		ok    bool
	}
	r, err, _ := m.fetch.Do(key, func() (any, error) {
		rows, err := m.fetchRows(ctx, []string{key})
		if err != nil {
			return result{}, err
		}
		for _, row := range rows {
			if v, ok := m.installFetched(row); ok {
				return result{v, true}, nil
			}
		}
		return result{}, nil
	})
	if err != nil {
		return nil, false, err
	}
	res := r.(result)
	return res.value, res.ok, nil
}

func (m *Mirror) fetchRows(ctx context.Context, keys []string) ([]Row, error) {
	m.stats.fetches.Add(1)
	m.stats.fetchedKeys.Add(int64(len(keys)))
	rows, err := m.src.Fetch(ctx, keys)
	if h := m.opts.Hooks.AfterFetch; h != nil {
		h(keys)
	}
	return rows, err
}

// installFetched stores a fetched row's value if the index holds exactly
// that state. A fetched row never changes the index: only the stream,
// reloads and this sidecar's writes do, so fetches cannot reorder states.
func (m *Mirror) installFetched(r Row) ([]byte, bool) {
	sh, h := m.ix.shard(r.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.get(r.Key, h)
	if e == nil || e.deleted() || e.version != r.Version || e.expires() != r.Expires {
		return nil, false
	}
	if e.inline() { // the index holds this state's value already
		if v := e.value(); bytes.Equal(v, r.Value) {
			return v, true
		}
		return nil, false // same version, other bytes: written with triggers disabled; a reload corrects it
	}
	d := RowHash(r.Key, r.Version, r.Expires, r.Value)
	if ed := e.digest(); ed != 0 && ed != d {
		return nil, false // as above
	}
	m.installValue(sh, h, e, r.Value, d, true)
	return r.Value, true
}

// waitApplied waits until the stream applies another batch, or the deadline.
func (m *Mirror) waitApplied(ctx context.Context, deadline time.Time) error {
	wait := time.Until(deadline)
	if wait <= 0 {
		return ErrCatchingUp
	}
	t := time.NewTimer(min(wait, 50*time.Millisecond))
	defer t.Stop()
	select {
	case <-m.appliedSignal():
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// prefetchLoop fetches, in batches, the values of keys whose notification
// carried a fetch marker instead of the value, so reads find them cached.
func (m *Mirror) prefetchLoop(ctx context.Context) {
	batch := make([]string, 0, prefetchBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case k := <-m.prefetchCh:
			batch = append(batch[:0], k)
		}
	drain:
		for len(batch) < prefetchBatch {
			select {
			case k := <-m.prefetchCh:
				batch = append(batch, k)
			default:
				break drain
			}
		}
		rows, err := m.fetchRows(ctx, batch)
		if err != nil {
			if ctx.Err() == nil {
				m.log.Debug("prefetch failed; reads will fetch on demand", "keys", len(batch), "error", err)
			}
			continue
		}
		for _, r := range rows {
			m.installFetched(r)
		}
	}
}

// Range calls fn for every present, unexpired key until fn returns false.
// Keys are visited shard by shard, without a consistent cut.
func (m *Mirror) Range(fn func(key string, l Lookup) bool) {
	now := m.clock.dbNow()
	for i := range m.ix.shards {
		sh := &m.ix.shards[i]
		sh.mu.RLock()
		keys := make([]string, 0, sh.t.n)
		sh.t.all(func(e *entry) bool {
			if !e.deleted() && e.expires() > now {
				keys = append(keys, e.key())
			}
			return true
		})
		sh.mu.RUnlock()
		for _, k := range keys {
			if l := m.lookup(k, now, false); l.Found && !fn(k, l) {
				return
			}
		}
	}
}

// EvictValue drops key's value from the value cache, as its eviction policy
// may at any time; the next read fetches it again. For tests and tools.
func (m *Mirror) EvictValue(key string) {
	m.values.Del(key)
	m.values.Wait()
}
