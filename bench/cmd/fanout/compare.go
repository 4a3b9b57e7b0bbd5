package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/bench/internal/benchutil"
)

// UpdateRun is one UPDATE of the comparison.
type UpdateRun struct {
	Variant string `json:"variant"` // see updateVariants
	Rep     int    `json:"rep"`
	Rows    int64  `json:"rows"`
	// StatementMS: the UPDATE sent -> its commit returned (autocommit).
	StatementMS float64 `json:"statement_ms"`
	// ConvergeMS: the commit returned -> every sidecar has reported the
	// sentinel written right after it (so every change of the UPDATE has
	// been applied: notifications are applied in commit order).
	ConvergeMS float64 `json:"converge_ms"`
	// PGCPUMS: Postgres CPU from the UPDATE sent until every sidecar had converged.
	PGCPUMS float64 `json:"postgres_cpu_ms"`
	// WriterCPUMS: the part of PGCPUMS the UPDATE's own backend used (the
	// statement, its triggers, the commit); DeliveryCPUMS the rest: the
	// listening backends reading the queue and sending to their sidecars,
	// and the server's background processes.
	WriterCPUMS   float64 `json:"postgres_writer_cpu_ms"`
	DeliveryCPUMS float64 `json:"postgres_delivery_cpu_ms"`
	Notifications int64   `json:"notifications"`
	RecordBytes   int64   `json:"record_bytes"`
	// Bound is ceil(record bytes / 7900) + 1, the most notifications packing may send.
	Bound             int64 `json:"bound"`
	SidecarsConverged int   `json:"sidecars_converged"`
	Mismatches        int   `json:"mismatches"`
	// TimedOut: some sidecar had not converged after -update-timeout
	// (ConvergeMS is then that timeout).
	TimedOut bool `json:"timed_out,omitempty"`
	TimeOuts int  `json:"timeouts,omitempty"` // in a median: how many runs timed out
	// Notifications the sidecars dropped because their local queue was full
	// (each such sidecar resyncs), and their reloads, summed over the fleet.
	Overflows int64 `json:"notification_queue_overflows"`
	Reloads   int64 `json:"reloads"`
}

// The variants of the UPDATE comparison. Each UPDATE runs on a connection
// of its own; "pooled" ones first ran one single-row upsert, as every
// connection of an application's pool has (PL/pgSQL caches the plans of a
// trigger function's queries per session, planned for the transition
// tables of the first call).
const (
	varPacked    = "packed"              // statement triggers, pooled session
	varPackedNew = "packed, new session" // statement triggers, the UPDATE is the session's first statement
	varPerRow    = "per-row"             // per-row notify trigger, pooled session
)

var updateVariants = []string{varPacked, varPackedNew, varPerRow}

// UpdateCmp is the packed-versus-per-row comparison.
type UpdateCmp struct {
	Sidecars      int         `json:"sidecars"`
	Listeners     int         `json:"listeners"`
	Rows          int         `json:"rows"`
	PerRowTrigger string      `json:"per_row_trigger"` // what the per-row trigger calls
	Timeout       string      `json:"timeout"`         // -update-timeout
	Runs          []UpdateRun `json:"runs"`
	// Medians per variant, and per-row / packed.
	Medians       []UpdateRun `json:"medians"`
	ConvergeRatio float64     `json:"converge_ratio"`     // per-row / packed (pooled session)
	CPURatio      float64     `json:"cpu_ratio"`          // per-row / packed (pooled session)
	ConvergeNew   float64     `json:"converge_ratio_new"` // per-row / packed, new session
	CPUNew        float64     `json:"cpu_ratio_new"`
	// The same for the delivery part of the CPU (see UpdateRun).
	DeliveryRatio    float64  `json:"delivery_cpu_ratio"`
	DeliveryRatioNew float64  `json:"delivery_cpu_ratio_new"`
	Notes            []string `json:"notes,omitempty"`
}

func (u *UpdateCmp) median(variant string) UpdateRun {
	for _, m := range u.Medians {
		if m.Variant == variant {
			return m
		}
	}
	return UpdateRun{Variant: variant}
}

// perRowSQL installs the per-row notification in place of the packed
// update trigger; %s is the body that notifies NEW.
const perRowSQL = `
CREATE OR REPLACE FUNCTION fanout_notify_update_row() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    %s
    RETURN NULL;
END
$fn$;
DROP TRIGGER pgmirror_20_notify_update ON cache_entries;
CREATE TRIGGER fanout_notify_update_row
    AFTER UPDATE ON cache_entries
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION fanout_notify_update_row();`

var perRowBodies = map[string]string{
	// The per-row baseline: pgmirror_publish of the row's record alone.
	"pgmirror_publish": `PERFORM pgmirror_publish(ARRAY[pgmirror_set_record(NEW.key, NEW.value, NEW.expires_at, NEW.version)]);`,
	// The same payload with pg_notify, for when pgmirror_publish no longer
	// sends at once (a publish that defers to the end of the transaction
	// would pack the rows again).
	"pg_notify": `PERFORM pg_notify('pgmirror', 'pgm1 ' || (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
        || ' ' || pg_current_xact_id() || E'\n' || pgmirror_set_record(NEW.key, NEW.value, NEW.expires_at, NEW.version));`,
}

const perRowDrop = `DROP TRIGGER IF EXISTS fanout_notify_update_row ON cache_entries;
DROP FUNCTION IF EXISTS fanout_notify_update_row();`

// triggers lists the user triggers of cache_entries with their enabled state.
func (e *env) triggers(ctx context.Context) (string, error) {
	var s string
	err := e.db.QueryRowContext(ctx, `SELECT coalesce(string_agg(tgname || ':' || tgenabled::text, ',' ORDER BY tgname), '')
		FROM pg_trigger WHERE tgrelid = 'cache_entries'::regclass AND NOT tgisinternal`).Scan(&s)
	return s, err
}

// migrate runs `pgmirror migrate`, which reinstalls missing triggers.
func (e *env) migrate(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, e.cfg.bin, "migrate", "--dsn", e.cfg.dsn).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgmirror migrate: %v: %s", err, out)
	}
	return nil
}

func (e *env) updateComparison(ctx context.Context) (*UpdateCmp, error) {
	cfg := e.cfg
	u := &UpdateCmp{Sidecars: e.n, Listeners: e.listeners(), Rows: cfg.updateRows, PerRowTrigger: "pgmirror_publish",
		Timeout: cfg.updateTimeout.String()}
	log.Printf("UPDATE comparison: %d rows, %d sidecars, %d repetitions", cfg.updateRows, e.n, cfg.updateReps)
	original, err := e.triggers(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := e.db.ExecContext(ctx, `INSERT INTO cache_entries (key, value)
		SELECT 'u:' || lpad(i::text, 6, '0'), convert_to(rpad('u:' || lpad(i::text, 6, '0') || ':init:', 66, 'x'), 'UTF8')
		FROM generate_series(0, $1 - 1) i
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, cfg.updateRows); err != nil {
		return nil, err
	}
	if _, err := e.db.ExecContext(ctx, `VACUUM ANALYZE cache_entries`); err != nil {
		return nil, err
	}
	ready := fmt.Sprintf("probe:%s:upd:ready", e.tag)
	if _, err := e.db.ExecContext(ctx, upsertSQL, ready, value(ready, 0)); err != nil {
		return nil, err
	}
	if _, ok, err := e.waitKey(ctx, ready, cfg.settleTimeout); err != nil || !ok {
		return nil, fmt.Errorf("sidecars did not load the rows to update (%v)", err)
	}
	restore := func() error {
		if _, err := e.db.ExecContext(context.Background(), perRowDrop); err != nil {
			return err
		}
		if err := e.migrate(context.Background()); err != nil {
			return err
		}
		got, err := e.triggers(context.Background())
		if err != nil {
			return err
		}
		if got != original {
			return fmt.Errorf("triggers after pgmirror migrate: %s; before the comparison: %s", got, original)
		}
		return nil
	}
	for rep := 1; rep <= cfg.updateReps; rep++ {
		// Rotate the order, so no variant always runs first.
		variants := slices.Clone(updateVariants)
		k := (rep - 1) % len(variants)
		variants = append(variants[k:], variants[:k]...)
		redo := false
		for _, v := range variants {
			if v == varPerRow {
				if _, err := e.db.ExecContext(ctx, fmt.Sprintf(perRowSQL, perRowBodies[u.PerRowTrigger])); err != nil {
					return nil, fmt.Errorf("install the per-row trigger: %w", err)
				}
			}
			r, err := e.updateOnce(ctx, v, rep)
			if v == varPerRow {
				if rerr := restore(); rerr != nil {
					return nil, fmt.Errorf("restore the triggers: %w", rerr)
				}
			}
			if err != nil {
				return nil, err
			}
			if v == varPerRow && r.Notifications < r.Rows && u.PerRowTrigger == "pgmirror_publish" {
				note := fmt.Sprintf("the per-row trigger calling pgmirror_publish sent %d notifications for %d rows (it no "+
					"longer sends at once); the per-row variant used pg_notify with the same payload instead", r.Notifications, r.Rows)
				log.Print(note)
				u.Notes = append(u.Notes, note)
				u.PerRowTrigger = "pg_notify"
				redo = true
				break
			}
			log.Printf("UPDATE %s #%d: %d rows, statement %.0f ms, converged %.0f ms after commit, %d notifications (bound %d), "+
				"Postgres %.0f ms CPU, %d/%d sidecars converged", v, rep, r.Rows, r.StatementMS, r.ConvergeMS, r.Notifications,
				r.Bound, r.PGCPUMS, r.SidecarsConverged, e.n)
			u.Runs = append(u.Runs, r)
		}
		if redo { // this repetition again, every variant
			u.Runs = slices.DeleteFunc(u.Runs, func(x UpdateRun) bool { return x.Rep == rep })
			rep--
		}
	}
	for _, v := range updateVariants {
		u.Medians = append(u.Medians, medianUpdate(u.Runs, v))
	}
	packed, packedNew, perRow := u.median(varPacked), u.median(varPackedNew), u.median(varPerRow)
	u.ConvergeRatio, u.CPURatio = safeDiv(perRow.ConvergeMS, packed.ConvergeMS), safeDiv(perRow.PGCPUMS, packed.PGCPUMS)
	u.ConvergeNew, u.CPUNew = safeDiv(perRow.ConvergeMS, packedNew.ConvergeMS), safeDiv(perRow.PGCPUMS, packedNew.PGCPUMS)
	u.DeliveryRatio = safeDiv(perRow.DeliveryCPUMS, packed.DeliveryCPUMS)
	u.DeliveryRatioNew = safeDiv(perRow.DeliveryCPUMS, packedNew.DeliveryCPUMS)
	return u, nil
}

func medianUpdate(runs []UpdateRun, variant string) UpdateRun {
	var conv, stmt, cpu, wcpu, dcpu, notif, bytes []float64
	m := UpdateRun{Variant: variant, SidecarsConverged: -1}
	for _, r := range runs {
		if r.Variant != variant {
			continue
		}
		conv = append(conv, r.ConvergeMS)
		stmt = append(stmt, r.StatementMS)
		cpu = append(cpu, r.PGCPUMS)
		wcpu = append(wcpu, r.WriterCPUMS)
		dcpu = append(dcpu, r.DeliveryCPUMS)
		notif = append(notif, float64(r.Notifications))
		bytes = append(bytes, float64(r.RecordBytes))
		m.Rows = r.Rows
		if m.SidecarsConverged < 0 || r.SidecarsConverged < m.SidecarsConverged {
			m.SidecarsConverged = r.SidecarsConverged // the worst
		}
		m.Mismatches += r.Mismatches
		m.Overflows += r.Overflows
		m.Reloads += r.Reloads
		if r.TimedOut {
			m.TimeOuts++
		}
	}
	m.ConvergeMS, m.StatementMS, m.PGCPUMS = median(conv), median(stmt), median(cpu)
	m.WriterCPUMS, m.DeliveryCPUMS = median(wcpu), median(dcpu)
	m.Notifications, m.RecordBytes = int64(median(notif)), int64(median(bytes))
	m.Bound = (m.RecordBytes+7899)/7900 + 1
	return m
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// updateOnce updates every u: row once, on a connection of its own, and
// waits until every sidecar has it.
func (e *env) updateOnce(ctx context.Context, variant string, rep int) (UpdateRun, error) {
	r := UpdateRun{Variant: variant, Rep: rep}
	tag := fmt.Sprintf("%s:%d", strings.NewReplacer("-", "", ",", "", " ", "").Replace(variant), rep)
	sentinel := fmt.Sprintf("probe:%s:upd:%s", e.tag, tag)
	db, err := sql.Open("postgres", e.cfg.dsn)
	if err != nil {
		return r, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		return r, err
	}
	defer conn.Close()
	if variant != varPackedNew {
		// As a pooled connection: it has written a row before.
		warm := wkey(rep, e.cfg.keys)
		if _, err := conn.ExecContext(ctx, upsertSQL, warm, value(warm, int64(rep))); err != nil {
			return r, err
		}
	}
	if err := e.waitQuiet(ctx); err != nil {
		return r, err
	}
	c0, err := e.counters()
	if err != nil {
		return r, err
	}
	var pid int
	if err := conn.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		return r, err
	}
	f0 := e.fl.stats()
	pg0, w0 := benchutil.PostgresNanos(e.pm), benchutil.ProcNanos(pid)
	t0 := time.Now()
	res, err := conn.ExecContext(ctx, `UPDATE cache_entries
		SET value = convert_to(rpad(key || ':' || $1 || ':', 66, 'x'), 'UTF8') WHERE key LIKE 'u:%'`, tag)
	t1 := time.Now()
	if err != nil {
		return r, err
	}
	r.Rows, _ = res.RowsAffected()
	if _, err := conn.ExecContext(ctx, upsertSQL, sentinel, value(sentinel, 0)); err != nil {
		return r, err
	}
	last, ok, err := e.waitKey(ctx, sentinel, e.cfg.updateTimeout)
	if err != nil {
		return r, err
	}
	pg1, w1 := benchutil.PostgresNanos(e.pm), benchutil.ProcNanos(pid)
	r.TimedOut = !ok
	r.StatementMS = float64(t1.Sub(t0).Microseconds()) / 1000
	r.ConvergeMS = float64(last-t1.UnixMicro()) / 1000
	if !ok {
		r.ConvergeMS = float64(e.cfg.updateTimeout.Milliseconds())
		log.Printf("UPDATE %s #%d: not every sidecar converged within %s", variant, rep, e.cfg.updateTimeout)
		// Whatever a sidecar is waiting for, the next notification, or
		// its reload, brings it; the comparison goes on.
		if err := e.waitQuiet(ctx); err != nil {
			return r, err
		}
	}
	c1, err := e.counters()
	if err != nil {
		return r, err
	}
	for i := range c1 {
		r.Overflows += c1[i]["notification_queue_overflows"] - c0[i]["notification_queue_overflows"]
		r.Reloads += c1[i]["reloads"] - c0[i]["reloads"]
	}
	r.PGCPUMS = float64(pg1-pg0) / 1e6
	r.WriterCPUMS = float64(w1-w0) / 1e6
	r.DeliveryCPUMS = r.PGCPUMS - r.WriterCPUMS
	a, found := e.fl.arrival(sentinel)
	if !found {
		return r, fmt.Errorf("the bare listener never saw %s", sentinel)
	}
	r.Notifications = a.before.Notifications - f0.Notifications
	r.RecordBytes = a.before.RecordBytes - f0.RecordBytes
	r.Bound = (r.RecordBytes+7899)/7900 + 1
	keys, want, err := e.tableValues(ctx, `key LIKE $1`, "u:%")
	if err != nil {
		return r, err
	}
	r.Mismatches, r.SidecarsConverged, err = e.compare(ctx, keys, want)
	return r, err
}

// waitQuiet waits until the bare listener has seen the warm-up write's
// notification (a marker written after it), so it is not counted.
func (e *env) waitQuiet(ctx context.Context) error {
	marker := fmt.Sprintf("probe:%s:upd:quiet:%d", e.tag, time.Now().UnixNano())
	if _, err := e.db.ExecContext(ctx, upsertSQL, marker, value(marker, 0)); err != nil {
		return err
	}
	if _, ok, err := e.waitKey(ctx, marker, e.cfg.settleTimeout); err != nil || !ok {
		return fmt.Errorf("marker %s not delivered (%v)", marker, err)
	}
	return nil
}

// GroupedRun is one run of the grouped-writes comparison.
type GroupedRun struct {
	Variant string `json:"variant"` // sql, sidecars, or sidecars with --write-linger
	Rep     int    `json:"rep"`
	Phase   Phase  `json:"phase"`
}

// GroupedCmp compares writes through the sidecars with the same writes in SQL.
type GroupedCmp struct {
	Sidecars  int          `json:"sidecars"`
	Listeners int          `json:"listeners"`
	Targets   int          `json:"targets"`
	Conns     int          `json:"conns_per_target"`
	Rate      int          `json:"rate"`
	Linger    string       `json:"linger,omitempty"` // --write-linger of the third variant's targets
	Runs      []GroupedRun `json:"runs"`
	// Medians per variant, in the order run, and SQL / each grouped variant.
	Medians             []GroupedMedian `json:"medians"`
	Ratio               float64         `json:"cpu_per_write_ratio"` // SQL / sidecars (default flags)
	NotificationsShared bool            `json:"notifications_shared"`
	Notes               []string        `json:"notes,omitempty"`
}

// GroupedMedian is the median of a variant's runs.
type GroupedMedian struct {
	Variant          string  `json:"variant"`
	WritesPerSec     float64 `json:"writes_per_sec"`
	PGPerWriteUS     float64 `json:"postgres_cpu_per_write_us"`
	PGCores          float64 `json:"postgres_cores"`
	NotifPerWrite    float64 `json:"notifications_per_write"`
	CommitP50US      float64 `json:"commit_p50_us"`
	CommitP99US      float64 `json:"commit_p99_us"`
	VisibleP99US     float64 `json:"visible_every_p99_us"`
	MeanBatch        float64 `json:"mean_batch"`
	SidecarsConverge int     `json:"sidecars_converged"`
}

const (
	varSQL      = "sql"
	varSidecars = "sidecars"
)

// lingerVariant names the variant through sidecars started with --write-linger.
func lingerVariant(linger string) string { return "sidecars, --write-linger=" + linger }

// groupedTargets says how many sidecars of an n-sidecar fleet take grouped
// writes: k with default flags, and k more with --write-linger (0 without).
func groupedTargets(cfg config, n int) (k, lingered int) {
	k = min(cfg.groupedTargets, n)
	if cfg.groupedLinger != "" && n >= 2*k {
		lingered = k
	}
	return k, lingered
}

func (e *env) groupedComparison(ctx context.Context) (*GroupedCmp, error) {
	cfg := e.cfg
	k, lingered := groupedTargets(cfg, e.n)
	g := &GroupedCmp{Sidecars: e.n, Listeners: e.listeners(), Targets: k, Conns: cfg.groupedConns, Rate: cfg.groupedRate}
	variants := []string{varSQL, varSidecars}
	if lingered > 0 {
		g.Linger = cfg.groupedLinger
		variants = append(variants, lingerVariant(g.Linger))
	} else if cfg.groupedLinger != "" {
		g.Notes = append(g.Notes, fmt.Sprintf("no --write-linger variant: it needs %d sidecars", 2*k))
	}
	log.Printf("grouped comparison: %d writes/s through %d sidecars x %d connections vs one per transaction, %d sidecars listening",
		cfg.groupedRate, k, cfg.groupedConns, e.n)
	// Sidecars 0..k-1 run with default flags, k..2k-1 with --write-linger.
	clients := make([]*redis.Client, k+lingered)
	for i := range clients {
		clients[i] = redis.NewClient(&redis.Options{Network: "unix", Addr: e.f.Socks[i], Protocol: 2,
			PoolSize: cfg.groupedConns, MinIdleConns: cfg.groupedConns, MaxRetries: -1})
		defer clients[i].Close()
	}
	workers := k * cfg.groupedConns
	sqlWrite := func(ctx context.Context, _ int, key string, v []byte) error {
		_, err := e.db.ExecContext(ctx, upsertSQL, key, v)
		return err
	}
	through := func(first int) writeFn {
		return func(ctx context.Context, w int, key string, v []byte) error {
			return clients[first+w%k].Set(ctx, key, v, 0).Err()
		}
	}
	for rep := 1; rep <= cfg.groupedReps; rep++ {
		order := slices.Clone(variants)
		if rep%2 == 0 {
			slices.Reverse(order)
		}
		for _, v := range order {
			spec := phaseSpec{name: fmt.Sprintf("grouped %s #%d", v, rep), workers: workers, rate: cfg.groupedRate,
				window: cfg.grouped, write: sqlWrite, probes: true}
			switch v {
			case varSidecars:
				spec.write, spec.admin = through(0), e.http[:k]
			case varSQL:
			default:
				spec.write, spec.admin = through(k), e.http[k:k+lingered]
			}
			ph, err := e.phase(ctx, spec)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", spec.name, err)
			}
			logPhase(e, ph)
			g.Runs = append(g.Runs, GroupedRun{Variant: v, Rep: rep, Phase: ph})
		}
	}
	for _, v := range variants {
		g.Medians = append(g.Medians, medianGrouped(g.Runs, v))
	}
	sql, grouped := g.Medians[0], g.Medians[1]
	g.Ratio = safeDiv(sql.PGPerWriteUS, grouped.PGPerWriteUS)
	// With one packed set of notifications per batch, a batch of b writes
	// sends about one notification; with one per command, b.
	g.NotificationsShared = grouped.MeanBatch > 1.2 && grouped.NotifPerWrite < 0.9
	if !g.NotificationsShared && grouped.MeanBatch > 1.2 {
		g.Notes = append(g.Notes, fmt.Sprintf("writes through the sidecars sent %.2f notifications per write at a mean batch of %.2f commands: "+
			"a batch does not share its notifications (one per command)", grouped.NotifPerWrite, grouped.MeanBatch))
	}
	return g, nil
}

func medianGrouped(runs []GroupedRun, variant string) GroupedMedian {
	var wps, pw, cores, npw, c50, c99, v99, mb []float64
	m := GroupedMedian{Variant: variant, SidecarsConverge: -1}
	for _, r := range runs {
		if r.Variant != variant {
			continue
		}
		p := r.Phase
		wps = append(wps, p.WritesPerSec)
		pw = append(pw, p.PGPerWriteUS)
		cores = append(cores, p.PGCores)
		if p.Writes > 0 {
			npw = append(npw, float64(p.Notifications)/float64(p.Writes))
		}
		c50 = append(c50, p.Commit.P50)
		c99 = append(c99, p.Commit.P99)
		v99 = append(v99, p.Visible.P99)
		mb = append(mb, p.MeanBatch)
		if m.SidecarsConverge < 0 || p.SidecarsConverged < m.SidecarsConverge {
			m.SidecarsConverge = p.SidecarsConverged
		}
	}
	m.WritesPerSec, m.PGPerWriteUS, m.PGCores, m.NotifPerWrite = median(wps), median(pw), median(cores), median(npw)
	m.CommitP50US, m.CommitP99US, m.VisibleP99US, m.MeanBatch = median(c50), median(c99), median(v99), median(mb)
	return m
}
