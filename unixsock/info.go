package unixsock

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"pgmirror/mirror"
)

// cmdInfo answers INFO [section ...] with Redis-style sections plus # Mirror.
func cmdInfo(c *client, a [][]byte) {
	want := map[string]bool{}
	for _, s := range a[1:] {
		want[strings.ToLower(string(s))] = true
	}
	all := len(want) == 0 || want["all"] || want["everything"] || want["default"]
	var b strings.Builder
	for _, sec := range c.s.infoSections() {
		if !all && !want[strings.ToLower(sec.name)] {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		fmt.Fprintf(&b, "# %s\r\n", sec.name)
		for _, l := range sec.lines {
			fmt.Fprintf(&b, "%s:%s\r\n", l[0], l[1])
		}
	}
	c.verbatim(b.String())
}

// infoSection is one section of INFO: its name and its field:value lines.
type infoSection struct {
	name  string
	lines [][2]string
}

// infoSections returns every section of INFO, in order.
func (s *Server) infoSections() []infoSection {
	st := s.Mirror.Stats()
	version := s.Version
	if version == "" {
		version = "dev"
	}
	return []infoSection{
		{"Server", [][2]string{
			{"redis_version", redisVersion},
			{"pgmirror_version", version},
			{"redis_mode", "standalone"},
			{"os", runtime.GOOS + " " + runtime.GOARCH},
			{"process_id", fmt.Sprint(os.Getpid())},
			{"tcp_port", "0"},
			{"unix_socket", s.Socket},
			{"uptime_in_seconds", fmt.Sprint(int64(time.Since(s.started).Seconds()))},
		}},
		{"Clients", [][2]string{
			{"connected_clients", fmt.Sprint(s.Clients())},
			{"maxclients", fmt.Sprint(s.MaxClients)},
			{"client_buffers_bytes", fmt.Sprint(s.budget.total.Load())},
			{"max_client_buffers", fmt.Sprint(s.MaxClientBuffers)},
		}},
		{"Stats", [][2]string{
			{"total_connections_received", fmt.Sprint(s.stats.connections.Load())},
			{"total_commands_processed", fmt.Sprint(s.stats.commands.Load())},
			{"rejected_connections", fmt.Sprint(s.stats.rejected.Load())},
			{"protocol_errors", fmt.Sprint(s.stats.protocolErrors.Load())},
			{"evicted_clients", fmt.Sprint(s.stats.evictedBudget.Load())},
			{"client_output_timeouts", fmt.Sprint(s.stats.evictedOutput.Load())},
			{"subscribers_dropped", fmt.Sprint(s.stats.subscribersDropped.Load())},
			{"keyspace_events_dropped", fmt.Sprint(s.pub.dropped.Load())},
			{"pubsub_channels", fmt.Sprint(s.hub.channelCount())},
			{"pubsub_patterns", fmt.Sprint(s.hub.uniquePatterns())},
			{"accept_errors", fmt.Sprint(s.stats.acceptErrors.Load())},
			{"loop_commands", fmt.Sprint(s.stats.loopCommands.Load())},
			{"loop_handoffs", fmt.Sprint(s.stats.handoffs.Load())},
			{"loop_spin_hits", fmt.Sprint(s.stats.spinHits.Load())},
			{"loop_spin_usec", fmt.Sprint(s.stats.spinNanos.Load() / 1000)},
			{"keyspace_hits", fmt.Sprint(st.Hits)},
			{"keyspace_misses", fmt.Sprint(st.Misses)},
			{"evicted_keys", "0"},
		}},
		// loading is what clients' ready checks wait on (ioredis, and
		// redis-cli --wait-for-loading): 1 until the first load completed.
		{"Persistence", [][2]string{{"loading", loadingField(st.State)}, {"async_loading", "0"}}},
		{"Keyspace", [][2]string{{"db0", fmt.Sprintf("keys=%d,expires=0,avg_ttl=0", st.Entries)}}},
		{"Mirror", s.infoMirror(st)},
	}
}

// infoMirror returns the lines of INFO's # Mirror section.
func (s *Server) infoMirror(st mirror.Stats) [][2]string {
	lastReload := "never"
	if !st.LastReload.IsZero() {
		lastReload = st.LastReload.UTC().Format(time.RFC3339)
	}
	lines := [][2]string{
		{"state", st.State.String()},
		{"namespace", s.Namespace},
		{"entries", fmt.Sprint(st.Entries)},
		{"tombstones", fmt.Sprint(st.Tombstones)},
		{"index_bytes", fmt.Sprint(st.IndexBytes)},
		{"value_bytes", fmt.Sprint(st.ValueBytes)},
		{"value_budget_bytes", fmt.Sprint(st.ValueBudget)},
		{"hits", fmt.Sprint(st.Hits)},
		{"misses", fmt.Sprint(st.Misses)},
		{"fetches", fmt.Sprint(st.Fetches)},
		{"fetched_keys", fmt.Sprint(st.FetchedKeys)},
		{"notifications_applied", fmt.Sprint(st.Batches)},
		{"notifications_skipped_older", fmt.Sprint(st.Skipped)},
		{"value_sets_dropped", fmt.Sprint(st.SetsDropped)},
		{"reloads", fmt.Sprint(st.Reloads)},
		{"reload_failures", fmt.Sprint(st.ReloadFailures)},
		{"drift", fmt.Sprint(st.Drift)},
		{"last_reload", lastReload},
		{"last_reload_ms", fmt.Sprint(st.LastReloadTook.Milliseconds())},
		{"listener_connected", fmt.Sprint(st.Connected)},
		{"clock_lead_us", fmt.Sprint(st.ClockLead.Microseconds())},
	}
	if s.Info != nil {
		lines = append(lines, s.Info()...)
	}
	return lines
}

// loadingField is INFO's loading field: "1" while the mirror loads, as Redis
// while it loads its data set.
func loadingField(st mirror.State) string {
	if st == mirror.StateLoading {
		return "1"
	}
	return "0"
}
