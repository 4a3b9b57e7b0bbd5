package main

import (
	"encoding/csv"
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// rbResult is the median of one redis-benchmark configuration (or of one
// txbench mode, which fills only rps, p50, p99 and runs).
type rbResult struct {
	rps, p50, p99 float64 // requests/s, ms, ms
	runs          []string
	// CPU per request in µs, medians over the runs: the server process
	// (for pgmirror the sidecar alone) and the whole Postgres cluster.
	// NaN when the run wrote no .cpu files (results from before they existed).
	cpu, pgCPU float64
	// minTicks is the fewest clock ticks the server used in one run: the
	// figures are only as fine as a tick (10 ms at CLK_TCK 100).
	minTicks int64
}

// coarseTicks: below this many ticks in a run, ±1 tick is over 5%.
const coarseTicks = 20

// cpuSample is one run's .cpu file, written by bench/run.sh's rb.
type cpuSample struct {
	serverTicks, postgresTicks, clkTck, requests int64
}

func (c cpuSample) perRequest(ticks int64) float64 {
	return float64(ticks) / float64(c.clkTck) * 1e6 / float64(c.requests)
}

// readCPU reads a .cpu file; ok is false when there is none.
func (r *report) readCPU(path string) (c cpuSample, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return c, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, "\t")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "server_ticks":
			c.serverTicks = n
		case "postgres_ticks":
			c.postgresTicks = n
		case "clk_tck":
			c.clkTck = n
		case "requests":
			c.requests = n
		}
	}
	if c.clkTck <= 0 || c.requests <= 0 {
		log.Fatalf("%s: clk_tck and requests must be positive", path)
	}
	return c, true
}

// readCSV reads the result line of one redis-benchmark --csv run by its
// header's column names.
func readCSV(path string) func(name string) float64 {
	fh, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	rows, err := csv.NewReader(fh).ReadAll()
	fh.Close()
	if err != nil || len(rows) < 2 {
		log.Fatalf("%s: no CSV result", path)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	return func(name string) float64 {
		i, ok := col[name]
		if !ok {
			return 0
		}
		v, _ := strconv.ParseFloat(rows[1][i], 64)
		return v
	}
}

// redisBenchmark reads the CSVs (and .cpu files) of mode, cfg and target
// and takes medians.
func (r *report) redisBenchmark(mode, cfg, target string) rbResult {
	files, _ := filepath.Glob(r.path(fmt.Sprintf("rb_%s_%s_%s_*.csv", mode, cfg, target)))
	slices.Sort(files)
	var rps, p50, p99, cpu, pgCPU []float64
	res := rbResult{minTicks: math.MaxInt64}
	for _, f := range files {
		get := readCSV(f)
		rps = append(rps, get("rps"))
		p50 = append(p50, get("p50_latency_ms"))
		p99 = append(p99, get("p99_latency_ms"))
		run := fmt.Sprintf("%s (p50 %s, p99 %s ms", kilo(get("rps")),
			trimFloat(get("p50_latency_ms")), trimFloat(get("p99_latency_ms")))
		if c, ok := r.readCPU(strings.TrimSuffix(f, ".csv") + ".cpu"); ok {
			cpu = append(cpu, c.perRequest(c.serverTicks))
			pgCPU = append(pgCPU, c.perRequest(c.postgresTicks))
			res.minTicks = min(res.minTicks, c.serverTicks)
			run += fmt.Sprintf("; CPU %s µs/req in %s, Postgres %s µs/req", us(cpu[len(cpu)-1]),
				plural(c.serverTicks, "tick"), us(pgCPU[len(pgCPU)-1]))
		}
		res.runs = append(res.runs, run+")")
	}
	if len(rps) == 0 {
		log.Fatalf("no redis-benchmark results for %s %s %s", mode, cfg, target)
	}
	res.rps, res.p50, res.p99 = median(rps), median(p50), median(p99)
	res.cpu, res.pgCPU = math.NaN(), math.NaN()
	if len(cpu) == len(rps) { // a CPU figure for every run, or none at all
		res.cpu, res.pgCPU = median(cpu), median(pgCPU)
	}
	return res
}

// cfgName is how the table names redis-benchmark's client settings.
var cfgName = map[string]string{"c1": "-c 1", "c50": "-c 50", "c50p16": "-c 50 -P 16"}

// rbRows reads every redis-benchmark configuration, pgmirror and Redis, into
// rb (keyed mode+cfg+target) and returns the table's rows for them: per
// setting the requests/s, the p50 / p99 latency and the server's CPU per
// request, each beside Redis's with the ratio.
func (r *report) rbRows(reps string, rb map[string]rbResult) []row {
	var rows []row
	for _, mode := range []string{"get", "set"} {
		for _, cfg := range []string{"c1", "c50", "c50p16"} {
			p, q := r.redisBenchmark(mode, cfg, "pgmirror"), r.redisBenchmark(mode, cfg, "redis")
			rb[mode+cfg+"pgmirror"], rb[mode+cfg+"redis"] = p, q
			name := strings.ToUpper(mode) + " " + cfgName[cfg]
			tput, lat := row{}, row{}
			tput.what = name + ": requests/s (median of " + reps + ")"
			tput.pgm, tput.base, tput.ratio = kilo(p.rps), kilo(q.rps)+" Redis", ratio(p.rps, q.rps)
			lat.what = name + ": p50 / p99 latency, ms"
			lat.pgm = trimFloat(p.p50) + " / " + trimFloat(p.p99)
			lat.base = trimFloat(q.p50) + " / " + trimFloat(q.p99) + " Redis"
			lat.ratio = "p99 " + ratio(p.p99, q.p99)
			if mode == "get" {
				tput.target, tput.verdict = "≥ 1.0x Redis", verdict(p.rps >= q.rps)
				lat.target, lat.verdict = "p99 ≤ 1.1x Redis", verdict(p.p99 <= 1.1*q.p99)
			}
			rows = append(rows, tput, lat)
			if cpu, ok := cpuRow(name, mode, p, q); ok {
				rows = append(rows, cpu)
			}
		}
	}
	return rows
}

// cpuRow is the row of the server CPU per request; ok is false when the
// results have no CPU figures.
func cpuRow(name, mode string, p, q rbResult) (row, bool) {
	if math.IsNaN(p.cpu) || math.IsNaN(q.cpu) {
		return row{}, false
	}
	x := row{what: name + ": server CPU per request, µs (/proc/PID/stat; pgmirror: the sidecar process only",
		pgm: us(p.cpu) + coarse(p), base: us(q.cpu) + coarse(q) + " Redis", ratio: ratio(p.cpu, q.cpu)}
	if mode == "set" {
		// A SET's work is mostly Postgres's; the sidecar's share alone would flatter it.
		x.what += ", Postgres's whole cluster in brackets"
		x.pgm += " [Postgres " + us(p.pgCPU) + "]"
	}
	x.what += ")"
	return x, true
}

// coarse marks a CPU figure from runs of fewer than coarseTicks ticks.
func coarse(x rbResult) string {
	if x.minTicks < coarseTicks {
		return fmt.Sprintf(" (coarse: %s)", plural(x.minTicks, "tick"))
	}
	return ""
}

// us prints microseconds with about three significant digits.
func us(x float64) string {
	switch {
	case math.IsNaN(x):
		return "—"
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}

func plural(n int64, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
