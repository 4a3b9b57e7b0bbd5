// Package jobs runs a sidecar's background work against Postgres:
// flushing access times (LRU), the refresh worker that recomputes keys
// before they expire, cleanup of unused and long-expired keys, and
// reloading the loaders when the mirror reports that cache_loaders changed
// (it registers for the mirror's events in New). Jobs follows the
// components' lifecycle: New builds it without starting anything, Open
// runs the jobs, Close stops them and flushes the last access times.
package jobs

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"pgmirror/mirror"
	"pgmirror/pgstore"
)

// Defaults of Config.
const (
	DefaultAccessFlushInterval = 5 * time.Second
	DefaultRefreshInterval     = 30 * time.Second
	DefaultRefreshAhead        = 10 * time.Second
	DefaultRefreshWindow       = 7 * 24 * time.Hour
	DefaultRefreshLockStale    = 5 * time.Minute
	DefaultCleanupInterval     = time.Minute
	DefaultRetention           = 7 * 24 * time.Hour
	DefaultExpiredGrace        = time.Hour
	DefaultQueueSampleInterval = 15 * time.Second
	refreshBatch               = 100
	cleanupBatch               = 500
	accessBatch                = 10000
)

// Config configures the jobs; zero durations take the defaults.
type Config struct {
	AccessFlushInterval time.Duration
	RefreshInterval     time.Duration
	RefreshAhead        time.Duration
	RefreshWindow       time.Duration
	RefreshLockStale    time.Duration
	CleanupInterval     time.Duration
	Retention           time.Duration
	ExpiredGrace        time.Duration
	// QueueSampleInterval is how often Postgres's notification queue usage
	// is read (Stats.QueueUsage; the first reading is at Open).
	QueueSampleInterval time.Duration
	Logger              hclog.Logger
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.AccessFlushInterval, DefaultAccessFlushInterval)
	def(&c.RefreshInterval, DefaultRefreshInterval)
	def(&c.RefreshAhead, DefaultRefreshAhead)
	def(&c.RefreshWindow, DefaultRefreshWindow)
	def(&c.RefreshLockStale, DefaultRefreshLockStale)
	def(&c.CleanupInterval, DefaultCleanupInterval)
	def(&c.Retention, DefaultRetention)
	def(&c.ExpiredGrace, DefaultExpiredGrace)
	def(&c.QueueSampleInterval, DefaultQueueSampleInterval)
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
}

// Mirror is what the jobs need of the mirror (*mirror.Mirror): the keys
// read since it was last asked (access times), applying what a refresh
// stored, and its events, which say when cache_loaders changed.
type Mirror interface {
	mirror.WriteApplier
	TakeAccessed() []string
	Handle(h func(mirror.Event))
}

// Stats are the jobs' running totals.
type Stats struct {
	AccessFlushes   int64 // flush statements run
	AccessRows      int64 // rows whose last_accessed_at they advanced
	Refreshed       int64 // keys recomputed and stored
	RefreshRemoved  int64 // keys whose loader found no row: deleted
	RefreshFenced   int64 // recomputations not stored: the claim was lost
	RefreshFailed   int64 // loader errors (the claim was released)
	CleanupDeleted  int64 // keys deleted by cleanup
	LoaderReloads   int64 // times the loaders were read again
	LoaderRuns      int64 // loader computations (reads and refreshes)
	LoaderFailures  int64
	LastAccessFlush time.Time
	// QueueUsage is the last reading of pg_notification_queue_usage() (0 to
	// 1), taken at QueueSampled (zero before the first reading succeeded).
	QueueUsage   float64
	QueueSampled time.Time
}

// Jobs runs the background work between Open and Close.
type Jobs struct {
	cfg     Config
	store   *pgstore.Store
	loaders *pgstore.Loaders
	mirror  Mirror
	log     hclog.Logger

	reloadLoaders chan struct{}
	ctx           context.Context
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	opened        atomic.Bool
	closeOnce     sync.Once

	accessFlushes, accessRows                    atomic.Int64
	refreshed, removed, fenced, failed, cleanups atomic.Int64
	loaderReloads                                atomic.Int64
	lastFlush                                    atomic.Int64
	queueUsage                                   atomic.Uint64 // math.Float64bits
	queueSampled                                 atomic.Int64  // unix nanos
}

// New returns the jobs over the mirror mir, and registers with it for its
// events (before mir opens); Open runs them.
func New(store *pgstore.Store, loaders *pgstore.Loaders, mir Mirror, cfg Config) *Jobs {
	cfg.defaults()
	j := &Jobs{cfg: cfg, store: store, loaders: loaders, mirror: mir, log: cfg.Logger,
		reloadLoaders: make(chan struct{}, 1)}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	mir.Handle(j.handleMirrorEvent)
	return j
}

// handleMirrorEvent asks for the loaders to be read again when the mirror
// says cache_loaders changed (or may have: after every reload).
func (j *Jobs) handleMirrorEvent(ev mirror.Event) {
	if ev.Kind == mirror.KindLoaders {
		j.LoadersChanged()
	}
}

// Open runs every job in its own goroutine.
func (j *Jobs) Open() error {
	if !j.opened.CompareAndSwap(false, true) {
		return errors.New("jobs: opened twice")
	}
	for _, job := range []struct {
		every time.Duration
		run   func(context.Context)
	}{
		{j.cfg.AccessFlushInterval, j.FlushAccess},
		{j.cfg.RefreshInterval, j.refresh},
		{j.cfg.CleanupInterval, j.cleanup},
	} {
		j.wg.Add(1)
		go func() {
			defer j.wg.Done()
			j.every(job.every, job.run)
		}()
	}
	j.wg.Add(2)
	go func() {
		defer j.wg.Done()
		j.loaderReloadLoop()
	}()
	go func() {
		defer j.wg.Done()
		j.sampleQueue(j.ctx)
		j.every(j.cfg.QueueSampleInterval, j.sampleQueue)
	}()
	return nil
}

// every runs fn each period until Close.
func (j *Jobs) every(period time.Duration, fn func(context.Context)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-j.ctx.Done():
			return
		case <-t.C:
			fn(j.ctx)
		}
	}
}

// Close stops the jobs, then flushes the access times gathered so far
// (if they ran). It may be called without Open, and more than once.
func (j *Jobs) Close() error {
	j.closeOnce.Do(func() {
		j.cancel()
		j.wg.Wait()
		if !j.opened.Load() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		j.FlushAccess(ctx)
	})
	return nil
}

// LoadersChanged asks for the loaders to be read again (cache_loaders
// changed, or a reload happened). It never blocks: the mirror's handlers
// must not.
func (j *Jobs) LoadersChanged() {
	select {
	case j.reloadLoaders <- struct{}{}:
	default:
	}
}

func (j *Jobs) loaderReloadLoop() {
	for {
		select {
		case <-j.ctx.Done():
			return
		case <-j.reloadLoaders:
		}
		if err := j.loaders.Reload(j.ctx); err != nil {
			if j.ctx.Err() == nil {
				j.log.Warn("reloading the loaders failed; keeping the old ones", "error", err)
			}
			continue
		}
		j.loaderReloads.Add(1)
	}
}

// Stats returns the running totals.
func (j *Jobs) Stats() Stats {
	runs, fails := j.loaders.Runs()
	s := Stats{
		AccessFlushes:  j.accessFlushes.Load(),
		AccessRows:     j.accessRows.Load(),
		Refreshed:      j.refreshed.Load(),
		RefreshRemoved: j.removed.Load(),
		RefreshFenced:  j.fenced.Load(),
		RefreshFailed:  j.failed.Load(),
		CleanupDeleted: j.cleanups.Load(),
		LoaderReloads:  j.loaderReloads.Load(),
		LoaderRuns:     runs,
		LoaderFailures: fails,
	}
	if n := j.lastFlush.Load(); n != 0 {
		s.LastAccessFlush = time.Unix(0, n)
	}
	if n := j.queueSampled.Load(); n != 0 {
		s.QueueUsage = math.Float64frombits(j.queueUsage.Load())
		s.QueueSampled = time.Unix(0, n)
	}
	return s
}
