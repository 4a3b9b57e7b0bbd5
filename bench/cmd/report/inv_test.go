package main

import (
	"strings"
	"testing"
)

func TestInvalidationRows(t *testing.T) {
	r := &report{dir: "testdata/inv"}
	xs := r.invalidations()
	if len(xs) != 2 {
		t.Fatalf("read %d results, want 2", len(xs))
	}
	rows := invRows(xs)
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3 (1 sidecar: latency and DoCache; 10 sidecars: latency): %+v", len(rows), rows)
	}
	one, hits, ten := rows[0], rows[1], rows[2]
	if one.pgm != "0.81 / 2.31" || one.base != "0.64 / 2.02 raw NOTIFY floor, same probes" || one.ratio != "+0.29 ms p99" {
		t.Errorf("1 sidecar row: %+v", one)
	}
	if one.target == "" || one.verdict != "met" {
		t.Errorf("1 sidecar: p99 0.29 ms above the floor should meet the 0.5 ms target: %+v", one)
	}
	if hits.pgm != "1.25M DoCache hits" || hits.base != "21.5k GETs" || hits.ratio != "58.14x" {
		t.Errorf("DoCache row: %+v", hits)
	}
	if !strings.Contains(ten.what, "10 sidecar(s)") || !strings.Contains(ten.what, "2 of 300 probes lost") ||
		ten.pgm != "2.48 / 9.87" || ten.ratio != "+6.77 ms p99" || ten.target != "" {
		t.Errorf("10 sidecars row: %+v", ten)
	}

	r.invDetails(xs)
	out := r.b.String()
	for _, want := range []string{
		"| 1 | 300 (0) | 0.81 / 1.20 / 2.31 / 2.95 | 0.64 / 1.01 / 2.02 / 2.65 | 1.25M | 21.5k |",
		"| 10 | 300 (2) | 2.48 / 4.10 / 9.87 / 12.10 | 0.70 / 1.30 / 3.10 / 4.10 | — | — |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("details lack %q:\n%s", want, out)
		}
	}
}

func TestInvalidationVerdictNotMet(t *testing.T) {
	x := invalidation{Sidecars: 1, Probes: 10}
	x.Invalidation.N, x.Invalidation.P99, x.Floor.P99 = 10, 3000, 2000
	if v := invRows([]invalidation{x})[0].verdict; v != "**not met**" {
		t.Errorf("p99 1 ms above the floor: verdict %q", v)
	}
	x.Invalidation.P99, x.Lost = 2100, 1
	if v := invRows([]invalidation{x})[0].verdict; v != "**not met**" {
		t.Errorf("a lost probe: verdict %q", v)
	}
}

// A results directory from before bench/cmd/invalidation: no rows, no details.
func TestInvalidationAbsent(t *testing.T) {
	r := &report{dir: t.TempDir()}
	xs := r.invalidations()
	if xs != nil || invRows(xs) != nil {
		t.Fatalf("no invalidation.json: %v", xs)
	}
	r.invDetails(xs)
	if r.b.Len() != 0 {
		t.Fatalf("details without results: %q", r.b.String())
	}
}
