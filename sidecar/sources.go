package sidecar

import (
	"fmt"
	"time"

	"pgmirror/admin"
)

// listenerInfo adds the listener's counters to INFO.
func (s *Sidecar) listenerInfo() [][2]string {
	st := s.Listener.Stats()
	last := "never"
	if !st.LastNotification.IsZero() {
		last = st.LastNotification.UTC().Format(time.RFC3339Nano)
	}
	return [][2]string{
		{"notifications_received", fmt.Sprint(st.Received)},
		{"notifications_undecodable", fmt.Sprint(st.DecodeErrors)},
		{"notification_queue_overflows", fmt.Sprint(st.Overflows)},
		{"listener_reconnects", fmt.Sprint(st.Reconnects)},
		{"last_notification", last},
		{"lag_ms", fmt.Sprintf("%.3f", float64(st.Lag.Microseconds())/1000)},
	}
}

// jobStats gives the admin server the jobs' counters.
func (s *Sidecar) jobStats() admin.JobStats {
	st := s.Jobs.Stats()
	return admin.JobStats{
		LoaderRuns:     st.LoaderRuns,
		LoaderFailures: st.LoaderFailures,
		AccessFlushes:  st.AccessFlushes,
		AccessRows:     st.AccessRows,
		Refreshes: map[string]int64{
			"ok":      st.Refreshed,
			"removed": st.RefreshRemoved,
			"fenced":  st.RefreshFenced,
			"error":   st.RefreshFailed,
		},
		CleanupDeletions: st.CleanupDeleted,
	}
}
