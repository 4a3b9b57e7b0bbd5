package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
)

// txResult mirrors bench/cmd/txbench's JSON.
type txResult struct {
	OpsPerSec float64 `json:"ops_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	Ops       int     `json:"ops"`
}

// txModes are txbench's modes as the table names them.
var txModes = []struct{ mode, name string }{
	{"multi", "MULTI/EXEC of 5 SETs -c 50"},
	{"evalsha", "EVALSHA lock release (GET + DEL) -c 50"},
}

// txbench reads the JSONs of mode and target and takes medians; ok is false
// when the run has none (results from before txbench existed).
func (r *report) txbench(mode, target string) (res rbResult, ok bool) {
	files, _ := filepath.Glob(r.path(fmt.Sprintf("tx_%s_%s_*.json", mode, target)))
	slices.Sort(files)
	var rps, p50, p99 []float64
	for _, f := range files {
		var x txResult
		if !readJSON(f, &x) {
			continue
		}
		rps, p50, p99 = append(rps, x.OpsPerSec), append(p50, x.P50ms), append(p99, x.P99ms)
		res.runs = append(res.runs, fmt.Sprintf("%s (p50 %.3f, p99 %.3f ms)", kilo(x.OpsPerSec), x.P50ms, x.P99ms))
	}
	if len(rps) == 0 {
		return res, false
	}
	res.rps, res.p50, res.p99 = median(rps), median(p50), median(p99)
	return res, true
}

// txRows are the table's rows for txbench's modes, pgmirror against Redis.
func (r *report) txRows(reps string) []row {
	var rows []row
	for _, m := range txModes {
		p, ok1 := r.txbench(m.mode, "pgmirror")
		q, ok2 := r.txbench(m.mode, "redis")
		if !ok1 || !ok2 {
			continue
		}
		rows = append(rows,
			row{what: m.name + ": operations/s (median of " + reps + ")",
				pgm: kilo(p.rps), base: kilo(q.rps) + " Redis", ratio: ratio(p.rps, q.rps)},
			row{what: m.name + ": p50 / p99 latency, ms",
				pgm:   fmt.Sprintf("%.3f / %.3f", p.p50, p.p99),
				base:  fmt.Sprintf("%.3f / %.3f Redis", q.p50, q.p99),
				ratio: "p99 " + ratio(p.p99, q.p99)})
	}
	return rows
}

// txDetails prints every txbench run.
func (r *report) txDetails() {
	var lines []string
	for _, m := range txModes {
		p, ok1 := r.txbench(m.mode, "pgmirror")
		q, ok2 := r.txbench(m.mode, "redis")
		if ok1 && ok2 {
			lines = append(lines, fmt.Sprintf("| %s | %s | %s |\n", m.name,
				strings.Join(p.runs, "; "), strings.Join(q.runs, "; ")))
		}
	}
	if len(lines) == 0 {
		return
	}
	r.printf("\nbench/cmd/txbench, every run (pgmirror and Redis alternated; a MULTI/EXEC operation is one " +
		"TxPipelined call; an EVALSHA operation follows an untimed SET of the lock key to the token, so the DEL runs):\n\n")
	r.printf("| test | pgmirror | Redis |\n|---|---|---|\n")
	for _, l := range lines {
		r.printf("%s", l)
	}
}
