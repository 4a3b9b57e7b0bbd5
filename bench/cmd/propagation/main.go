// Command propagation measures how long a committed write takes to become
// visible in every one of N pgmirror sidecars, next to the raw NOTIFY
// delivery floor of a bare pq.Listener in the same run.
//
// For each N of -sidecars it starts N `pgmirror serve` processes (own socket,
// --http=) on -dsn, a bare pq.Listener on the channel pgmirror, and a paced
// writer: -rate single-row upserts per second (INSERT ... ON CONFLICT DO
// UPDATE, 100-byte values) into cache_entries over -writers connections.
// Each N runs two phases on the same processes:
//
//   - quiet: writes only. Measured: the floor (bare listener's receipt -
//     sent_at, every write) and the sidecars' own lag (INFO lag_ms: their
//     latest notification's sent_at to applied, sampled every -info-every
//     on every sidecar).
//   - probed: the same, and every -probe-every'th write is a probe: a new
//     key probe:<n>:<i> with a unique value. As soon as the probe is known
//     committed (the writer's commit returned, or the bare listener received
//     it, whichever is first), one goroutine per sidecar GETs the key in a
//     loop over its own connection, one GET in flight, until the value is
//     there, and takes the time the reply arrived.
//
// All times are on the same host's clock and start at the payload's
// sent_at: clock_timestamp() in the notify trigger, just before the commit
// (the bare listener decodes it). "Visible in every sidecar" is, per probe,
// the slowest sidecar's first GET that returned the value; it is an upper
// bound, by at most one GET round trip (or, when the sidecar applied the
// change before the probing began, by the time to the first GET).
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lib/pq"

	"pgmirror/bench/internal/benchutil"
	"pgmirror/listener"
	"pgmirror/mirror"
)

type config struct {
	bin, dsn, dir, out string
	sidecars           []int
	rate, probeEvery   int
	writers, keys      int
	quiet, probed      time.Duration
	warmup             time.Duration
	probeTimeout       time.Duration
	infoEvery          time.Duration
	pollPause          time.Duration
}

// Result is the outcome for one number of sidecars.
type Result struct {
	Sidecars       int     `json:"sidecars"`
	StartupSeconds float64 `json:"startup_seconds"` // all N sidecars started and ready
	RSSPerSidecar  int64   `json:"rss_per_sidecar_bytes"`
	Quiet          Phase   `json:"quiet"`
	Probed         Phase   `json:"probed"`
}

// Phase is what one phase measured.
type Phase struct {
	Seconds      float64 `json:"seconds"`
	Writes       int     `json:"writes"`
	WriteErrors  int     `json:"write_errors"`
	WritesPerSec float64 `json:"writes_per_sec"`
	LateWrites   int     `json:"late_writes"` // sent more than 5 ms after their slot
	// Floor: bare pq.Listener receipt - sent_at, every write.
	Floor benchutil.Stats `json:"floor"`
	// SelfLag: the sidecars' own sent_at-to-applied lag of their latest
	// notification (INFO lag_ms), sampled on every sidecar.
	SelfLag benchutil.Stats `json:"self_lag"`
	// Commit: the writer's commit returned - sent_at, every write.
	Commit        benchutil.Stats `json:"commit_returned"`
	Probes        int             `json:"probes"`
	ProbeTimeouts int             `json:"probe_timeouts"` // (probe, sidecar) pairs not seen within -probe-timeout
	ProbesNoFloor int             `json:"probes_without_sent_at"`
	// FloorProbes: the floor of the probes alone.
	FloorProbes benchutil.Stats `json:"floor_probes"`
	// Visible: per probe, the slowest sidecar's visible time - sent_at.
	Visible benchutil.Stats `json:"visible_every"`
	// VisibleEach: every (probe, sidecar) pair.
	VisibleEach benchutil.Stats `json:"visible_each"`
	// Added: per probe, the slowest sidecar's visible time - the bare listener's receipt.
	Added benchutil.Stats `json:"added_every"`
	// CPU in cores over the phase: all sidecars together, and the whole machine.
	SidecarCores float64 `json:"sidecar_cores"`
	MachineBusy  float64 `json:"machine_busy_cores"`
	// Counters of all sidecars together, over the phase.
	Overflows   int64 `json:"notification_queue_overflows"`
	Fetches     int64 `json:"fetches"`
	SetsDropped int64 `json:"value_sets_dropped"`
	Reloads     int64 `json:"reloads"`
}

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("propagation: ")
	var cfg config
	var sidecars string
	flag.StringVar(&cfg.bin, "bin", "bin/pgmirror", "pgmirror binary")
	flag.StringVar(&cfg.dsn, "dsn", "", "Postgres DSN of a migrated database (its cache_entries is emptied)")
	flag.StringVar(&cfg.dir, "dir", "", "directory for sockets and logs")
	flag.StringVar(&cfg.out, "out", "", "write the results as JSON here")
	flag.StringVar(&sidecars, "sidecars", "1,10,50", "numbers of sidecars, comma-separated")
	flag.IntVar(&cfg.rate, "rate", 1000, "writes per second")
	flag.IntVar(&cfg.probeEvery, "probe-every", 50, "in the probed phase, every n-th write is a probe")
	flag.IntVar(&cfg.writers, "writers", 2, "writer connections")
	flag.IntVar(&cfg.keys, "keys", 1000, "keys the other writes cycle over")
	flag.DurationVar(&cfg.quiet, "quiet", 10*time.Second, "length of the quiet phase (0 skips it)")
	flag.DurationVar(&cfg.probed, "probed", 15*time.Second, "length of the probed phase (0 skips it)")
	flag.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "writes before each phase's window")
	flag.DurationVar(&cfg.probeTimeout, "probe-timeout", 2*time.Second, "give up on a probe after this long")
	flag.DurationVar(&cfg.infoEvery, "info-every", 100*time.Millisecond, "sample each sidecar's INFO lag_ms this often; 0 disables")
	flag.DurationVar(&cfg.pollPause, "poll-pause", 100*time.Microsecond, "pause between a prober's GETs (a nanosleep; 0 spins)")
	flag.Parse()
	if cfg.dsn == "" || cfg.dir == "" {
		log.Fatal("-dsn and -dir are required")
	}
	for _, s := range strings.Split(sidecars, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			log.Fatalf("bad -sidecars %q", sidecars)
		}
		cfg.sidecars = append(cfg.sidecars, n)
	}
	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	db, err := sql.Open("postgres", cfg.dsn)
	if err != nil {
		log.Fatal(err)
	}
	db.SetMaxOpenConns(cfg.writers + 1)
	db.SetMaxIdleConns(cfg.writers + 1)
	defer db.Close()

	var results []Result
	for _, n := range cfg.sidecars {
		r, err := run(ctx, cfg, db, n)
		if err != nil {
			log.Fatalf("%d sidecars: %v", n, err)
		}
		results = append(results, r)
	}
	if cfg.out != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(cfg.out, append(b, '\n'), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

func logPhase(n int, name string, p Phase) {
	log.Printf("%d sidecars, %s: %d writes (%.0f/s, %d late); floor p50 %.0f p99 %.0f µs; sidecars' own lag p50 %.0f p99 %.0f µs; "+
		"visible in every sidecar p50 %.0f p99 %.0f µs (%d probes, %d timeouts); added p99 %.0f µs; sidecars %.2f cores, machine %.2f; "+
		"fetches %d, overflows %d, reloads %d",
		n, name, p.Writes, p.WritesPerSec, p.LateWrites, p.Floor.P50, p.Floor.P99, p.SelfLag.P50, p.SelfLag.P99,
		p.Visible.P50, p.Visible.P99, p.Probes, p.ProbeTimeouts, p.Added.P99, p.SidecarCores, p.MachineBusy,
		p.Fetches, p.Overflows, p.Reloads)
}

func run(ctx context.Context, cfg config, db *sql.DB, n int) (Result, error) {
	res := Result{Sidecars: n}
	if _, err := db.ExecContext(ctx, `DELETE FROM cache_entries`); err != nil {
		return res, err
	}
	t0 := time.Now()
	f, err := benchutil.StartFleet(benchutil.FleetOptions{Bin: cfg.bin, DSN: cfg.dsn, Dir: cfg.dir,
		Name: fmt.Sprintf("s%d", n)}, n)
	defer f.Stop()
	if err != nil {
		return res, err
	}
	res.StartupSeconds = time.Since(t0).Seconds()
	log.Printf("%d sidecars ready in %.1f s", n, res.StartupSeconds)

	fl, err := listenFloor(cfg.dsn)
	if err != nil {
		return res, err
	}
	defer fl.close()

	if cfg.quiet > 0 {
		if res.Quiet, err = phase(ctx, cfg, db, f, fl, 0, cfg.quiet); err != nil {
			return res, err
		}
		logPhase(n, "quiet", res.Quiet)
	}
	if cfg.probed > 0 {
		if res.Probed, err = phase(ctx, cfg, db, f, fl, cfg.probeEvery, cfg.probed); err != nil {
			return res, err
		}
		logPhase(n, "probed", res.Probed)
	}
	for _, c := range f.Cmds {
		if rss, err := benchutil.ProcStatus(c.Process.Pid, "VmRSS"); err == nil {
			res.RSSPerSidecar += rss / int64(n)
		}
	}
	return res, nil
}

// counterKeys are the INFO counters summed over the fleet.
var counterKeys = []string{"notification_queue_overflows", "fetches", "value_sets_dropped", "reloads"}

// delivery is what the bare listener saw of one write.
type delivery struct{ sentAt, recv int64 }

// floor is the bare pq.Listener: it records when each value arrived and
// with which sent_at, and starts the probing of probes it sees first.
type floor struct {
	pl         *pq.Listener
	mu         sync.Mutex
	deliveries map[string]delivery // by value
	recording  atomic.Bool
	pending    sync.Map // value -> *probe not yet known committed
	done       chan struct{}
}

func listenFloor(dsn string) (*floor, error) {
	fl := &floor{pl: pq.NewListener(dsn, 10*time.Millisecond, time.Second, nil), done: make(chan struct{})}
	if err := fl.pl.Listen(listener.Channel); err != nil {
		fl.pl.Close()
		return nil, err
	}
	go func() {
		defer close(fl.done)
		for nt := range fl.pl.Notify {
			recv := time.Now().UnixMicro()
			if nt == nil || !fl.recording.Load() {
				continue
			}
			b, err := listener.Decode(nt.Extra)
			if err != nil {
				continue
			}
			fl.mu.Lock()
			for _, ch := range b.Changes {
				if ch.Op == mirror.OpSet {
					fl.deliveries[string(ch.Value)] = delivery{b.SentAt, recv}
					if p, ok := fl.pending.Load(string(ch.Value)); ok {
						p.(*probe).begin()
					}
				}
			}
			fl.mu.Unlock()
		}
	}()
	return fl, nil
}

func (fl *floor) close() {
	fl.pl.Close()
	<-fl.done
}

// probe is one probe write and what each sidecar saw of it.
type probe struct {
	key, value string
	visible    []int64 // per sidecar: unix µs of the first GET that saw the value; -1 never
	start      chan struct{}
	once       sync.Once
}

// begin lets the probers start GETting.
func (p *probe) begin() { p.once.Do(func() { close(p.start) }) }

// phase writes at cfg.rate for warmup + d, probing every probeEvery'th
// write of the window (0: none), and measures.
func phase(ctx context.Context, cfg config, db *sql.DB, f *benchutil.Fleet, fl *floor, probeEvery int, d time.Duration) (Phase, error) {
	var ph Phase
	n := len(f.Cmds)
	fl.mu.Lock()
	fl.deliveries = map[string]delivery{}
	fl.mu.Unlock()

	// One prober per sidecar.
	probeCh := make([]chan *probe, n)
	var probers sync.WaitGroup
	for i := range n {
		conn, err := benchutil.Dial(f.Socks[i])
		if err != nil {
			return ph, err
		}
		probeCh[i] = make(chan *probe, 4096)
		probers.Add(1)
		go func() {
			defer probers.Done()
			defer conn.Close()
			for p := range probeCh[i] {
				<-p.start
				deadline := time.Now().Add(cfg.probeTimeout)
				p.visible[i] = -1
				for {
					v, err := conn.Do("GET", p.key)
					now := time.Now()
					if err != nil {
						log.Printf("sidecar %d: GET: %v", i, err)
						break
					}
					if string(v) == p.value {
						p.visible[i] = now.UnixMicro()
						break
					}
					if now.After(deadline) {
						break
					}
					if cfg.pollPause > 0 {
						ts := syscall.NsecToTimespec(cfg.pollPause.Nanoseconds())
						_ = syscall.Nanosleep(&ts, nil)
					}
				}
			}
		}()
	}

	// The sidecars' own lag, sampled.
	var (
		selfLag  []float64
		selfMu   sync.Mutex
		samplers sync.WaitGroup
		stopSmp  = make(chan struct{})
	)
	for i := range n {
		if cfg.infoEvery <= 0 {
			break
		}
		conn, err := benchutil.Dial(f.Socks[i])
		if err != nil {
			return ph, err
		}
		samplers.Add(1)
		go func() {
			defer samplers.Done()
			defer conn.Close()
			t := time.NewTicker(cfg.infoEvery)
			defer t.Stop()
			last := ""
			for {
				select {
				case <-stopSmp:
					return
				case <-t.C:
				}
				info, err := conn.Info()
				if err != nil || !fl.recording.Load() || info["last_notification"] == last {
					continue
				}
				last = info["last_notification"]
				if v, err := strconv.ParseFloat(info["lag_ms"], 64); err == nil {
					selfMu.Lock()
					selfLag = append(selfLag, v*1000)
					selfMu.Unlock()
				}
			}
		}()
	}

	// The writers.
	type job struct {
		i   int
		due time.Time
	}
	jobs := make(chan job, cfg.writers)
	var (
		probes          []*probe
		probesMu        sync.Mutex
		writeErrs, late atomic.Int64
		writers         sync.WaitGroup
		commits         = map[string]int64{} // value -> unix µs its commit returned
		commitsMu       sync.Mutex
	)
	const upsert = `INSERT INTO cache_entries (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`
	for range cfg.writers {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for j := range jobs {
				if j.i >= 0 && time.Since(j.due) > 5*time.Millisecond {
					late.Add(1)
				}
				isProbe := j.i >= 0 && probeEvery > 0 && j.i%probeEvery == 0
				key := fmt.Sprintf("w:%06d", (j.i%cfg.keys+cfg.keys)%cfg.keys)
				if isProbe {
					key = fmt.Sprintf("probe:%d:%d", n, j.i)
				}
				value := fmt.Sprintf("%s/%d/", key, time.Now().UnixNano())
				value += strings.Repeat("x", max(0, 100-len(value)))
				var p *probe
				if isProbe {
					p = &probe{key: key, value: value, visible: make([]int64, n), start: make(chan struct{})}
					fl.pending.Store(value, p)
					probesMu.Lock()
					probes = append(probes, p)
					probesMu.Unlock()
					for _, ch := range probeCh {
						ch <- p
					}
				}
				_, err := db.ExecContext(ctx, upsert, key, []byte(value))
				now := time.Now().UnixMicro()
				if p != nil {
					p.begin()
					fl.pending.Delete(value)
				}
				if j.i >= 0 {
					commitsMu.Lock()
					commits[value] = now
					commitsMu.Unlock()
				}
				if err != nil && writeErrs.Add(1) < 5 {
					log.Printf("write: %v", err)
				}
			}
		}()
	}

	// The pacer: write i is due at start + i/rate; the window starts after
	// the warm-up (i >= 0) and ends at its deadline, whatever was written.
	// Go's timers wake about a millisecond late, so writes go out in
	// catch-up bursts of one or two; the rate holds.
	interval := time.Second / time.Duration(cfg.rate)
	warm := int(cfg.warmup / interval)
	start := time.Now().Add(10 * time.Millisecond)
	var (
		windowStart, end  time.Time
		cpu0, busy0, all0 int64
		c0                map[string]int64
		count             int
	)
	for i := -warm; ctx.Err() == nil; i++ {
		due := start.Add(time.Duration(i+warm) * interval)
		if i == 0 {
			c0 = f.Counters(counterKeys...)
			fl.recording.Store(true)
			windowStart = time.Now()
			end = windowStart.Add(d)
			cpu0 = f.CPUTicks()
			busy0, all0 = benchutil.MachineTicks()
		}
		if i >= 0 && time.Now().After(end) {
			break
		}
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		jobs <- job{i, due}
		if i >= 0 {
			count++
		}
	}
	close(jobs)
	writers.Wait()
	window := time.Since(windowStart)
	cpu1 := f.CPUTicks()
	busy1, all1 := benchutil.MachineTicks()
	for _, ch := range probeCh {
		close(ch)
	}
	probers.Wait()
	time.Sleep(200 * time.Millisecond) // the last notifications
	fl.recording.Store(false)
	close(stopSmp)
	samplers.Wait()
	if ctx.Err() != nil {
		return ph, ctx.Err()
	}
	c1 := f.Counters(counterKeys...)

	const hz = 100 // USER_HZ
	ph.Seconds = window.Seconds()
	ph.Writes = count
	ph.WriteErrors = int(writeErrs.Load())
	ph.WritesPerSec = float64(count) / window.Seconds()
	ph.LateWrites = int(late.Load())
	ph.SidecarCores = float64(cpu1-cpu0) / hz / window.Seconds()
	if all1 > all0 {
		ph.MachineBusy = float64(busy1-busy0) / float64(all1-all0) * float64(benchutil.NumCPU())
	}
	ph.Overflows = c1["notification_queue_overflows"] - c0["notification_queue_overflows"]
	ph.Fetches = c1["fetches"] - c0["fetches"]
	ph.SetsDropped = c1["value_sets_dropped"] - c0["value_sets_dropped"]
	ph.Reloads = c1["reloads"] - c0["reloads"]
	ph.SelfLag = benchutil.Summarise(selfLag)

	fl.mu.Lock()
	defer fl.mu.Unlock()
	var all, floorProbes, every, each, added, commit []float64
	for v, d := range fl.deliveries {
		all = append(all, float64(d.recv-d.sentAt))
		if c, ok := commits[v]; ok {
			commit = append(commit, float64(c-d.sentAt))
		}
	}
	for _, p := range probes {
		ph.Probes++
		d, ok := fl.deliveries[p.value]
		if !ok {
			ph.ProbesNoFloor++
			continue
		}
		floorProbes = append(floorProbes, float64(d.recv-d.sentAt))
		var slowest int64
		complete := true
		for _, v := range p.visible {
			if v <= 0 {
				ph.ProbeTimeouts++
				complete = false
				continue
			}
			each = append(each, float64(v-d.sentAt))
			slowest = max(slowest, v)
		}
		if complete {
			every = append(every, float64(slowest-d.sentAt))
			added = append(added, float64(slowest-d.recv))
		}
	}
	ph.Floor = benchutil.Summarise(all)
	ph.FloorProbes = benchutil.Summarise(floorProbes)
	ph.Visible = benchutil.Summarise(every)
	ph.VisibleEach = benchutil.Summarise(each)
	ph.Added = benchutil.Summarise(added)
	ph.Commit = benchutil.Summarise(commit)
	if ph.WriteErrors > 0 {
		return ph, fmt.Errorf("%d writes failed", ph.WriteErrors)
	}
	return ph, nil
}
