package admin_test

import (
	"testing"

	"pgmirror/admin"
	"pgmirror/unixsock"
)

// TestTrackingMetrics: the socket server's tracking counters are exported.
func TestTrackingMetrics(t *testing.T) {
	src := fakeSources()
	src.Socket = statsFunc[unixsock.Stats](func() unixsock.Stats {
		return unixsock.Stats{Tracking: unixsock.TrackingStats{Keys: 91, Clients: 92, Invalidations: 93, Evicted: 94}}
	})
	cfg := local()
	f := scrape(t, serve(t, admin.New(cfg, src)))
	for name, want := range map[string]float64{"pgmirror_tracking_keys": 91, "pgmirror_tracking_clients": 92,
		"pgmirror_tracking_invalidations_total": 93, "pgmirror_tracking_keys_evicted_total": 94} {
		if got := f.value(t, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}
