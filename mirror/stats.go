package mirror

import (
	"sync/atomic"
	"time"
)

// counters are the mirror's running totals.
type counters struct {
	hits, misses, loads  atomic.Int64
	fetches, fetchedKeys atomic.Int64
	batches, skipped     atomic.Int64
	contested            atomic.Int64    // own changes left to the stream (ApplyWrite)
	applied              [6]atomic.Int64 // by opIndex
	setsDropped          atomic.Int64
	inlineEvicted        atomic.Int64
	reloads              atomic.Int64
	reloadFailures       atomic.Int64
	drift                atomic.Int64
	forged               atomic.Int64
	replays              atomic.Int64
	repairs              atomic.Int64
	messages             atomic.Int64 // pub/sub messages handed to the handlers
	messagesDropped      atomic.Int64 // pub/sub messages dropped: the event queue was full
	lastReloadNanos      atomic.Int64
}

func opIndex(o Op) int {
	switch o {
	case OpSet:
		return 0
	case OpFetch:
		return 1
	case OpDelete:
		return 2
	case OpTruncate:
		return 3
	case OpFlush:
		return 5
	}
	return 4
}

// Stats is a snapshot of the mirror's counters and sizes.
type Stats struct {
	State          State
	Entries        int64 // present keys in the index
	Tombstones     int64 // per-key delete markers held for a reload in flight or an echo
	IndexBytes     int64 // estimated memory of the key index, with the values it holds
	InlineBytes    int64 // bytes of the values held in the key index (part of IndexBytes)
	ValueBytes     int64 // cost held by the value cache
	ValueBudget    int64 // what the value cache may hold
	Hits, Misses   int64 // reads answered with a value / without one
	Loads          int64 // reads of absent keys handed to their loader
	Fetches        int64 // queries for values the cache lacked
	FetchedKeys    int64 // keys those queries asked for
	Batches        int64 // notifications applied
	Applied        map[string]int64
	Skipped        int64 // notifications older than what the mirror holds
	Contested      int64 // changes of this sidecar's writes left to the stream: another of its writes on the key could not be ordered against them
	InlineEvicted  int64 // values moved from the key index to the value cache to stay within the budget
	SetsDropped    int64 // value-cache sets dropped by its buffers
	SetsRejected   int64 // value-cache sets rejected by its admission policy
	Evicted        int64
	Reloads        int64
	ReloadFailures int64
	Drift          int64 // keys reloads had to correct
	Forged         int64 // of those, keys a forged notification had set (a transaction id no transaction had)
	Replays        int64 // notifications dropped as replays: already applied, or older than the last reload's snapshot
	Repairs        int64 // reloads asked for because notifications had to be dropped (RequestRepair)
	LastReload     time.Time
	LastReloadTook time.Duration
	Connected      bool      // the listener is connected (and listening)
	DownSince      time.Time // zero while the listener is connected
	ClockLead      time.Duration

	// Messages and MessagesDropped count application pub/sub messages
	// received (OpMessage) and those dropped because the handlers fell behind.
	Messages, MessagesDropped int64
}

// Stats returns the current counters.
func (m *Mirror) Stats() Stats {
	s := Stats{
		Entries:        m.entries.Load(),
		Tombstones:     m.tombs.Load(),
		IndexBytes:     m.IndexBytes(),
		InlineBytes:    m.ix.inlineBytes.Load(),
		ValueBudget:    m.lastMaxCost.Load(),
		Hits:           m.stats.hits.Load(),
		Misses:         m.stats.misses.Load(),
		Loads:          m.stats.loads.Load(),
		Fetches:        m.stats.fetches.Load(),
		FetchedKeys:    m.stats.fetchedKeys.Load(),
		Batches:        m.stats.batches.Load(),
		Skipped:        m.stats.skipped.Load(),
		Contested:      m.stats.contested.Load(),
		InlineEvicted:  m.stats.inlineEvicted.Load(),
		SetsDropped:    m.stats.setsDropped.Load(),
		Reloads:        m.stats.reloads.Load(),
		ReloadFailures: m.stats.reloadFailures.Load(),
		Drift:          m.stats.drift.Load(),
		Forged:         m.stats.forged.Load(),
		Replays:        m.stats.replays.Load(),
		Repairs:        m.stats.repairs.Load(),
		LastReloadTook: time.Duration(m.stats.lastReloadNanos.Load()),
		ClockLead:      m.ClockLead(),
		Applied:        map[string]int64{},
	}
	s.Messages, s.MessagesDropped = m.stats.messages.Load(), m.stats.messagesDropped.Load()
	for _, o := range []Op{OpSet, OpFetch, OpDelete, OpTruncate, OpFlush} {
		s.Applied[o.String()] = m.stats.applied[opIndex(o)].Load()
	}
	if met := m.values.Metrics; met != nil {
		s.ValueBytes = int64(met.CostAdded() - met.CostEvicted())
		s.SetsDropped += int64(met.SetsDropped())
		s.SetsRejected = int64(met.SetsRejected())
		s.Evicted = int64(met.KeysEvicted())
	}
	m.stateMu.Lock()
	s.State = m.stateLocked()
	s.LastReload = m.lastReload
	s.Connected = m.connected
	if !m.connected {
		s.DownSince = m.downSince
	}
	m.stateMu.Unlock()
	return s
}
