package mirror

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// reloadState is the reload in flight. While it exists, deletes leave
// tombstones; once its snapshot's visibility is known, keys it installed
// (owned == epoch) skip the notifications that snapshot already includes.
type reloadState struct {
	epoch uint32
	vis   atomic.Pointer[Visibility]
	gen   uint64 // its generation of the replay guard
	// fresh is set once the sentinel arrived, just before horizon is read:
	// a change applied from then on marks its entry (owned = epoch|ownedFresh),
	// since it may legitimately carry a transaction id at or above horizon.
	fresh atomic.Bool
	// forgedDropped counts the entries corrected because forged.
	forgedDropped atomic.Int64
	// horizon is the server's next transaction id, read after the sentinel
	// arrived: every transaction delivered before then has a lower id, so
	// an unmarked entry whose id is not lower was forged (0: not read yet).
	horizon atomic.Uint64
}

// ownedFresh marks, in entry.owned, an entry a change made after the
// reload of that epoch read its horizon.
const ownedFresh = 1 << 31

// sees reports whether the reload's snapshot includes transaction xid.
func (rl *reloadState) sees(xid uint64) bool {
	v := rl.vis.Load()
	return v != nil && v.Sees(xid)
}

// forged reports whether e holds a change that claims a transaction id at
// or above the horizon although it was delivered before the horizon was
// read: no committed transaction has such an id, so a payload made it up.
// Such a change never wins over the snapshot.
func (rl *reloadState) forged(e *entry) bool {
	h := rl.horizon.Load()
	return h != 0 && e.xid() >= h && e.owned != rl.epoch|ownedFresh
}

// markFresh marks e, made by a change applied during rl, if rl has read
// its horizon (or is about to).
func (rl *reloadState) markFresh(e *entry) {
	if rl != nil && e != nil && rl.fresh.Load() {
		e.owned = rl.epoch | ownedFresh
	}
}

// errStreamReset means notifications were lost during the reload, so its
// result cannot be trusted; another reload follows.
var errStreamReset = errors.New("notification stream reset during the reload")

// ReloadResult describes one reload.
type ReloadResult struct {
	Ranges   int           // key ranges compared by checksum; 0 for a full reload
	Differed int           // ranges whose checksums differed, and were re-read
	Rows     int64         // rows read from the snapshot
	Drift    int64         // keys the reload had to correct
	Forged   int64         // of those, keys a forged change had set (see reloadState.forged)
	Duration time.Duration // from start to the end of the sweep
}

// Reload replaces the mirror's content with a consistent snapshot of the
// table, beside service: readers keep reading, the stream keeps applying,
// and what the stream or this sidecar's writes delivered that the snapshot
// does not include wins over the snapshot. Reloads run one at a time.
func (m *Mirror) Reload(ctx context.Context, reason string) (ReloadResult, error) {
	return m.reloadWith(ctx, reason, 0)
}

// ReloadRanges is a reload that reads only what differs: Postgres computes
// a checksum of each of n key ranges in the snapshot, the mirror compares
// them with its own once the sentinel arrived, and only the ranges that
// differ are read and reconciled as Reload would. n = 0 picks a count from
// the table's size.
func (m *Mirror) ReloadRanges(ctx context.Context, reason string, n int) (ReloadResult, error) {
	if n <= 0 {
		n = bucketCount(m.entries.Load())
	}
	return m.reloadWith(ctx, reason, n)
}

func (m *Mirror) reloadWith(ctx context.Context, reason string, ranges int) (ReloadResult, error) {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	r := &reloadRun{m: m, reason: reason, res: ReloadResult{Ranges: ranges}, start: time.Now(),
		streamEpoch: m.streamEpoch.Load(), rl: &reloadState{epoch: m.epoch.Add(1) &^ ownedFresh}, initial: !m.isLoaded()}
	r.log = m.reloadLogger.With("reason", reason, "epoch", r.rl.epoch)
	r.log.Debug("reload started")
	m.readKeyring(ctx)
	m.applyMu.Lock()
	r.rl.gen = m.replay.newGen() // before the snapshot is taken
	m.applyMu.Unlock()
	m.reload.Store(r.rl)

	r.estimate, _ = m.src.EstimateRows(ctx)
	if r.initial && r.estimate > 0 {
		m.ix.reserve(min(r.estimate, m.opts.MaxMemory/64))
	}
	r.progress, r.sets = time.Now(), m.valueSets.Load()
	var err error
	if ranges == 0 {
		err = m.src.Snapshot(ctx, r.visible(ctx), r.row)
	} else {
		r.picked = map[int]bool{}
		err = m.src.RangeSnapshot(ctx, ranges, r.visible(ctx), r.pick, r.row)
	}
	if err == nil && m.streamEpoch.Load() != r.streamEpoch {
		err = errStreamReset
	}
	if err != nil {
		m.abandonReload(r.rl)
		m.stats.reloadFailures.Add(1)
		r.res.Duration = time.Since(r.start)
		r.ended(err)
		return r.res, fmt.Errorf("reload (%s): %w", reason, err)
	}
	if h := m.opts.Hooks.BeforeMerge; h != nil {
		h()
	}
	r.finish()
	r.ended(nil)
	args := []any{"rows", r.res.Rows, "drift", r.res.Drift, "duration", r.res.Duration.Round(time.Millisecond), "entries", m.entries.Load()}
	if ranges > 0 {
		args = append(args, "ranges", ranges, "ranges_differed", r.res.Differed)
	}
	r.log.Info("reload done", args...)
	return r.res, nil
}

// reloadRun is one reload's progress (reloadWith).
type reloadRun struct {
	m           *Mirror
	rl          *reloadState
	reason      string
	res         ReloadResult
	start       time.Time
	streamEpoch uint64 // Mirror.streamEpoch at the start
	initial     bool   // the first load: nothing it installs is drift
	log         hclog.Logger
	estimate    int64        // the planner's estimate of the rows
	progress    time.Time    // when progress was last logged
	sets        int64        // Mirror.valueSets when the value cache last settled
	picked      map[int]bool // ranges re-read; nil for a full reload
}

// visible runs once the snapshot is taken, before any of its rows is
// merged: it waits until the stream has delivered everything the snapshot
// sees, then reads the horizon, so that rows are merged knowing which
// changes delivered so far were forged.
func (r *reloadRun) visible(ctx context.Context) func(Visibility) error {
	m, rl := r.m, r.rl
	return func(v Visibility) error {
		rl.vis.Store(&v)
		if h := m.opts.Hooks.AfterSnapshotVisible; h != nil {
			h()
		}
		if err := m.awaitSentinel(ctx, func() { m.replay.switchTo(&v, rl.gen); m.dropLost.Store(m.replay.lost) }); err != nil {
			return err
		}
		rl.fresh.Store(true)
		next, err := m.src.NextXid(ctx)
		if err != nil {
			return fmt.Errorf("read the next transaction id: %w", err)
		}
		rl.horizon.Store(next)
		return nil
	}
}

// pick chooses the ranges to read: the sentinel arrived (visible waited for
// it), so the mirror holds every change the snapshot includes, and what
// differs now needs reading.
func (r *reloadRun) pick(sums []BucketSum) ([]int, error) {
	local := r.m.localSums(r.res.Ranges)
	var differ []int
	for b := range sums {
		if sums[b] != local[b] {
			differ = append(differ, b)
			r.picked[b] = true
		}
	}
	r.res.Differed = len(differ)
	return differ, nil
}

// row merges one row of the snapshot.
func (r *reloadRun) row(row Row) error {
	m := r.m
	r.res.Rows++
	if m.mergeRow(r.rl, row, !r.initial) && !r.initial {
		r.res.Drift++
	}
	if r.res.Rows%4096 != 0 {
		return nil
	}
	if r.initial && m.valueSets.Load() != r.sets {
		m.values.Wait() // let the value cache absorb the load instead of dropping sets
		r.sets = m.valueSets.Load()
	}
	if r.res.Rows%65536 == 0 {
		m.updateBudget()
		m.tuneGC() // as the index grows
	}
	if time.Since(r.progress) >= reloadProgressLogging {
		r.progress = time.Now()
		logProgress(r.log, r.res.Rows, r.estimate, time.Since(r.start))
	}
	return nil
}

// finish ends a reload whose rows were all merged: keys the snapshot lacks
// go, and the mirror is loaded.
func (r *reloadRun) finish() {
	m, rl := r.m, r.rl
	swept := m.sweep(rl, r.res.Ranges, r.picked)
	if !r.initial {
		r.res.Drift += swept
	}
	m.reload.CompareAndSwap(rl, nil)
	m.values.Wait()
	m.updateBudget()
	m.tuneGC()
	r.res.Duration = time.Since(r.start)
	r.res.Forged = rl.forgedDropped.Load()
	m.finishReload(r.res)
	m.reloadTook(r.res.Duration)
	if r.res.Forged > 0 {
		r.log.Warn("reload replaced keys set by notifications that claimed a transaction id no transaction has (forged): "+
			"the table's state wins", "keys", r.res.Forged, "horizon", rl.horizon.Load())
	}
}

// ended tells the handlers of the reload's end (err nil: it succeeded):
// a flush if it corrected keys, then, after a success, that the loaders
// may have changed (their notifications may have been lost too).
func (r *reloadRun) ended(err error) {
	m := r.m
	if r.res.Drift > 0 {
		m.emit(Event{Kind: KindFlush, Flush: FlushDrift, Reason: r.reason})
	}
	if err == nil {
		m.emit(Event{Kind: KindLoaders})
	}
	m.emit(Event{Kind: KindReload, Reason: r.reason, Reload: r.res, Err: err})
}

// logProgress reports a long load: rows so far, rate and time left (from
// the planner's estimate, when there is one).
func logProgress(log hclog.Logger, rows, estimate int64, elapsed time.Duration) {
	rate := float64(rows) / elapsed.Seconds()
	args := []any{"rows", rows, "rows_per_sec", int64(rate)}
	if estimate > rows && rate > 0 {
		left := time.Duration(float64(estimate-rows) / rate * float64(time.Second))
		args = append(args, "estimated_rows", estimate, "time_left", left.Round(time.Second))
	}
	log.Info("loading", args...)
}

// mergeRow reconciles one snapshot row with the index and reports whether
// the index had to change (drift, unless this is the first load); report
// tells the handlers of such a change.
func (m *Mirror) mergeRow(rl *reloadState, r Row, report bool) bool {
	vis := rl.vis.Load()
	sh, h := m.ix.shard(r.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.get(r.Key, h)
	if e != nil {
		e.seen = rl.epoch
		if echo := sh.echoOf(e); echo != 0 && vis.Sees(echo) {
			sh.clearEcho(e) // the snapshot includes our write; its echo may have been lost
		}
		forged := false
		if x := e.xid(); x != 0 && !vis.Sees(x) {
			if !rl.forged(e) {
				return false // the stream (or our write) delivered a newer state
			}
			forged = true // the row replaces it, whatever it holds
			rl.forgedDropped.Add(1)
		}
		if !forged && !e.deleted() && e.version == r.Version && e.expires() == r.Expires {
			if e.inline() {
				// The same state if the same bytes: what comparing RowHash
				// would conclude, without hashing.
				if bytes.Equal(e.value(), r.Value) {
					e.owned = rl.epoch
					return false
				}
			} else {
				d := RowHash(r.Key, r.Version, r.Expires, r.Value)
				if e.digest() == 0 { // a fetch marker whose value was never seen: take it
					e = m.installValue(sh, h, e, r.Value, d, false)
					e.owned = rl.epoch
					return false
				}
				if e.digest() == d {
					e.owned = rl.epoch
					return false
				}
			}
		}
	}
	ne := m.setLocked(sh, h, r.Key, e, state{version: r.Version, expires: r.Expires, value: r.Value, hasValue: true}, false)
	ne.owned, ne.seen = rl.epoch, rl.epoch
	if report {
		// Queued under the shard's lock: before any later change of the key.
		m.emitChange(r.Key, EventSet, mergeReload)
	}
	return true
}

// sweep runs after the sentinel arrived: every change the snapshot includes
// has been delivered. It removes tombstones, and keys the snapshot lacks
// unless the stream delivered them after the snapshot. It returns the count
// of keys removed that way. After a range reload (ranges > 0) only keys of
// the picked ranges were read, so only those can be missing.
func (m *Mirror) sweep(rl *reloadState, ranges int, picked map[int]bool) int64 {
	vis := rl.vis.Load()
	var removed int64
	var gone []KeyChange
	var drop []*entry
	for i := range m.ix.shards {
		sh := &m.ix.shards[i]
		sh.mu.Lock()
		drop = drop[:0]
		sh.t.all(func(e *entry) bool {
			if echo := sh.echoOf(e); echo != 0 && vis.Sees(echo) {
				sh.clearEcho(e)
			}
			switch {
			case e.deleted():
				if sh.echoOf(e) == 0 {
					drop = append(drop, e)
					m.tombs.Add(-1)
				}
			case e.seen != rl.epoch && (e.xid() == 0 || vis.Sees(e.xid()) || rl.forged(e)) &&
				(ranges == 0 || picked[Bucket(e.key(), ranges)]):
				if e.xid() != 0 && !vis.Sees(e.xid()) {
					rl.forgedDropped.Add(1)
				}
				drop = append(drop, e)
				m.entries.Add(-1)
				if cachedValue(e) {
					m.values.Del(e.key())
				}
				removed++
				if m.handled() {
					gone = append(gone, KeyChange{Key: e.key(), Event: EventDel})
				}
			}
			return true
		})
		for _, e := range drop {
			sh.remove(m.ix, e, keyHash(e.key()))
		}
		// Queued under the shard's lock: before any later change of these keys.
		m.emitChanges(gone, mergeReload)
		gone = nil
		sh.mu.Unlock()
	}
	return removed
}

// abandonReload ends a failed reload: its tombstones are no longer needed.
func (m *Mirror) abandonReload(rl *reloadState) {
	if !m.reload.CompareAndSwap(rl, nil) {
		return
	}
	var drop []*entry
	for i := range m.ix.shards {
		sh := &m.ix.shards[i]
		sh.mu.Lock()
		drop = drop[:0]
		sh.t.all(func(e *entry) bool {
			if e.deleted() && sh.echoOf(e) == 0 {
				drop = append(drop, e)
			}
			return true
		})
		for _, e := range drop {
			sh.remove(m.ix, e, keyHash(e.key()))
			m.tombs.Add(-1)
		}
		sh.mu.Unlock()
	}
}

// awaitSentinel sends a sentinel and waits until the stream delivers it:
// then every change committed before it has been applied. onArrive, if not
// nil, runs as the stream applies the sentinel, under applyMu: before any
// notification delivered after it.
func (m *Mirror) awaitSentinel(ctx context.Context, onArrive func()) error {
	var b [8]byte
	_, _ = crand.Read(b[:])
	token := "r" + hex.EncodeToString(b[:])
	arrived := m.expectSentinel(token, onArrive)
	defer m.forgetSentinel(token)
	if err := m.src.Sentinel(ctx, token); err != nil {
		return fmt.Errorf("send sentinel: %w", err)
	}
	t := time.NewTimer(m.opts.SentinelWait)
	defer t.Stop()
	select {
	case <-arrived:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("sentinel not delivered within %v: is the listener connected?", m.opts.SentinelWait)
	}
}

func (m *Mirror) isLoaded() bool {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	return m.loaded
}

func (m *Mirror) finishReload(res ReloadResult) {
	m.stateMu.Lock()
	if !m.loaded {
		m.loaded = true
		m.readyFlag.Store(true)
		close(m.readyCh)
	}
	m.lastReload = time.Now()
	m.stateMu.Unlock()
	m.stats.reloads.Add(1)
	m.stats.drift.Add(res.Drift)
	m.stats.forged.Add(res.Forged)
	m.stats.lastReloadNanos.Store(int64(res.Duration))
}

// reloadLoop runs requested and periodic reloads one at a time. Requests
// coalesce, but one that arrives during a reload causes one more; a failed
// reload is retried with backoff.
func (m *Mirror) reloadLoop(ctx context.Context, interval time.Duration) {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 10 * time.Second
	backoff := minBackoff
	var periodic <-chan time.Time
	var timer *time.Timer
	resetTimer := func() {
		if interval <= 0 {
			return
		}
		// ±10% jitter, so a fleet started together does not reload together.
		d := interval - interval/10 + rand.N(interval/5+1)
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		periodic = timer.C
	}
	resetTimer()
	for {
		var reason string
		select {
		case <-ctx.Done():
			return
		case reason = <-m.resyncCh:
		case <-periodic:
			reason = "periodic"
			if !m.isConnected() {
				resetTimer() // a reconnect resyncs anyway
				continue
			}
		}
		var err error
		if reason == "periodic" && m.opts.RangeReloadMin > 0 && m.entries.Load() >= m.opts.RangeReloadMin {
			_, err = m.ReloadRanges(ctx, reason, 0)
		} else {
			_, err = m.Reload(ctx, reason)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.Warn("reload failed; retrying", "error", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			m.resync("retry: " + strings.TrimPrefix(reason, "retry: "))
			continue
		}
		backoff = minBackoff
		resetTimer()
	}
}

func (m *Mirror) isConnected() bool {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	return m.connected
}
