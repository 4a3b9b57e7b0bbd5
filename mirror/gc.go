package mirror

import (
	"os"
	"runtime/debug"
)

// The garbage collector's target while the mirror manages it (ManageGC):
// the heap may grow beyond what the mirror holds by a quarter of it, and
// by at least gcMinHeadroom, before the next collection. Go's default
// (GOGC=100) lets it grow by all of it: a mirror of 1,000,000 small keys
// (about 150 MiB in the index) would take about 300 MiB between
// collections, twice the raw data. At 25% the process stays near 1.25x
// what it holds; a collection costs about 0.1 s of CPU per million keys
// (their entries hold no pointers; the tables' slots are what is scanned),
// and reads allocate nothing, so it is rare.
const (
	gcMinPercent  = 25
	gcMaxPercent  = 100
	gcMinHeadroom = 32 << 20
)

// gcFromEnv is set when the environment chose the collector's target.
var gcFromEnv = os.Getenv("GOGC") != ""

// tuneGC sets the collector's target from what the mirror holds, if
// ManageGC asks for it and the environment did not set GOGC.
func (m *Mirror) tuneGC() {
	if !m.opts.ManageGC || gcFromEnv {
		return
	}
	held := m.IndexBytes()
	if met := m.values.Metrics; met != nil {
		held += int64(met.CostAdded() - met.CostEvicted())
	}
	pct := int64(gcMaxPercent)
	if held > 0 {
		pct = min(max(gcMinHeadroom*100/held, gcMinPercent), gcMaxPercent)
	}
	// Only steps of 5 points: no call for every small change.
	pct -= pct % 5
	if old := m.gcPercent.Swap(pct); old != pct {
		debug.SetGCPercent(int(pct))
		m.log.Debug("garbage collector target set", "gogc", pct, "mirror_bytes", held)
	}
}
