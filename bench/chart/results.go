package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
)

// The result files of bench/run.sh and bench/fanout.sh, read as
// bench/cmd/report and bench/cmd/fanout read them. Only the fields the
// charts draw are declared.

// stats mirrors benchutil.Stats (µs).
type stats struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_us"`
	P99 float64 `json:"p99_us"`
}

// propagation is one entry of propagation.json (bench/cmd/propagation).
type propagation struct {
	Sidecars int `json:"sidecars"`
	Probed   struct {
		Probes      int   `json:"probes"`
		FloorProbes stats `json:"floor_probes"`
		Visible     stats `json:"visible_every"`
	} `json:"probed"`
}

// warmstart is warmstart.json (bench/cmd/warmstart).
type warmstart struct {
	Rows     int64 `json:"rows"`
	RawBytes int64 `json:"raw_bytes"`
	Runs     []struct {
		ReadySeconds float64 `json:"ready_seconds"`
		RSSReady     int64   `json:"rss_ready"`
	} `json:"runs"`
}

// fanout is fanout.json (bench/cmd/fanout).
type fanout struct {
	Quick bool `json:"quick"`
	Runs  []struct {
		Sidecars  int `json:"sidecars"`
		Listeners int `json:"listeners"`
		Phases    []struct {
			Name         string  `json:"name"`
			Writes       int     `json:"writes"`
			PGPerWriteUS float64 `json:"postgres_cpu_per_write_us"`
		} `json:"phases"`
	} `json:"runs"`
	Fits struct {
		All fit `json:"cpu_per_write_us"`
	} `json:"fits"`
}

// fit mirrors bench/cmd/fanout's Fit: y = A + B·x.
type fit struct {
	A      float64 `json:"a"`
	B      float64 `json:"b"`
	R2     float64 `json:"r2"`
	Points int     `json:"points"`
}

// readJSON reads path into v; a missing file is (false, nil).
func readJSON(path string, v any) (bool, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return true, nil
}

// rbRPS is the median requests/s of redis-benchmark's CSVs
// rb_<mode>_<cfg>_<target>_<rep>.csv in dir; ok is false when there are none.
func rbRPS(dir, mode, cfg, target string) (rps float64, ok bool, err error) {
	files, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("rb_%s_%s_%s_*.csv", mode, cfg, target)))
	var xs []float64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return 0, false, err
		}
		rows, err := csv.NewReader(fh).ReadAll()
		fh.Close()
		if err != nil || len(rows) < 2 {
			return 0, false, fmt.Errorf("%s: no CSV result", f)
		}
		for i, h := range rows[0] {
			if h == "rps" && i < len(rows[1]) {
				v, err := strconv.ParseFloat(rows[1][i], 64)
				if err != nil {
					return 0, false, fmt.Errorf("%s: rps %q: %w", f, rows[1][i], err)
				}
				xs = append(xs, v)
			}
		}
	}
	if len(xs) == 0 {
		return 0, false, nil
	}
	return median(xs), true, nil
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// pgbenchTPS reads pgbench_<name>.out in dir; ok is false when it is missing
// or has no tps line.
func pgbenchTPS(dir, name string) (float64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "pgbench_"+name+".out"))
	if err != nil {
		return 0, false
	}
	m := tpsRE.FindSubmatch(b)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	return v, err == nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
