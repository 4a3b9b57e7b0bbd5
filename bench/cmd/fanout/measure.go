package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"

	"pgmirror/bench/internal/benchutil"
	"pgmirror/listener"
	"pgmirror/mirror"
)

// Results is everything one run measured.
type Results struct {
	Started time.Time         `json:"started"`
	Seconds float64           `json:"seconds"`
	Quick   bool              `json:"quick"`
	Config  map[string]string `json:"config"`
	Runs    []Run             `json:"runs"`
	Fits    Fits              `json:"fits"`
}

// Run is one fleet size.
type Run struct {
	Requested      int     `json:"requested"`
	Sidecars       int     `json:"sidecars"`
	Listeners      int     `json:"listeners"` // sidecars + the bare counting listener
	CapReason      string  `json:"cap_reason,omitempty"`
	StartupSeconds float64 `json:"startup_seconds"`
	RSSPerSidecar  int64   `json:"rss_per_sidecar_bytes"`
	PGProcs        int     `json:"postgres_processes"`
	MaxConnections int     `json:"max_connections"`
	// Idle: Postgres's and the sidecars' CPU in cores with no writes.
	IdlePGCores      float64     `json:"idle_postgres_cores"`
	IdleSidecarCores float64     `json:"idle_sidecar_cores"`
	Phases           []Phase     `json:"phases"`
	Update           *UpdateCmp  `json:"update,omitempty"`
	Grouped          *GroupedCmp `json:"grouped,omitempty"`
}

// Phase is what one write phase measured.
type Phase struct {
	Name         string          `json:"name"`
	Seconds      float64         `json:"seconds"`
	Writes       int             `json:"writes"`
	WriteErrors  int             `json:"write_errors"`
	WritesPerSec float64         `json:"writes_per_sec"`
	LateWrites   int             `json:"late_writes,omitempty"` // paced: sent more than 5 ms after their slot
	Commit       benchutil.Stats `json:"commit"`                // a write sent -> its commit returned, µs
	// Notifications the bare listener received in the window, their records
	// and record bytes.
	Notifications int64 `json:"notifications"`
	Records       int64 `json:"records"`
	RecordBytes   int64 `json:"record_bytes"`
	// Floor: the bare listener's receipt - sent_at of every notification in the window, µs.
	Floor benchutil.Stats `json:"floor"`
	// Postgres: CPU seconds in the window, cores, and per write and per
	// delivered notification (notifications x listeners), µs.
	PGCPUSeconds      float64 `json:"postgres_cpu_seconds"`
	PGCores           float64 `json:"postgres_cores"`
	PGPerWriteUS      float64 `json:"postgres_cpu_per_write_us"`
	PGPerDeliveredUS  float64 `json:"postgres_cpu_per_delivered_notification_us"`
	SidecarCores      float64 `json:"sidecar_cores"`
	MachineBusy       float64 `json:"machine_busy_cores"`
	Probes            int     `json:"probes"`
	ProbesSeenByAll   int     `json:"probes_seen_by_all"`
	ProbePairsMissing int     `json:"probe_pairs_missing"` // (probe, sidecar) never reported
	ProbesNoFloor     int     `json:"probes_without_sent_at"`
	// Visible: per probe, the slowest sidecar's keyspace notification - sent_at, µs.
	Visible benchutil.Stats `json:"visible_every"`
	// VisibleEach: every (probe, sidecar) pair.
	VisibleEach benchutil.Stats `json:"visible_each"`
	// After the window: time from the last write to the sentinel seen by every sidecar.
	SettleSeconds float64 `json:"settle_seconds"`
	SettleTimeout bool    `json:"settle_timeout,omitempty"`
	// Notifications each sidecar counted over the phase against the bare
	// listener's count: the share of (notification, sidecar) deliveries
	// that arrived, and how many sidecars received every one.
	ReceivedShare    float64 `json:"received_share"`
	SidecarsAllRecvd int     `json:"sidecars_received_all"`
	// After the sentinel, every sidecar's value of every key written,
	// against the table.
	StateKeys         int   `json:"state_keys"`
	StateMismatches   int   `json:"state_mismatches"`
	SidecarsConverged int   `json:"sidecars_converged"`
	QueueOverflows    int64 `json:"notification_queue_overflows"`
	Resyncs           int64 `json:"reloads"`
	// Grouped writes: writer batches and commands of the target sidecars in the window.
	Batches   float64 `json:"writer_batches,omitempty"`
	BatchOps  float64 `json:"writer_ops,omitempty"`
	MeanBatch float64 `json:"mean_batch,omitempty"`
}

// env is one running fleet and what observes it.
type env struct {
	cfg  config
	db   *sql.DB
	pm   int
	n    int
	tag  string
	f    *benchutil.Fleet
	fl   *floor
	subs []*subscriber
	http []string // admin addresses of the sidecars that have one, by index
}

func (e *env) listeners() int {
	if e.fl == nil {
		return e.n
	}
	return e.n + 1
}

func (e *env) close() {
	for _, s := range e.subs {
		s.close()
	}
	if e.fl != nil {
		e.fl.close()
	}
	if e.f != nil {
		e.f.Stop()
	}
}

const upsertSQL = `INSERT INTO cache_entries (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`

// value is the 100-byte value of a write.
func value(key string, i int64) []byte {
	v := fmt.Sprintf("%s/%d/", key, i)
	return []byte(v + strings.Repeat("x", max(0, 100-len(v))))
}

func wkey(i, keys int) string { return fmt.Sprintf("w:%06d", (i%keys+keys)%keys) }

// runFleet measures n sidecars (fewer when the machine cannot hold them).
func runFleet(ctx context.Context, cfg config, db *sql.DB, pm, n int) (Run, error) {
	run := Run{Requested: n}
	if err := db.QueryRowContext(ctx, `SELECT current_setting('max_connections')::int`).Scan(&run.MaxConnections); err != nil {
		return run, err
	}
	var used int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'`).Scan(&used); err != nil {
		return run, err
	}
	if n > 0 {
		reserve := 10 + max(cfg.writers, cfg.groupedTargets*cfg.groupedConns) + 2
		byConn := (run.MaxConnections - used - reserve) / cfg.connsPerSidecar
		avail := benchutil.MemAvailable()
		byMem := int((avail - cfg.memReserve) / cfg.memPerSidecar)
		switch {
		case byConn < n && byConn <= byMem:
			run.CapReason = fmt.Sprintf("max_connections %d allows %d sidecars at %d connections each", run.MaxConnections, max(byConn, 0), cfg.connsPerSidecar)
			n = max(byConn, 0)
		case byMem < n:
			run.CapReason = fmt.Sprintf("%d MiB available less %d MiB reserve allows %d sidecars at %d MiB each",
				avail>>20, cfg.memReserve>>20, max(byMem, 0), cfg.memPerSidecar>>20)
			n = max(byMem, 0)
		}
		if run.CapReason != "" {
			log.Printf("%d sidecars requested, running %d: %s", run.Requested, n, run.CapReason)
		}
	}
	run.Sidecars = n
	e := &env{cfg: cfg, db: db, pm: pm, n: n, tag: fmt.Sprintf("n%d", n)}
	defer e.close()

	// The table: the keys the writes cycle over, loaded by the sidecars at start.
	if _, err := db.ExecContext(ctx, `DELETE FROM cache_entries`); err != nil {
		return run, err
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO cache_entries (key, value)
		SELECT 'w:' || lpad(i::text, 6, '0'), convert_to(rpad('w:' || lpad(i::text, 6, '0') || '/init/', 100, 'x'), 'UTF8')
		FROM generate_series(0, $1 - 1) i`, cfg.keys); err != nil {
		return run, err
	}
	if _, err := db.ExecContext(ctx, `VACUUM ANALYZE cache_entries`); err != nil {
		return run, err
	}

	if n > 0 {
		t0 := time.Now()
		admin, lingered := 0, 0
		if n == cfg.groupedAt {
			k, l := groupedTargets(cfg, n)
			admin, lingered = k+l, l
		}
		for range admin {
			addr, err := freePort()
			if err != nil {
				return run, err
			}
			e.http = append(e.http, addr)
		}
		dir := filepath.Join(cfg.dir, e.tag)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return run, err
		}
		log.Printf("starting %d sidecars", n)
		f, err := benchutil.StartFleet(benchutil.FleetOptions{Bin: cfg.bin, DSN: cfg.dsn, Dir: dir, Name: "s",
			Args: func(i int) []string {
				a := slices.Clone(cfg.sidecarArgs)
				if i >= admin-lingered && i < admin {
					a = append(a, "--write-linger="+cfg.groupedLinger)
				}
				if i < len(e.http) {
					return append(a, "--http="+e.http[i])
				}
				return append(a, "--http=")
			}}, n)
		e.f = f
		if err != nil {
			return run, err
		}
		run.StartupSeconds = time.Since(t0).Seconds()
		run.RSSPerSidecar = f.RSS() / int64(n)
		for _, s := range f.Socks {
			sub, err := subscribe(s)
			if err != nil {
				return run, err
			}
			e.subs = append(e.subs, sub)
		}
		if e.fl, err = listenFloor(cfg.dsn); err != nil {
			return run, err
		}
		log.Printf("%d sidecars ready in %.1f s, %.0f MiB RSS each", n, run.StartupSeconds, float64(run.RSSPerSidecar)/(1<<20))
	}
	run.Listeners = e.listeners()
	run.PGProcs = benchutil.PostgresProcs(pm)

	// Idle.
	s0 := e.snapshot(nil)
	if err := sleep(ctx, cfg.idle); err != nil {
		return run, err
	}
	s1 := e.snapshot(nil)
	secs := s1.at.Sub(s0.at).Seconds()
	run.IdlePGCores = float64(s1.pg-s0.pg) / benchutil.ClockTicks / secs
	run.IdleSidecarCores = float64(s1.side-s0.side) / benchutil.ClockTicks / secs

	sqlWrite := func(ctx context.Context, _ int, key string, v []byte) error {
		_, err := db.ExecContext(ctx, upsertSQL, key, v)
		return err
	}
	for _, spec := range []phaseSpec{
		{name: "paced", workers: cfg.pacedConns, rate: cfg.rate, window: cfg.paced, write: sqlWrite, probes: true},
		{name: "unpaced", workers: cfg.writers, window: cfg.unpaced, write: sqlWrite, probes: true},
	} {
		ph, err := e.phase(ctx, spec)
		if err != nil {
			return run, fmt.Errorf("%s: %w", spec.name, err)
		}
		logPhase(e, ph)
		run.Phases = append(run.Phases, ph)
	}
	if n == 0 && cfg.plain {
		ph, err := e.phase(ctx, phaseSpec{name: "unpaced, no trigger", workers: cfg.writers, window: cfg.unpaced,
			write: func(ctx context.Context, _ int, key string, v []byte) error {
				_, err := db.ExecContext(ctx, `INSERT INTO fanout_plain (key, value) VALUES ($1, $2)
					ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, key, v)
				return err
			}})
		if err != nil {
			return run, fmt.Errorf("plain: %w", err)
		}
		logPhase(e, ph)
		run.Phases = append(run.Phases, ph)
	}
	if n > 0 && n == cfg.updateAt {
		u, err := e.updateComparison(ctx)
		if err != nil {
			return run, fmt.Errorf("update comparison: %w", err)
		}
		run.Update = u
	}
	if n > 0 && n == cfg.groupedAt {
		g, err := e.groupedComparison(ctx)
		if err != nil {
			return run, fmt.Errorf("grouped comparison: %w", err)
		}
		run.Grouped = g
	}
	return run, nil
}

func logPhase(e *env, p Phase) {
	log.Printf("%d sidecars, %s: %.0f writes/s (commit p50 %.2f p99 %.2f ms); %d notifications; visible in every sidecar p50 %.2f p99 %.2f max %.2f ms "+
		"(%d probes, %d seen by all); received %.4f; converged %d/%d; Postgres %.2f cores, %.1f µs/write, %.2f µs/delivered; batch %.2f",
		e.n, p.Name, p.WritesPerSec, p.Commit.P50/1000, p.Commit.P99/1000, p.Notifications, p.Visible.P50/1000, p.Visible.P99/1000,
		p.Visible.Max/1000, p.Probes, p.ProbesSeenByAll, p.ReceivedShare, p.SidecarsConverged, e.n, p.PGCores, p.PGPerWriteUS,
		p.PGPerDeliveredUS, p.MeanBatch)
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// snap is a reading of the CPU counters.
type snap struct {
	at               time.Time
	pg, side         int64
	busy, all        int64
	floor            floorStats
	batches, ops     float64
	metricsScrapeErr error
}

// snapshot reads the counters; with admin addresses, their writer metrics too.
func (e *env) snapshot(admin []string) snap {
	var s snap
	for _, a := range admin {
		m, err := benchutil.ScrapeMetrics("http://" + a + "/metrics")
		if err != nil {
			s.metricsScrapeErr = err
			continue
		}
		s.batches += m["pgmirror_writer_batches_total"]
		s.ops += m["pgmirror_writer_ops_total"]
	}
	if e.fl != nil {
		s.floor = e.fl.stats()
	}
	s.at = time.Now()
	s.pg = benchutil.PostgresTicks(e.pm)
	if e.f != nil {
		s.side = e.f.CPUTicks()
	}
	s.busy, s.all = benchutil.MachineTicks()
	return s
}

// writeFn writes one key; worker is the writer's index.
type writeFn func(ctx context.Context, worker int, key string, v []byte) error

type phaseSpec struct {
	name    string
	workers int
	rate    int // writes per second over all workers; 0: as fast as they can
	window  time.Duration
	write   writeFn
	probes  bool     // probe, wait for the sentinel, compare the state
	admin   []string // sidecars whose writer metrics to read
}

type writeRec struct {
	done, took int64 // unix µs; µs
	ok         bool
}

// phase runs one write phase: warm-up, window, then the sentinel and the checks.
func (e *env) phase(ctx context.Context, spec phaseSpec) (Phase, error) {
	ph := Phase{Name: spec.name}
	cfg := e.cfg
	probes := spec.probes && e.n > 0
	pname := strings.NewReplacer(" ", "", ",", "").Replace(spec.name)
	prefix := fmt.Sprintf("probe:%s:%s:", e.tag, pname)
	var counters0 []map[string]int64
	var floor0 floorStats
	if probes {
		var err error
		if counters0, err = e.counters(); err != nil {
			return ph, err
		}
		floor0 = e.fl.stats()
	}

	var (
		open, closed atomic.Bool
		seq          atomic.Int64
		late         atomic.Int64
		recs         = make([][]writeRec, spec.workers)
		probeKeys    = make([][]string, spec.workers)
		lastDone     atomic.Int64
		s0, s1       snap
		wg           sync.WaitGroup
	)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	do := func(w int, i int64) {
		key := wkey(int(i), cfg.keys)
		isProbe := probes && cfg.probeEvery > 0 && i%int64(cfg.probeEvery) == 0 && open.Load() && !closed.Load()
		if isProbe {
			key = fmt.Sprintf("%s%d", prefix, i)
		}
		t := time.Now()
		err := spec.write(wctx, w, key, value(key, i))
		now := time.Now()
		if err != nil && wctx.Err() != nil {
			return
		}
		recs[w] = append(recs[w], writeRec{done: now.UnixMicro(), took: now.Sub(t).Microseconds(), ok: err == nil})
		if err != nil && len(recs[w]) < 5 {
			log.Printf("%s: write: %v", spec.name, err)
		}
		if isProbe && err == nil {
			probeKeys[w] = append(probeKeys[w], key)
		}
		lastDone.Store(now.UnixMicro())
	}
	if spec.rate > 0 {
		type job struct {
			i   int64
			due time.Time
		}
		jobs := make(chan job, spec.workers)
		for w := range spec.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					if open.Load() && time.Since(j.due) > 5*time.Millisecond {
						late.Add(1)
					}
					do(w, j.i)
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(jobs)
			interval := time.Second / time.Duration(spec.rate)
			start := time.Now()
			for i := int64(0); !closed.Load() && wctx.Err() == nil; i++ {
				due := start.Add(time.Duration(i) * interval)
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				select {
				case jobs <- job{i, due}:
				case <-wctx.Done():
					return
				}
			}
		}()
	} else {
		for w := range spec.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !closed.Load() && wctx.Err() == nil {
					do(w, seq.Add(1)-1)
				}
			}()
		}
	}
	// The window.
	if err := sleep(ctx, cfg.warmup); err != nil {
		return ph, err
	}
	s0 = e.snapshot(spec.admin)
	if e.fl != nil {
		e.fl.record(true)
	}
	open.Store(true)
	if err := sleep(ctx, spec.window); err != nil {
		return ph, err
	}
	closed.Store(true)
	s1 = e.snapshot(spec.admin)
	var floorLat []float64
	if e.fl != nil {
		floorLat = e.fl.record(false)
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ph, ctx.Err()
	}
	if s0.metricsScrapeErr != nil || s1.metricsScrapeErr != nil {
		return ph, fmt.Errorf("admin metrics: %v", errors.Join(s0.metricsScrapeErr, s1.metricsScrapeErr))
	}

	// Window figures.
	win := s1.at.Sub(s0.at)
	ph.Seconds = win.Seconds()
	from, to := s0.at.UnixMicro(), s1.at.UnixMicro()
	var took []float64
	for _, rs := range recs {
		for _, r := range rs {
			if r.done < from || r.done > to {
				continue
			}
			if !r.ok {
				ph.WriteErrors++
				continue
			}
			ph.Writes++
			took = append(took, float64(r.took))
		}
	}
	ph.WritesPerSec = float64(ph.Writes) / ph.Seconds
	ph.LateWrites = int(late.Load())
	ph.Commit = benchutil.Summarise(took)
	ph.Notifications = s1.floor.Notifications - s0.floor.Notifications
	ph.Records = s1.floor.Records - s0.floor.Records
	ph.RecordBytes = s1.floor.RecordBytes - s0.floor.RecordBytes
	ph.Floor = benchutil.Summarise(floorLat)
	ph.PGCPUSeconds = float64(s1.pg-s0.pg) / benchutil.ClockTicks
	ph.PGCores = ph.PGCPUSeconds / ph.Seconds
	if ph.Writes > 0 {
		ph.PGPerWriteUS = ph.PGCPUSeconds * 1e6 / float64(ph.Writes)
	}
	if d := ph.Notifications * int64(e.listeners()); d > 0 {
		ph.PGPerDeliveredUS = ph.PGCPUSeconds * 1e6 / float64(d)
	}
	ph.SidecarCores = float64(s1.side-s0.side) / benchutil.ClockTicks / ph.Seconds
	if s1.all > s0.all {
		ph.MachineBusy = float64(s1.busy-s0.busy) / float64(s1.all-s0.all) * float64(benchutil.NumCPU())
	}
	if len(spec.admin) > 0 {
		ph.Batches, ph.BatchOps = s1.batches-s0.batches, s1.ops-s0.ops
		if ph.Batches > 0 {
			ph.MeanBatch = ph.BatchOps / ph.Batches
		}
	}
	if !probes {
		return ph, nil
	}

	// The sentinel: once every sidecar has it, every earlier change has arrived.
	sentinel := prefix + "end"
	if _, err := e.db.ExecContext(ctx, upsertSQL, sentinel, value(sentinel, 0)); err != nil {
		return ph, err
	}
	seenAll, ok, err := e.waitKey(ctx, sentinel, cfg.settleTimeout)
	if err != nil {
		return ph, err
	}
	ph.SettleTimeout = !ok
	if last := lastDone.Load(); ok && last > 0 {
		ph.SettleSeconds = float64(seenAll-last) / 1e6
	}
	counters1, err := e.counters()
	if err != nil {
		return ph, err
	}
	floorAll := e.fl.stats().Notifications - floor0.Notifications
	var got int64
	for i := range counters1 {
		ph.QueueOverflows += counters1[i]["notification_queue_overflows"] - counters0[i]["notification_queue_overflows"]
		ph.Resyncs += counters1[i]["reloads"] - counters0[i]["reloads"]
		r := counters1[i]["notifications_received"] - counters0[i]["notifications_received"]
		got += min(r, floorAll)
		if r >= floorAll {
			ph.SidecarsAllRecvd++
		}
	}
	if floorAll > 0 && len(counters1) > 0 {
		ph.ReceivedShare = float64(got) / float64(floorAll*int64(len(counters1)))
	}

	// Probes.
	var every, each []float64
	for _, ks := range probeKeys {
		for _, k := range ks {
			a, ok := e.fl.arrival(k)
			// Only probes written in the window count.
			ph.Probes++
			if !ok {
				ph.ProbesNoFloor++
				continue
			}
			var slowest int64
			all := true
			for _, s := range e.subs {
				v := s.at(k)
				if v == 0 {
					ph.ProbePairsMissing++
					all = false
					continue
				}
				each = append(each, float64(v-a.sentAt))
				slowest = max(slowest, v)
			}
			if all {
				ph.ProbesSeenByAll++
				every = append(every, float64(slowest-a.sentAt))
			}
		}
	}
	ph.Visible = benchutil.Summarise(every)
	ph.VisibleEach = benchutil.Summarise(each)

	// The state of every sidecar against the table.
	keys, want, err := e.tableValues(ctx, `key LIKE 'w:%' OR key LIKE $1`, prefix+"%")
	if err != nil {
		return ph, err
	}
	ph.StateKeys = len(keys)
	ph.StateMismatches, ph.SidecarsConverged, err = e.compare(ctx, keys, want)
	if err != nil {
		return ph, err
	}
	return ph, nil
}

// sidecarCounters are the INFO counters read before and after a phase.
var sidecarCounters = []string{"notifications_received", "notification_queue_overflows", "reloads"}

// counters reads sidecarCounters of every sidecar.
func (e *env) counters() ([]map[string]int64, error) {
	out := make([]map[string]int64, 0, len(e.f.Socks))
	for _, s := range e.f.Socks {
		c, err := benchutil.Dial(s)
		if err != nil {
			return nil, err
		}
		info, err := c.Info()
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: INFO: %w", s, err)
		}
		m := map[string]int64{}
		for _, k := range sidecarCounters {
			v, _ := strconv.ParseInt(info[k], 10, 64)
			m[k] = v
		}
		out = append(out, m)
	}
	return out, nil
}

// tableValues reads the keys matching where (with $1 = arg) and their values.
func (e *env) tableValues(ctx context.Context, where string, arg any) ([]string, map[string]string, error) {
	rows, err := e.db.QueryContext(ctx, `SELECT key, value FROM cache_entries WHERE `+where+` ORDER BY key`, arg)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var keys []string
	want := map[string]string{}
	for rows.Next() {
		var k string
		var v []byte
		if err := rows.Scan(&k, &v); err != nil {
			return nil, nil, err
		}
		keys = append(keys, k)
		want[k] = string(v)
	}
	return keys, want, rows.Err()
}

// compare MGETs keys on every sidecar: mismatching (key, sidecar) pairs and
// the sidecars that match the table on every key.
func (e *env) compare(ctx context.Context, keys []string, want map[string]string) (mismatches, converged int, err error) {
	for _, sock := range e.f.Socks {
		c := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, Protocol: 2, PoolSize: 1})
		bad := 0
		for i := 0; i < len(keys); i += 1000 {
			chunk := keys[i:min(i+1000, len(keys))]
			vals, err := c.MGet(ctx, chunk...).Result()
			if err != nil {
				c.Close()
				return 0, 0, fmt.Errorf("%s: MGET: %w", sock, err)
			}
			for j, v := range vals {
				if s, ok := v.(string); !ok || s != want[chunk[j]] {
					bad++
				}
			}
		}
		c.Close()
		mismatches += bad
		if bad == 0 {
			converged++
		}
	}
	return mismatches, converged, nil
}

// waitKey waits until every sidecar and the bare listener have seen key:
// the time (unix µs) the last sidecar reported it, and whether all did in time.
func (e *env) waitKey(ctx context.Context, key string, timeout time.Duration) (int64, bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		var last int64
		all := true
		for _, s := range e.subs {
			v := s.at(key)
			if v == 0 {
				all = false
				break
			}
			last = max(last, v)
		}
		if _, ok := e.fl.arrival(key); !ok {
			all = false
		}
		if all {
			return last, true, nil
		}
		if time.Now().After(deadline) {
			return 0, false, nil
		}
		if err := sleep(ctx, 500*time.Microsecond); err != nil {
			return 0, false, err
		}
	}
}

// subscriber is one sidecar's keyspace notifications of probe keys.
type subscriber struct {
	conn *benchutil.Conn
	mu   sync.Mutex
	seen map[string]int64 // key -> unix µs its first "set" event arrived
	done chan struct{}
}

const probePattern = "__keyspace@0__:probe:*"

func subscribe(sock string) (*subscriber, error) {
	c, err := benchutil.Dial(sock)
	if err != nil {
		return nil, err
	}
	if err := c.Send("PSUBSCRIBE", probePattern); err != nil {
		c.Close()
		return nil, err
	}
	if m, err := c.ReadStrings(); err != nil || len(m) < 1 || m[0] != "psubscribe" {
		c.Close()
		return nil, fmt.Errorf("%s: PSUBSCRIBE: %q %v", sock, m, err)
	}
	s := &subscriber{conn: c, seen: map[string]int64{}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			m, err := c.ReadStrings()
			now := time.Now().UnixMicro()
			if err != nil {
				return
			}
			if len(m) == 4 && m[0] == "pmessage" && m[3] == "set" {
				key := strings.TrimPrefix(m[2], "__keyspace@0__:")
				s.mu.Lock()
				if _, ok := s.seen[key]; !ok {
					s.seen[key] = now
				}
				s.mu.Unlock()
			}
		}
	}()
	return s, nil
}

func (s *subscriber) at(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[key]
}

func (s *subscriber) close() {
	s.conn.Close()
	<-s.done
}

// floorStats are the bare listener's running totals.
type floorStats struct {
	Notifications int64 `json:"notifications"`
	Records       int64 `json:"records"`
	RecordBytes   int64 `json:"record_bytes"` // the records' text, without the header and separators
}

// arrival is when the bare listener saw a probe key.
type arrival struct {
	sentAt, recv int64      // unix µs
	before       floorStats // totals before its notification
}

// floor is the bare pq.Listener: it counts every notification and notes
// when each probe key arrived with which sent_at.
type floor struct {
	pl        *pq.Listener
	mu        sync.Mutex
	total     floorStats
	keys      map[string]arrival
	recording bool
	lat       []float64
	undecoded int
	done      chan struct{}
}

func listenFloor(dsn string) (*floor, error) {
	fl := &floor{pl: pq.NewListener(dsn, 10*time.Millisecond, time.Second, nil), keys: map[string]arrival{},
		done: make(chan struct{})}
	if err := fl.pl.Listen(listener.Channel); err != nil {
		fl.pl.Close()
		return nil, err
	}
	go func() {
		defer close(fl.done)
		for nt := range fl.pl.Notify {
			recv := time.Now().UnixMicro()
			if nt == nil {
				log.Printf("the bare listener reconnected: counts are incomplete")
				continue
			}
			p, err := listener.Decode(nt.Extra)
			fl.mu.Lock()
			before := fl.total
			fl.total.Notifications++
			if err != nil {
				fl.undecoded++
				fl.mu.Unlock()
				continue
			}
			_, body, _ := strings.Cut(nt.Extra, "\n")
			fl.total.Records += int64(len(p.Changes))
			fl.total.RecordBytes += int64(len(body) - (len(p.Changes) - 1))
			if fl.recording {
				fl.lat = append(fl.lat, float64(recv-p.SentAt))
			}
			for _, ch := range p.Changes {
				if (ch.Op == mirror.OpSet || ch.Op == mirror.OpFetch) && strings.HasPrefix(ch.Key, "probe:") {
					fl.keys[ch.Key] = arrival{sentAt: p.SentAt, recv: recv, before: before}
				}
			}
			fl.mu.Unlock()
		}
	}()
	return fl, nil
}

func (fl *floor) stats() floorStats {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.total
}

// record starts or stops collecting latencies; stopping returns them.
func (fl *floor) record(on bool) []float64 {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.recording = on
	lat := fl.lat
	fl.lat = nil
	return lat
}

func (fl *floor) arrival(key string) (arrival, bool) {
	if fl == nil {
		return arrival{}, false
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	a, ok := fl.keys[key]
	return a, ok
}

func (fl *floor) close() {
	fl.pl.Close()
	<-fl.done
}
