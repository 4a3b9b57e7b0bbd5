package mirror

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/singleflight"
)

// Defaults of Options.
const (
	DefaultMaxMemory      = 256 << 20
	DefaultMaxStaleness   = 30 * time.Second
	DefaultSentinelWait   = 30 * time.Second
	DefaultCatchUpWait    = 2 * time.Second
	DefaultClockInterval  = 30 * time.Second
	DefaultRangeReloadMin = 10000
	DefaultNegativeTTL    = 2 * time.Second
	DefaultInlineLimit    = 1024
	minValueBudget        = 1 << 20
	valueItemOverhead     = 190
	prefetchBatch         = 500
	prefetchQueue         = 65536
	reloadProgressLogging = 5 * time.Second
)

// Errors of the read API; the socket server turns them into replies.
var (
	// ErrLoading means the first load has not completed.
	ErrLoading = errors.New("mirror is loading")
	// ErrStale means the listener has been down longer than the staleness
	// bound and --stale-reads=error.
	ErrStale = errors.New("mirror is stale: notifications lost for longer than the staleness bound")
	// ErrCatchingUp means Postgres holds a newer state of the key than the
	// notifications delivered so far, and they did not catch up in time.
	ErrCatchingUp = errors.New("mirror is catching up with Postgres; retry")
)

// State is the mirror's readiness.
type State int

// The states.
const (
	StateLoading State = iota // before the first load completed
	StateReady                // loaded and following notifications
	StateStale                // loaded, but the listener is disconnected
)

func (s State) String() string {
	return [...]string{"loading", "ready", "stale"}[s]
}

// Options configures a Mirror; the zero value of each field takes its default.
type Options struct {
	// MaxMemory bounds values and the key index together.
	MaxMemory int64
	// InlineLimit: values of at most this many bytes are kept in the key
	// index itself rather than in the value cache, as long as the index
	// stays within seven eighths of MaxMemory; beyond that, new small
	// values go to the value cache (which evicts), and so do values the
	// index held if new keys need the room. A value in the index is
	// readable the moment its change is applied, and costs no cache item
	// (about 190 bytes each). 0 means DefaultInlineLimit; negative, never.
	InlineLimit int
	// ManageGC lets the mirror set the process's garbage collector target
	// (as GOGC would) from the memory it holds, so that the heap stays near
	// 1.25x of it rather than 2x; unless the GOGC environment variable is
	// set. For the sidecar process, which the mirror's memory dominates.
	ManageGC bool
	// MaxStaleness is how long the listener may be down before StaleError applies.
	MaxStaleness time.Duration
	// StaleError makes reads fail with ErrStale past MaxStaleness (--stale-reads=error).
	StaleError bool
	// SentinelWait bounds how long a reload waits for its sentinel.
	SentinelWait time.Duration
	// CatchUpWait bounds how long a read waits for notifications to catch up
	// with a row fetched from Postgres.
	CatchUpWait time.Duration
	// ClockInterval is how often the database clock offset is re-measured.
	ClockInterval time.Duration
	// ReloadInterval is the period of reloads (jittered); 0 disables them.
	ReloadInterval time.Duration
	// RangeReloadMin: a periodic reload of a mirror holding at least this
	// many keys compares key-range checksums and re-reads only the ranges
	// that differ, instead of the whole table; 0 means the default, a
	// negative number never.
	RangeReloadMin int64
	// Loader computes absent keys (cache_loaders); nil: none.
	Loader Loader
	// NegativeTTL is how long a key its loader found no row for is
	// remembered as absent (unless it changes first).
	NegativeTTL time.Duration
	// ServeStale lets reads serve an expired value for at most this long
	// after its expiry when HasLoader says a loader refreshes the key
	// (--serve-stale); 0 never.
	ServeStale time.Duration
	// HasLoader reports whether a loader computes key (for ServeStale).
	HasLoader func(key string) bool
	// MinResyncInterval is the least time between two reloads asked for by
	// RequestResync (PGMIRROR.RESYNC, SIGHUP) or RequestRepair (dropped
	// payloads); requests meanwhile are coalesced. 0 means
	// DefaultMinResyncInterval; negative, no limit (tests).
	MinResyncInterval time.Duration
	// ReplayWindow bounds the payload MACs remembered between reloads to
	// recognise replays; when it is full a reload is asked for, which
	// empties it. 0 means DefaultReplayWindow.
	ReplayWindow int
	// Logger; nil logs nothing.
	Logger hclog.Logger
	// Hooks lets tests pause the mirror at chosen points; nil in production.
	Hooks *Hooks
}

// Hooks are test hooks, called at points where a race would matter.
type Hooks struct {
	// AfterSnapshotVisible runs after a reload learned its snapshot's visibility, before any row.
	AfterSnapshotVisible func()
	// BeforeMerge runs before a reload merges its rows (after the sentinel arrived).
	BeforeMerge func()
	// AfterFetch runs after a fetch returned rows, before they are installed.
	AfterFetch func(keys []string)
}

func (o *Options) setDefaults() {
	if o.MaxMemory <= 0 {
		o.MaxMemory = DefaultMaxMemory
	}
	if o.InlineLimit == 0 {
		o.InlineLimit = DefaultInlineLimit
	}
	if o.MaxStaleness <= 0 {
		o.MaxStaleness = DefaultMaxStaleness
	}
	if o.SentinelWait <= 0 {
		o.SentinelWait = DefaultSentinelWait
	}
	if o.CatchUpWait <= 0 {
		o.CatchUpWait = DefaultCatchUpWait
	}
	if o.NegativeTTL <= 0 {
		o.NegativeTTL = DefaultNegativeTTL
	}
	if o.HasLoader == nil && o.Loader != nil {
		o.HasLoader = o.Loader.Covers
	}
	if o.RangeReloadMin == 0 {
		o.RangeReloadMin = DefaultRangeReloadMin
	}
	if o.ClockInterval <= 0 {
		o.ClockInterval = DefaultClockInterval
	}
	if o.MinResyncInterval == 0 {
		o.MinResyncInterval = DefaultMinResyncInterval
	}
	if o.ReplayWindow <= 0 {
		o.ReplayWindow = DefaultReplayWindow
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Hooks == nil {
		o.Hooks = &Hooks{}
	}
}

// valueItem is what the value cache holds for a value the index does not:
// the value and its RowHash, which ties it to the index state it belongs
// to. Identity by content (not by which Set came last) matters because
// ristretto may keep the first of two quick Sets of a new key.
type valueItem struct {
	digest uint64
	data   []byte
}

// Mirror is the in-memory mirror of cache_entries: a key index that is the
// authority on existence, version and expiry, and holds small values itself
// (see Options.InlineLimit), and a bounded value cache (ristretto) for the
// others; the two share MaxMemory. Changes reach it from the notification stream (Apply, in commit order),
// from reloads (Reload) and from this sidecar's own writes (ApplyWrite);
// what they change, it tells the handlers registered with Handle.
type Mirror struct {
	opts   Options
	log    hclog.Logger
	src    Source
	ix     *index
	values *ristretto.Cache[string, *valueItem]
	clock  clock
	fetch  singleflight.Group
	stats  counters

	reloadMu sync.Mutex // one reload at a time
	applyMu  sync.Mutex // serialises applying a batch and applying a write
	// view is held exclusively (under applyMu) while one batch's or one
	// write's changes are applied, and shared by reads of several keys
	// (GetMulti's lookups): they never see a transaction half applied.
	view    sync.RWMutex
	viewSeq atomic.Uint64 // see ViewSeq
	tickets map[*WriteTicket]struct{}
	// ownSeq counts ApplyWrite calls (applyMu): an echo mark carries the
	// number of the apply that set it, a ticket the number at its start.
	ownSeq uint64
	// awaiting holds, by xid, the writes ApplyWrite left to the stream
	// (applyMu); the channel is closed when the stream applies the xid.
	awaiting map[uint64]chan struct{}
	epoch    atomic.Uint32 // reloads started
	reload   atomic.Pointer[reloadState]
	entries  atomic.Int64 // live keys in the index
	tombs    atomic.Int64 // tombstones in the index
	// valueSets counts values given to the value cache, so that applying
	// a batch waits for ristretto only when it gave it one.
	valueSets atomic.Int64
	// inlineBudget is what the index may grow to by keeping values in it.
	inlineBudget int64

	// Readers check readiness on every read: lock-free copies of the state
	// (written under stateMu).
	readyFlag    atomic.Bool  // loaded
	downSinceNS  atomic.Int64 // unix nanos the listener went down; 0 while connected
	stateMu      sync.Mutex
	readyCh      chan struct{} // closed when the first load completes
	loaded       bool
	connected    bool
	downSince    time.Time
	lastReload   time.Time
	appliedMu    sync.Mutex
	appliedCh    chan struct{} // closed and replaced after every applied batch
	sentinelMu   sync.Mutex
	sentinels    map[string]*sentinelWait
	prefetchCh   chan string
	resyncCh     chan string
	ctx          context.Context
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	lastMaxCost  atomic.Int64
	gcPercent    atomic.Int64  // the collector's target the mirror set last (ManageGC)
	streamEpoch  atomic.Uint64 // bumped when the stream lost notifications (reconnect, overflow)
	reloadLogger hclog.Logger

	replay replayGuard // under applyMu
	// dropLost mirrors replay.lost, for RefreshKeyring.
	dropLost atomic.Bool
	limiter  resyncLimiter
	keyring  atomic.Pointer[Keyring]
	keyMu    sync.Mutex // one keyring read at a time
	keyRead  time.Time  // when the keyring was last read

	ev             events      // to the handlers (Handle)
	batch          []KeyChange // changes of the batch being applied (applyMu)
	opened, closed atomic.Bool
}

// New returns a mirror over src. Open starts its background work.
func New(src Source, opts Options) (*Mirror, error) {
	opts.setDefaults()
	budget := max(opts.MaxMemory, minValueBudget)
	// The admission sketch costs about 3 bytes a counter (more when a
	// reset touches it all). About ten counters per item expected at ~100
	// bytes a value when every value is cached here; values kept in the
	// index are not, and a few counters per cached item suffice.
	counters := budget / 40
	if opts.InlineLimit > 0 {
		counters = budget / 256
	}
	values, err := ristretto.NewCache(&ristretto.Config[string, *valueItem]{
		NumCounters: max(counters, 1000),
		MaxCost:     budget,
		BufferItems: 64,
		Metrics:     true,
	})
	if err != nil {
		return nil, err
	}
	m := &Mirror{
		opts:       opts,
		log:        opts.Logger,
		src:        src,
		ix:         newIndex(),
		values:     values,
		appliedCh:  make(chan struct{}),
		readyCh:    make(chan struct{}),
		tickets:    map[*WriteTicket]struct{}{},
		awaiting:   map[uint64]chan struct{}{},
		sentinels:  map[string]*sentinelWait{},
		prefetchCh: make(chan string, prefetchQueue),
		resyncCh:   make(chan string, 1),
	}
	m.ev.wake = make(chan struct{}, 1)
	// The index keeps values only within seven eighths of the budget: the
	// rest stays for the value cache (values above InlineLimit).
	m.inlineBudget = max(opts.MaxMemory-max(opts.MaxMemory/8, minValueBudget), 0)
	m.reloadLogger = m.log.Named("reload")
	m.replay = newReplayGuard(opts.ReplayWindow)
	m.lastMaxCost.Store(budget)
	m.ctx, m.cancel = context.WithCancel(context.Background())
	return m, nil
}

// Open starts the background work: the clock, the prefetcher, the reloader
// and the dispatcher of events to the handlers (Handle). The first reload
// starts when the stream reports itself connected.
func (m *Mirror) Open() error {
	if m.closed.Load() || !m.opened.CompareAndSwap(false, true) {
		return errors.New("mirror: Open after Open or Close")
	}
	m.wg.Add(4)
	go func() { defer m.wg.Done(); m.clockLoop(m.ctx) }()
	go func() { defer m.wg.Done(); m.prefetchLoop(m.ctx) }()
	go func() { defer m.wg.Done(); m.reloadLoop(m.ctx, m.opts.ReloadInterval) }()
	go func() { defer m.wg.Done(); m.dispatchLoop(m.ctx.Done()) }()
	return nil
}

// Close stops the background work (the handlers are given what was queued
// first) and releases the value cache. It may be called without Open, and
// more than once.
func (m *Mirror) Close() error {
	if !m.closed.CompareAndSwap(false, true) {
		return nil
	}
	m.cancel()
	m.stopLimiter()
	m.wg.Wait()
	m.values.Close()
	return nil
}

// State reports the mirror's readiness.
func (m *Mirror) State() State {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	return m.stateLocked()
}

func (m *Mirror) stateLocked() State {
	switch {
	case !m.loaded:
		return StateLoading
	case !m.connected:
		return StateStale
	}
	return StateReady
}

// Ready is closed when the first load has completed.
func (m *Mirror) Ready() <-chan struct{} { return m.readyCh }

// readable returns the error a read must answer with, or nil. It takes no
// lock: it runs on every read.
func (m *Mirror) readable() error {
	if !m.readyFlag.Load() {
		return ErrLoading
	}
	if m.opts.StaleError {
		if down := m.downSinceNS.Load(); down != 0 && time.Since(time.Unix(0, down)) > m.opts.MaxStaleness {
			return ErrStale
		}
	}
	return nil
}

// StreamUp tells the mirror that the listener is connected and listening:
// everything committed from now on will be delivered, but what was committed
// while it was down was not, so a full resync follows.
func (m *Mirror) StreamUp(reason string) {
	m.stateMu.Lock()
	m.connected = true
	m.downSinceNS.Store(0)
	m.stateMu.Unlock()
	m.streamEpoch.Add(1)
	m.resync(reason)
}

// StreamDown tells the mirror the listener lost its connection (or dropped
// notifications): reads go on from the mirror, marked stale.
func (m *Mirror) StreamDown(reason string) {
	m.stateMu.Lock()
	if m.connected || m.downSince.IsZero() {
		m.downSince = time.Now()
		m.downSinceNS.Store(m.downSince.UnixNano())
	}
	m.connected = false
	m.stateMu.Unlock()
	m.streamEpoch.Add(1)
	m.streamBroken(reason)
	m.log.Warn("notification stream down; serving the mirror as stale", "reason", reason)
}

// StreamGap tells the mirror notifications were lost while the connection
// stayed up (the listener's queue overflowed): resync.
func (m *Mirror) StreamGap(reason string) {
	m.streamEpoch.Add(1)
	m.streamBroken(reason)
	m.resync(reason)
}

// streamBroken releases the writes waiting for an echo that may now never
// arrive: they answer with what the mirror holds, and the resync repairs it.
// The handlers are told of the gap, in order with the applied batches.
func (m *Mirror) streamBroken(reason string) {
	m.applyMu.Lock()
	m.releaseAwaiting()
	m.emit(Event{Kind: KindFlush, Flush: FlushGap, Reason: reason})
	m.applyMu.Unlock()
}

// resync asks the reload loop for a reload, unlimited: for the stream's
// own needs. Requests coalesce; one that arrives during a reload causes one
// more after it.
func (m *Mirror) resync(reason string) {
	select {
	case m.resyncCh <- reason:
	default: // one is pending already; it will see the newest state
	}
}

// signalApplied wakes readers waiting for the stream to catch up.
func (m *Mirror) signalApplied() {
	m.appliedMu.Lock()
	close(m.appliedCh)
	m.appliedCh = make(chan struct{})
	m.appliedMu.Unlock()
}

func (m *Mirror) appliedSignal() <-chan struct{} {
	m.appliedMu.Lock()
	defer m.appliedMu.Unlock()
	return m.appliedCh
}
