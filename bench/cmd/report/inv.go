package main

import (
	"fmt"

	"pgmirror/bench/internal/benchutil"
)

// invalidation mirrors bench/cmd/invalidation's JSON, one element per
// number of sidecars.
type invalidation struct {
	Sidecars          int             `json:"sidecars"`
	Probes            int             `json:"probes"`
	Lost              int             `json:"lost"`
	Invalidation      benchutil.Stats `json:"invalidation"`
	Floor             benchutil.Stats `json:"floor"`
	DoCacheHitsPerSec float64         `json:"docache_hits_per_sec,omitempty"`
	GetsPerSec        float64         `json:"gets_per_sec,omitempty"`
}

// invalidations reads invalidation.json; nil when the run has none (results
// from before bench/cmd/invalidation was part of make bench).
func (r *report) invalidations() []invalidation {
	var xs []invalidation
	if !readJSON(r.path("invalidation.json"), &xs) {
		return nil
	}
	return xs
}

// invRows are the table's rows for client-side caching: per number of
// sidecars, commit → invalidation received beside the NOTIFY floor of the
// same probes, and DoCache hits against plain GETs.
func invRows(xs []invalidation) []row {
	var rows []row
	for _, x := range xs {
		lost := ""
		if x.Lost > 0 {
			lost = fmt.Sprintf(", %d of %d probes lost", x.Lost, x.Probes)
		}
		y := row{what: fmt.Sprintf("client-side caching, %d sidecar(s): commit → invalidation received by a tracking client on every sidecar, p50 / p99 ms (%d probes%s)",
			x.Sidecars, x.Invalidation.N, lost),
			pgm:   ms(x.Invalidation.P50) + " / " + ms(x.Invalidation.P99),
			base:  ms(x.Floor.P50) + " / " + ms(x.Floor.P99) + " raw NOTIFY floor, same probes",
			ratio: msDelta(x.Invalidation.P99-x.Floor.P99) + " ms p99"}
		if x.Sidecars == 1 {
			y.target = "p99 within 0.5 ms of the floor"
			y.verdict = verdict(x.Lost == 0 && x.Invalidation.N > 0 && x.Invalidation.P99-x.Floor.P99 <= 500)
		}
		rows = append(rows, y)
		if x.DoCacheHitsPerSec > 0 || x.GetsPerSec > 0 {
			rows = append(rows, row{what: fmt.Sprintf("… %d sidecar(s): rueidis DoCache of one key (client-side cache hits) vs plain GETs over the socket, one at a time, per second", x.Sidecars),
				pgm: kilo(x.DoCacheHitsPerSec) + " DoCache hits", base: kilo(x.GetsPerSec) + " GETs",
				ratio: ratio(x.DoCacheHitsPerSec, x.GetsPerSec)})
		}
	}
	return rows
}

// invDetails prints every percentile of the invalidation runs.
func (r *report) invDetails(xs []invalidation) {
	if len(xs) == 0 {
		return
	}
	r.printf("\nClient-side caching (bench/cmd/invalidation, database `inv`): per probe, every sidecar's tracking " +
		"connection (RESP3, `CLIENT TRACKING on`) GETs a key, then one upsert of it commits; times run from the payload's " +
		"sent_at to the slowest sidecar's `invalidate` push, and to a bare pq.Listener's receipt of the same change (the floor).\n\n")
	r.printf("| sidecars | probes (lost) | invalidation p50 / p90 / p99 / max ms | NOTIFY floor p50 / p90 / p99 / max ms | DoCache hits/s | GETs/s |\n|---|---|---|---|---|---|\n")
	for _, x := range xs {
		hits, gets := "—", "—"
		if x.DoCacheHitsPerSec > 0 || x.GetsPerSec > 0 {
			hits, gets = kilo(x.DoCacheHitsPerSec), kilo(x.GetsPerSec)
		}
		i, f := x.Invalidation, x.Floor
		r.printf("| %d | %d (%d) | %s / %s / %s / %s | %s / %s / %s / %s | %s | %s |\n", x.Sidecars, x.Probes, x.Lost,
			ms(i.P50), ms(i.P90), ms(i.P99), ms(i.Max), ms(f.P50), ms(f.P90), ms(f.P99), ms(f.Max), hits, gets)
	}
}
