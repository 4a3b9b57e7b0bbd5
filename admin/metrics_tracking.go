package admin

import "pgmirror/unixsock"

// The metrics of client-side caching (CLIENT TRACKING), from the socket
// server's counters.
var (
	descTrackedKeys     = desc("tracking_keys", "Keys in the client-side caching table (CLIENT TRACKING), bounded by --tracking-table-max-keys.")
	descTrackingClients = desc("tracking_clients", "Client connections with CLIENT TRACKING on.")
	descInvalidations   = desc("tracking_invalidations_total", "Invalidation messages sent to tracking clients (a flush-everything counts once per client).")
	descTrackingEvicted = desc("tracking_keys_evicted_total", "Tracked keys evicted past --tracking-table-max-keys (each invalidated at its clients).")
)

func init() {
	allDescs = append(allDescs, descTrackedKeys, descTrackingClients, descInvalidations, descTrackingEvicted)
}

// tracking sends the counters of client-side caching.
func (e emitter) tracking(st unixsock.TrackingStats) {
	e.gauge(descTrackedKeys, float64(st.Keys))
	e.gauge(descTrackingClients, float64(st.Clients))
	e.counter(descInvalidations, float64(st.Invalidations))
	e.counter(descTrackingEvicted, float64(st.Evicted))
}
