package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testdata/run is a full results directory in the shape bench/run.sh writes,
// with the figures of the prototype table: every acceptance line,
// the CPU rows and the per-run details are checked in the printed section.
func TestBuildWithCPUAndAcceptance(t *testing.T) {
	out := (&report{dir: "testdata/run"}).build()
	for _, want := range []string{
		"### Acceptance: GET at Redis's speed and cost",
		"Medians of 3 interleaved repetitions. CPU is the server process's utime+stime from `/proc/PID/stat`",
		"- GET -c 1 ≥ 1.0x Redis: pgmirror 26.0k/s, Redis 24.5k/s = 1.06x (p99 0.063 ms vs 0.063 ms = 1.00x) — met\n",
		"- GET -c 50 ≥ 0.9x Redis with p99 ≤ 1.2x Redis's: pgmirror 75.0k/s, Redis 118.0k/s = 0.64x; " +
			"p99 1.2 ms vs 1 ms = 1.20x — **NOT met**\n",
		"- GET -c 50 -P 16 ≥ 1.1x Redis: pgmirror 682.0k/s, Redis 813.0k/s = 0.84x (p99 5.695 ms vs 2.223 ms = 2.56x) — **NOT met**\n",
		"- CPU per GET at -c 50 ≤ 1.3x Redis's (pgmirror: the sidecar process only): pgmirror 10.0 µs, " +
			"Redis 5.90 µs = 1.69x — **NOT met**\n",
		"both with synchronous_commit on: pgmirror 9.52k/s, pgbench 6.59k/s = 1.45x; synchronous_commit on for both — met\n",
		"- no SELECT on cache_entries during the GET runs (pg_stat_statements; background jobs aside): 7800000 hits, " +
			"0 misses: 0 SELECTs on cache_entries outside the background jobs, 0 other statements on it, 0 value fetches; " +
			"background jobs: access-time flush 142, refresh scan 3, cleanup 1 (of which 3 SELECTs",
		"3 of 6 met.",
		// Medians of three runs: 480, 500, 530 ticks of 500,000 GETs at 100 ticks/s; 290, 295, 310 for Redis.
		"| GET -c 50: server CPU per request, µs (/proc/PID/stat; pgmirror: the sidecar process only) | 10.0 | 5.90 Redis | 1.69x |",
		"| GET -c 50: p50 / p99 latency, ms | 0.611 / 1.2 | 0.42 / 1 Redis | p99 1.20x |",
		"| GET -c 50 -P 16: server CPU per request, µs (/proc/PID/stat; pgmirror: the sidecar process only) | 1.58 | 1.23 Redis | 1.28x |",
		"| SET -c 50: server CPU per request, µs (/proc/PID/stat; pgmirror: the sidecar process only, Postgres's whole " +
			"cluster in brackets) | 30.0 [Postgres 180] | 6.00 Redis | 5.00x |",
		"| 20.0 [Postgres 233] | 1.00 (coarse: 3 ticks) Redis | 20.00x |",
		"75.0k (p50 0.611, p99 1.3 ms; CPU 10.0 µs/req in 500 ticks, Postgres 0.04 µs/req)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the section lacks %q", want)
		}
	}
	if i, j := strings.Index(out, "### Acceptance"), strings.Index(out, "| measurement |"); i < 0 || j < i {
		t.Errorf("the acceptance block should come before the table (at %d, table at %d)", i, j)
	}
	if t.Failed() {
		t.Logf("section:\n%s", out)
	}
}

// A smoke run says it is not an acceptance run.
func TestAcceptanceQuick(t *testing.T) {
	r := &report{}
	r.acceptBlock([]acceptLine{{"x", "y", true}}, "1", true)
	if s := r.b.String(); !strings.Contains(s, "not an acceptance run") || !strings.Contains(s, "- x: y — met\n") ||
		!strings.Contains(s, "1 of 1 met.") {
		t.Errorf("smoke-run block: %q", s)
	}
}

// Each figure on both sides of its threshold.
func TestAcceptanceThresholds(t *testing.T) {
	base := func() map[string]rbResult {
		return map[string]rbResult{
			"getc1redis": {rps: 100}, "getc50redis": {rps: 100, p99: 1, cpu: 10},
			"getc50p16redis": {rps: 100}, "setc50redis": {rps: 1000},
			"getc1pgmirror": {rps: 100}, "getc50pgmirror": {rps: 90, p99: 1.2, cpu: 13},
			"getc50p16pgmirror": {rps: 110}, "setc50pgmirror": {rps: 50},
		}
	}
	plain := pgbenchResult{tps: 50}
	st := statements{kinds: map[string]int64{}}
	for i, x := range acceptance(base(), plain, st, "on") {
		if !x.met {
			t.Errorf("line %d at its threshold: not met: %+v", i, x)
		}
	}
	for _, c := range []struct {
		line   int
		key    string
		mutate func(*rbResult)
	}{
		{0, "getc1pgmirror", func(x *rbResult) { x.rps = 99.9 }},
		{1, "getc50pgmirror", func(x *rbResult) { x.rps = 89.9 }},
		{1, "getc50pgmirror", func(x *rbResult) { x.p99 = 1.21 }},
		{2, "getc50p16pgmirror", func(x *rbResult) { x.rps = 109.9 }},
		{3, "getc50pgmirror", func(x *rbResult) { x.cpu = 13.1 }},
		{3, "getc50pgmirror", func(x *rbResult) { x.cpu = math.NaN() }},
		{4, "setc50pgmirror", func(x *rbResult) { x.rps = 49.9 }},
	} {
		rb := base()
		x := rb[c.key]
		c.mutate(&x)
		rb[c.key] = x
		got := acceptance(rb, plain, st, "on")[c.line]
		if got.met {
			t.Errorf("%s changed: line %d still met: %+v", c.key, c.line, got)
		}
	}
	if got := acceptance(base(), plain, st, "on")[4].figures; got != "pgmirror 50/s, pgbench 50/s = 1.00x; synchronous_commit on for both" {
		t.Errorf("SET figures: %q", got)
	}
	// Commits that were not durable do not count, nor an unknown setting.
	for _, sc := range []string{"off", "local", ""} {
		if got := acceptance(base(), plain, st, sc)[4]; got.met {
			t.Errorf("synchronous_commit %q: SET line met: %+v", sc, got)
		}
	}
	// 0.8995x prints as 0.90x with two decimals: the third tells it from the threshold.
	rb := base()
	rb["getc50pgmirror"] = rbResult{rps: 89.95, p99: 1, cpu: 10}
	if got := acceptance(rb, plain, st, "on")[1]; got.met || !strings.Contains(got.figures, "= 0.900x") {
		t.Errorf("just under 0.9x: %+v", got)
	}
}

// A GET answered from Postgres shows as a SELECT on cache_entries outside
// the background jobs, and fails the last line and the table's row.
func TestStatementsSelectOnCacheEntries(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"pgss_before.tsv": "1\t10\t10\tSELECT value, version FROM cache_entries WHERE key = $1\n",
		"pgss_after.tsv": "1\t12\t12\tSELECT value, version FROM cache_entries WHERE key = $1\n" +
			"2\t3\t0\tSELECT e.key FROM cache_entries e WHERE e.expires_at <= clock_timestamp() AND e.last_accessed_at >= now()\n" +
			"3\t5\t5\tUPDATE cache_entries SET last_accessed_at = now() WHERE key = ANY($1)\n",
		"get_hits.tsv": "hits\t100\nmisses\t0\nfetches\t0\n",
	}
	for name, s := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	st := (&report{dir: dir}).getStatements()
	if st.selects != 2 || st.jobSelects != 3 || st.kinds["access-time flush"] != 5 {
		t.Fatalf("selects %d (want 2), refresh-scan selects %d (want 3), kinds %v", st.selects, st.jobSelects, st.kinds)
	}
	last := acceptance(map[string]rbResult{}, pgbenchResult{}, st, "on")[5]
	if last.met || !strings.Contains(last.figures, "2 SELECTs on cache_entries outside the background jobs") {
		t.Errorf("acceptance line: %+v", last)
	}
	if v := st.row().verdict; v != "**not met**" {
		t.Errorf("table row verdict %q", v)
	}
}

// Results from before the .cpu files: no CPU rows, the CPU line not met.
func TestRedisBenchmarkWithoutCPU(t *testing.T) {
	dir := t.TempDir()
	csvs, _ := filepath.Glob("testdata/run/rb_*.csv")
	for _, f := range csvs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rb := map[string]rbResult{}
	rows := (&report{dir: dir}).rbRows("3", rb)
	if len(rows) != 12 {
		t.Errorf("%d rows without CPU figures, want 12 (throughput and latency of 6 settings)", len(rows))
	}
	for _, x := range rows {
		if strings.Contains(x.what, "CPU") {
			t.Errorf("a CPU row without CPU figures: %+v", x)
		}
	}
	if got := acceptance(rb, pgbenchResult{}, statements{kinds: map[string]int64{}}, "on")[3]; got.met ||
		got.figures != "no CPU figures in this run" {
		t.Errorf("CPU line: %+v", got)
	}
}

func TestProcStatFields(t *testing.T) {
	c := cpuSample{serverTicks: 295, clkTck: 100, requests: 500000}
	if got := us(c.perRequest(c.serverTicks)); got != "5.90" {
		t.Errorf("295 ticks at 100/s over 500,000 requests: %s µs, want 5.90", got)
	}
}
