// Command report turns the raw results of bench/run.sh into one table of
// figures and ratios against the performance targets, prints it, and (with
// -benchmarks) replaces the section "make bench results" of BENCHMARKS.md
// with it.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"pgmirror/bench/internal/benchutil"
)

// The section of BENCHMARKS.md this program owns.
const (
	heading   = "## make bench results"
	endMarker = "<!-- end of make bench results -->"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("report: ")
	dir := flag.String("dir", "", "results directory written by bench/run.sh")
	md := flag.String("benchmarks", "", "BENCHMARKS.md to update (empty: print only)")
	flag.Parse()
	if *dir == "" {
		log.Fatal("-dir is required")
	}
	r := &report{dir: *dir}
	section := r.build()
	fmt.Println(section)
	if *md != "" {
		if err := replaceSection(*md, section); err != nil {
			log.Fatal(err)
		}
		log.Printf("updated %s", *md)
	}
}

type report struct {
	dir string
	b   strings.Builder
}

func (r *report) path(name string) string { return filepath.Join(r.dir, name) }

func (r *report) printf(format string, args ...any) { fmt.Fprintf(&r.b, format, args...) }

// pgbenchResult is one pgbench run.
type pgbenchResult struct {
	tps      float64
	p50, p99 float64 // ms, from the per-transaction log
	n        int
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

func (r *report) pgbench(name string) pgbenchResult {
	var res pgbenchResult
	out, err := os.ReadFile(r.path("pgbench_" + name + ".out"))
	if err != nil {
		log.Fatal(err)
	}
	m := tpsRE.FindSubmatch(out)
	if m == nil {
		log.Fatalf("pgbench_%s.out: no tps line", name)
	}
	res.tps, _ = strconv.ParseFloat(string(m[1]), 64)
	logs, _ := filepath.Glob(r.path("pgbench_" + name + ".*"))
	var lat []float64
	for _, f := range logs {
		if strings.HasSuffix(f, ".out") {
			continue
		}
		fh, err := os.Open(f)
		if err != nil {
			log.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			// client_id transaction_no time script_no time_epoch time_us; time in µs.
			fields := strings.Fields(sc.Text())
			if len(fields) >= 3 {
				us, err := strconv.ParseFloat(fields[2], 64)
				if err == nil {
					lat = append(lat, us/1000)
				}
			}
		}
		fh.Close()
	}
	s := benchutil.Summarise(lat)
	res.p50, res.p99, res.n = s.P50, s.P99, s.N
	return res
}

// statement is a pg_stat_statements row.
type statement struct {
	calls, rows int64
	query       string
}

func (r *report) pgss(name string) map[string]statement {
	b, err := os.ReadFile(r.path(name))
	if err != nil {
		log.Fatal(err)
	}
	m := map[string]statement{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, "\t", 4)
		if len(f) < 4 {
			continue
		}
		calls, _ := strconv.ParseInt(f[1], 10, 64)
		rows, _ := strconv.ParseInt(f[2], 10, 64)
		m[f[0]] = statement{calls, rows, f[3]}
	}
	return m
}

func (r *report) tsv(name string) map[string]string {
	m := map[string]string{}
	b, err := os.ReadFile(r.path(name))
	if err != nil {
		return m
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "\t"); ok {
			m[k] = v
		}
	}
	return m
}

// propagation mirrors bench/cmd/propagation's JSON.
type propagation struct {
	Sidecars       int     `json:"sidecars"`
	StartupSeconds float64 `json:"startup_seconds"`
	RSSPerSidecar  int64   `json:"rss_per_sidecar_bytes"`
	Quiet          phase   `json:"quiet"`
	Probed         phase   `json:"probed"`
}

type phase struct {
	Seconds       float64         `json:"seconds"`
	Writes        int             `json:"writes"`
	WritesPerSec  float64         `json:"writes_per_sec"`
	LateWrites    int             `json:"late_writes"`
	Floor         benchutil.Stats `json:"floor"`
	SelfLag       benchutil.Stats `json:"self_lag"`
	Commit        benchutil.Stats `json:"commit_returned"`
	Probes        int             `json:"probes"`
	ProbeTimeouts int             `json:"probe_timeouts"`
	ProbesNoFloor int             `json:"probes_without_sent_at"`
	FloorProbes   benchutil.Stats `json:"floor_probes"`
	Visible       benchutil.Stats `json:"visible_every"`
	VisibleEach   benchutil.Stats `json:"visible_each"`
	Added         benchutil.Stats `json:"added_every"`
	SidecarCores  float64         `json:"sidecar_cores"`
	MachineBusy   float64         `json:"machine_busy_cores"`
	Overflows     int64           `json:"notification_queue_overflows"`
	Fetches       int64           `json:"fetches"`
	SetsDropped   int64           `json:"value_sets_dropped"`
	Reloads       int64           `json:"reloads"`
}

// warmstart mirrors bench/cmd/warmstart's JSON.
type warmstart struct {
	Rows      int64  `json:"rows"`
	RawBytes  int64  `json:"raw_bytes"`
	MaxMemory string `json:"max_memory"`
	Runs      []struct {
		ReadySeconds float64 `json:"ready_seconds"`
		LoadTook     string  `json:"load_took"`
		RSSReady     int64   `json:"rss_ready"`
		RSSSettled   int64   `json:"rss_settled"`
		HWM          int64   `json:"rss_peak"`
	} `json:"runs"`
	Median struct {
		ReadySeconds float64 `json:"ready_seconds"`
		RSSReady     int64   `json:"rss_ready"`
		RSSSettled   int64   `json:"rss_settled"`
		HWM          int64   `json:"rss_peak"`
		IndexBytes   int64   `json:"index_bytes"`
		ValueBytes   int64   `json:"value_bytes"`
	} `json:"median"`
}

func readJSON(path string, v any) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	if err := json.Unmarshal(b, v); err != nil {
		log.Fatalf("%s: %v", path, err)
	}
	return true
}

// row is one line of the table.
type row struct{ what, pgm, base, ratio, target, verdict string }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func (r *report) build() string {
	machine := r.tsv("machine.tsv")
	reps := machine["reps"]
	var rows []row
	add := func(x row) { rows = append(rows, x) }

	// redis-benchmark.
	rb := map[string]rbResult{}
	rows = append(rows, r.rbRows(reps, rb)...)

	// MULTI/EXEC and EVALSHA (bench/cmd/txbench).
	rows = append(rows, r.txRows(reps)...)

	// The direct SELECT.
	for _, c := range []string{"1", "50"} {
		pg := r.pgbench("select_c" + c)
		p := rb["getc"+c+"pgmirror"]
		x := row{what: "GET -c " + c + " vs pgbench PK SELECT, " + c + " client(s): per second",
			pgm: kilo(p.rps), base: kilo(pg.tps) + " Postgres", ratio: ratio(p.rps, pg.tps)}
		if c == "50" {
			x.target, x.verdict = "≥ 1.6x SELECT", verdict(p.rps >= 1.6*pg.tps)
		}
		add(x)
		add(row{what: "… p50 / p99 latency, ms", pgm: trimFloat(p.p50) + " / " + trimFloat(p.p99),
			base:  fmt.Sprintf("%s / %s Postgres", trimFloat(round3(pg.p50)), trimFloat(round3(pg.p99))),
			ratio: "p99 " + ratio(p.p99, pg.p99)})
	}

	// Statements during the GET runs.
	st := r.getStatements()
	add(st.row())

	// Propagation.
	var props []propagation
	if readJSON(r.path("propagation.json"), &props) {
		for _, p := range props {
			q, pr := p.Quiet, p.Probed
			x := row{what: fmt.Sprintf("propagation, %d sidecar(s), %.0f writes/s: commit → visible in every sidecar (GET probes), p50 / p99 ms",
				p.Sidecars, pr.WritesPerSec),
				pgm:   ms(pr.Visible.P50) + " / " + ms(pr.Visible.P99),
				base:  ms(pr.FloorProbes.P50) + " / " + ms(pr.FloorProbes.P99) + " bare pq.Listener, same probes",
				ratio: msDelta(pr.Visible.P99-pr.FloorProbes.P99) + " ms p99"}
			y := row{what: fmt.Sprintf("… %d sidecar(s): added over the bare listener's receipt, per probe, p50 / p99 ms", p.Sidecars),
				pgm: ms(pr.Added.P50) + " / " + ms(pr.Added.P99)}
			z := row{what: fmt.Sprintf("… %d sidecar(s), no probes, %.0f writes/s: each sidecar's own sent_at → applied (INFO lag_ms, sampled), p50 / p99 ms",
				p.Sidecars, q.WritesPerSec),
				pgm:   ms(q.SelfLag.P50) + " / " + ms(q.SelfLag.P99),
				base:  ms(q.Floor.P50) + " / " + ms(q.Floor.P99) + " bare pq.Listener, every write",
				ratio: msDelta(q.SelfLag.P99-q.Floor.P99) + " ms p99"}
			if p.Sidecars == 10 {
				x.target, x.verdict = "p99 < 2 ms", verdict(pr.Visible.P99 < 2000 && pr.ProbeTimeouts == 0)
				y.target, y.verdict = "adds < 0.2 ms p99", verdict(pr.Added.P99 < 200)
				z.target, z.verdict = "adds < 0.2 ms p99", verdict(q.SelfLag.P99-q.Floor.P99 < 200)
			}
			add(x)
			add(y)
			add(z)
		}
	}

	// Client-side caching (bench/cmd/invalidation).
	invs := r.invalidations()
	rows = append(rows, invRows(invs)...)

	// Warm start.
	var ws warmstart
	if readJSON(r.path("warmstart.json"), &ws) {
		add(row{what: fmt.Sprintf("warm start, %s rows of 100 bytes: process start → ready (median of %d)", kilo(float64(ws.Rows)), len(ws.Runs)),
			pgm: fmt.Sprintf("%.2f s", ws.Median.ReadySeconds), target: "< 5 s", verdict: verdict(ws.Median.ReadySeconds < 5)})
		add(row{what: fmt.Sprintf("… VmRSS at ready vs raw keys+values (%s MiB)", mib(ws.RawBytes)),
			pgm:    mib(ws.Median.RSSReady) + " MiB",
			base:   mib(ws.RawBytes) + " MiB raw",
			ratio:  fmt.Sprintf("%.2fx", float64(ws.Median.RSSReady)/float64(ws.RawBytes)),
			target: "< 2x raw", verdict: verdict(float64(ws.Median.RSSReady) < 2*float64(ws.RawBytes))})
	}

	// Writes.
	trig, plain := r.pgbench("upsert_triggers_c50"), r.pgbench("upsert_plain_c50")
	set := rb["setc50pgmirror"]
	add(row{what: "writes, 50 clients: SET through pgmirror vs pgbench upsert on a table without triggers, per second",
		pgm: kilo(set.rps), base: kilo(plain.tps) + " plain upsert", ratio: ratio(set.rps, plain.tps),
		target: "≥ 1.0x plain", verdict: verdict(set.rps >= plain.tps)})
	add(row{what: "… vs the same upsert on cache_entries with the notify triggers",
		pgm: kilo(set.rps), base: kilo(trig.tps) + " upsert + triggers", ratio: ratio(set.rps, trig.tps)})
	add(row{what: "… upsert latency p50 / p99, ms (plain; with triggers)", pgm: trimFloat(set.p50) + " / " + trimFloat(set.p99),
		base: fmt.Sprintf("%s / %s; %s / %s", trimFloat(round3(plain.p50)), trimFloat(round3(plain.p99)),
			trimFloat(round3(trig.p50)), trimFloat(round3(trig.p99)))})

	// The section.
	r.printf("%s\n\n<!-- Written by bench/run.sh (make bench); replaced on every run. -->\n\n", heading)
	r.printf("Run of %s on %s: %s CPUs (%s), %s; %s; %s; Redis %s (%s); %s; %s. "+
		"Client, servers and Postgres share the CPUs. The whole run took %s s.\n\n",
		machine["date"], machine["os"], machine["nproc"], machine["cpu"], machine["memory"], machine["kernel"],
		machine["postgres"], machine["redis"], machine["redis-benchmark"], machine["go"], machine["pgmirror"],
		machine["elapsed"])
	r.printf("Postgres: %s. Load average (1, 5, 15 min) at the start: %s; at the end: %s — other work on the host "+
		"shares the CPUs and the disk.\n\n", machine["pgconf"], machine["load_start"], machine["load_end"])
	r.acceptBlock(acceptance(rb, plain, st, machine["synchronous_commit"]), reps, machine["quick"] == "1")
	r.printf("### All figures\n\n")
	r.printf("| measurement | pgmirror | baseline | ratio | SPEC §8 target | verdict |\n|---|---|---|---|---|---|\n")
	for _, x := range rows {
		r.printf("| %s | %s | %s | %s | %s | %s |\n", x.what, dash(x.pgm), dash(x.base), dash(x.ratio), dash(x.target), dash(x.verdict))
	}

	r.printf("\n### Details\n\n")
	r.printf("redis-benchmark, every run (pgmirror and Redis alternated, in this order):\n\n")
	r.printf("| test | pgmirror | Redis |\n|---|---|---|\n")
	for _, mode := range []string{"get", "set"} {
		for _, cfg := range []string{"c1", "c50", "c50p16"} {
			r.printf("| %s %s | %s | %s |\n", strings.ToUpper(mode), cfgName[cfg],
				strings.Join(rb[mode+cfg+"pgmirror"].runs, "; "), strings.Join(rb[mode+cfg+"redis"].runs, "; "))
		}
	}
	r.txDetails()
	r.printf("\npgbench (one run each; latency percentiles from the per-transaction log):\n\n")
	r.printf("| run | tps | p50 ms | p99 ms | transactions |\n|---|---|---|---|---|\n")
	for _, name := range []string{"select_c1", "select_c50", "upsert_triggers_c50", "upsert_plain_c50"} {
		p := r.pgbench(name)
		r.printf("| %s | %.0f | %s | %s | %d |\n", name, p.tps, trimFloat(round3(p.p50)), trimFloat(round3(p.p99)), p.n)
	}
	r.printf("\nStatements Postgres ran in database `bench` while the pgmirror GET runs went on " +
		"(pg_stat_statements, after minus before; includes the harness's own queries):\n\n")
	r.printf("| calls | rows | statement |\n|---|---|---|\n")
	for _, d := range st.deltas {
		q := d.query
		if len(q) > 160 {
			q = q[:160] + "…"
		}
		r.printf("| %d | %d | `%s` |\n", d.calls, d.rows, strings.ReplaceAll(q, "|", "\\|"))
	}
	if len(props) > 0 {
		r.printf("\nPropagation: times from the payload's sent_at (the trigger's clock_timestamp(), just before commit). "+
			"Quiet: writes only; probed: every 50th write is a probe the probers GET on every sidecar. "+
			"Sidecar CPU and machine busy are in cores of %s; machine busy includes everything on the host.\n\n", machine["nproc"])
		r.printf("| sidecars | phase | writes/s | late writes | floor, every write p50 / p99 / max | sidecars' own lag p50 / p99 (samples) | commit returned p50 / p99 | probes (timeouts) | floor, probes p50 / p99 | visible in every sidecar p50 / p90 / p99 / max | visible, each sidecar p50 / p99 | added p50 / p99 | sidecars' CPU | CPU per notification per sidecar | machine busy | fetches | queue overflows |\n")
		r.printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, p := range props {
			for _, x := range []struct {
				name string
				ph   phase
			}{{"quiet", p.Quiet}, {"probed", p.Probed}} {
				ph := x.ph
				if ph.Writes == 0 {
					continue
				}
				probes := "—"
				vis, each, added, fp := "—", "—", "—", "—"
				if ph.Probes > 0 {
					probes = fmt.Sprintf("%d (%d)", ph.Probes, ph.ProbeTimeouts)
					fp = ms(ph.FloorProbes.P50) + " / " + ms(ph.FloorProbes.P99)
					vis = ms(ph.Visible.P50) + " / " + ms(ph.Visible.P90) + " / " + ms(ph.Visible.P99) + " / " + ms(ph.Visible.Max)
					each = ms(ph.VisibleEach.P50) + " / " + ms(ph.VisibleEach.P99)
					added = ms(ph.Added.P50) + " / " + ms(ph.Added.P99)
				}
				perNote := ph.SidecarCores / max(ph.WritesPerSec, 1) / float64(p.Sidecars) * 1e6
				r.printf("| %d | %s | %.0f | %d | %s / %s / %s | %s / %s (%d) | %s / %s | %s | %s | %s | %s | %s | %.2f | %.0f µs | %.2f | %d | %d |\n",
					p.Sidecars, x.name, ph.WritesPerSec, ph.LateWrites,
					ms(ph.Floor.P50), ms(ph.Floor.P99), ms(ph.Floor.Max), ms(ph.SelfLag.P50), ms(ph.SelfLag.P99), ph.SelfLag.N,
					ms(ph.Commit.P50), ms(ph.Commit.P99), probes, fp, vis, each, added,
					ph.SidecarCores, perNote, ph.MachineBusy, ph.Fetches, ph.Overflows)
			}
		}
		r.printf("\nSidecars: %s.\n", func() string {
			var parts []string
			for _, p := range props {
				parts = append(parts, fmt.Sprintf("%d started and ready in %.1f s, %s MiB RSS each", p.Sidecars, p.StartupSeconds, mib(p.RSSPerSidecar)))
			}
			return strings.Join(parts, "; ")
		}())
	}
	r.invDetails(invs)
	if len(ws.Runs) > 0 {
		r.printf("\nWarm start (`--max-memory %s`; %d rows, %s MiB of keys and values):\n\n", ws.MaxMemory, ws.Rows, mib(ws.RawBytes))
		r.printf("| run | ready s | load_took | VmRSS at ready MiB | VmRSS 3 s later MiB | VmHWM MiB |\n|---|---|---|---|---|---|\n")
		for i, x := range ws.Runs {
			r.printf("| %d | %.2f | %s | %s | %s | %s |\n", i+1, x.ReadySeconds, x.LoadTook, mib(x.RSSReady), mib(x.RSSSettled), mib(x.HWM))
		}
		r.printf("\nThe mirror's own accounting (INFO): index %s MiB, values %s MiB.\n",
			mib(ws.Median.IndexBytes), mib(ws.Median.ValueBytes))
	}
	if b, err := os.ReadFile(r.path("perf_self.txt")); err == nil && len(b) > 0 {
		r.printf("\nCPU profile of a sidecar under `redis-benchmark -t get -c 50` (perf, self time, top entries):\n\n```\n%s```\n", b)
		if c, err := os.ReadFile(r.path("perf_children.txt")); err == nil && len(c) > 0 {
			r.printf("\nThe same, with children (inclusive time):\n\n```\n%s```\n", c)
		}
	}
	if b, err := os.ReadFile(r.path("commands.txt")); err == nil {
		r.printf("\nCommands (`$W` is the run's temporary directory; every redis-benchmark line ran %s times "+
			"for each target, alternating):\n\n```\n%s```\n", reps, b)
	}
	for _, f := range []string{"select.sql", "upsert.sql", "upsert_plain.sql"} {
		if b, err := os.ReadFile(r.path(f)); err == nil {
			r.printf("\n`%s`:\n\n```\n%s```\n", f, b)
		}
	}
	r.printf("\n%s\n", endMarker)
	return r.b.String()
}

// replaceSection replaces the section from heading to endMarker in path,
// or appends it when the file has none.
func replaceSection(path, section string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	start := strings.Index(s, heading+"\n")
	if start < 0 {
		s = strings.TrimRight(s, "\n") + "\n\n" + section
	} else {
		end := strings.Index(s[start:], endMarker)
		if end < 0 {
			return fmt.Errorf("%s: %q without %q", path, heading, endMarker)
		}
		end += start + len(endMarker)
		s = s[:start] + strings.TrimRight(section, "\n") + s[end:]
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// jobOf names the background job a statement on cache_entries comes from:
// none of them runs per hit.
func jobOf(q string) string {
	switch {
	case strings.Contains(q, "SET last_accessed_at"):
		return "access-time flush"
	case strings.HasPrefix(q, "DELETE FROM cache_entries"):
		return "cleanup"
	case strings.Contains(q, "expires_at <=") && strings.Contains(q, "last_accessed_at >="):
		return "refresh scan"
	}
	return "other"
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ratio(a, b float64) string {
	if b == 0 {
		return "—"
	}
	if a/b < 0.1 {
		return fmt.Sprintf("%.4fx", a/b) // far below: enough digits to tell 0.005x from 0.01x
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func kilo(x float64) string {
	switch {
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.1fk", x/1e3)
	case x >= 1e3:
		return fmt.Sprintf("%.2fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

func ms(us float64) string { return fmt.Sprintf("%.2f", us/1000) }

func msDelta(us float64) string { return fmt.Sprintf("%+.2f", us/1000) }

func mib(b int64) string { return fmt.Sprintf("%.0f", float64(b)/(1<<20)) }

func round3(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }

func trimFloat(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
