package admin

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"pgmirror/jobs"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
	"pgmirror/unixsock"
)

// namespace prefixes every metric name.
const namespace = "pgmirror"

// Resync reasons, the values of the reason label of pgmirror_resyncs_total:
// the reasons of the mirror's reload events (mirror.KindReload), normalised to a small set.
const (
	ReasonConnected   = "connected"   // the listener's first connection
	ReasonReconnected = "reconnected" // the listener reconnected: notifications may be lost
	ReasonSighup      = "sighup"      // SIGHUP
	ReasonCommand     = "command"     // PGMIRROR.RESYNC
	ReasonPeriodic    = "periodic"    // --reload-interval
	ReasonGap         = "gap"         // notifications lost: queue overflow
	ReasonRepair      = "repair"      // payloads dropped (undecodable, unsigned, forged): a spaced-out repair
	ReasonRetry       = "retry"       // a failed reload tried again
	ReasonOther       = "other"
)

// Resync results, the values of the result label of pgmirror_resyncs_total.
const (
	ResultOK        = "ok"
	ResultError     = "error"
	ResultCancelled = "cancelled" // stopped by shutdown
)

var (
	resyncReasons = []string{ReasonConnected, ReasonReconnected, ReasonSighup, ReasonCommand,
		ReasonPeriodic, ReasonGap, ReasonRepair, ReasonRetry, ReasonOther}
	// notificationKinds are the kinds of mirror.Stats.Applied, exported even before any arrived.
	notificationKinds = []string{"set", "fetch", "delete", "truncate"}
)

// NormalizeReason maps a reload reason as the mirror reports it
// ("connected", "reconnected", "SIGHUP", "PGMIRROR.RESYNC", "periodic",
// "notification queue overflow", "repair: ...", "retry: ...") to one of the
// Reason constants.
func NormalizeReason(reason string) string {
	r := strings.ToLower(strings.TrimSpace(reason))
	switch {
	case strings.HasPrefix(r, "retry"):
		return ReasonRetry
	case r == "connected":
		return ReasonConnected
	case r == "reconnected":
		return ReasonReconnected
	case r == "sighup":
		return ReasonSighup
	case r == "pgmirror.resync" || r == "command":
		return ReasonCommand
	case r == "periodic":
		return ReasonPeriodic
	case strings.HasPrefix(r, "repair"):
		return ReasonRepair
	case strings.Contains(r, "overflow"), strings.Contains(r, "undecodable"), r == "gap":
		return ReasonGap
	}
	return ReasonOther
}

// instruments are the metrics observed as events happen, not read from counters.
type instruments struct {
	resyncs        *prometheus.CounterVec
	reloadDuration *prometheus.HistogramVec
	reloadRows     prometheus.Counter
	lag            prometheus.Histogram
	writeBatch     *prometheus.HistogramVec
	driftStreak    prometheus.Gauge
}

func newInstruments() *instruments {
	in := &instruments{
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "resyncs_total",
			Help: "Reloads of the mirror from a Postgres snapshot, by reason (connected, reconnected, sighup, " +
				"command = PGMIRROR.RESYNC, periodic, gap = notifications lost, repair = notifications dropped, retry, other) " +
				"and result (ok, error, cancelled).",
		}, []string{"reason", "result"}),
		reloadDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "reload_duration_seconds",
			Help:    "Duration of successful reloads, by mode: full (whole snapshot) or ranges (key-range checksums, differing ranges re-read).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"mode"}),
		reloadRows: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "reload_rows_read_total",
			Help: "Rows read from Postgres snapshots by reloads.",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "propagation_lag_seconds",
			Help: "Time from a writer's clock_timestamp() to the notification being applied to this mirror " +
				"(clocks of different hosts may differ; negative values count as 0).",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		writeBatch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "write_batch_duration_seconds",
			Help: "Time from a write batch (group commit) being taken from the queue to its outcome: committed and applied " +
				"to this mirror (ok), failed with nothing written (unavailable), or commit outcome unknown (unknown).",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"result"}),
		driftStreak: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "reload_drift_streak",
			Help: "Consecutive successful reloads that found drift (keys to correct), not counting those after a reconnect " +
				"or a notification queue overflow, where drift is expected; 0 after one that found none.",
		}),
	}
	// Export the usual series at 0, so rate() and increase() see their first event.
	for _, reason := range resyncReasons {
		in.resyncs.WithLabelValues(reason, ResultOK)
		in.resyncs.WithLabelValues(reason, ResultError)
	}
	in.reloadDuration.WithLabelValues("full")
	in.reloadDuration.WithLabelValues("ranges")
	for _, r := range []string{pgstore.BatchCommitted, pgstore.BatchUnavailable, pgstore.BatchUnknown} {
		in.writeBatch.WithLabelValues(r)
	}
	return in
}

func (in *instruments) collectors() []prometheus.Collector {
	return []prometheus.Collector{in.resyncs, in.reloadDuration, in.reloadRows, in.lag, in.writeBatch, in.driftStreak}
}

// driftExpected are the reload reasons after which drift is no surprise:
// notifications were lost, or there was nothing yet to drift from.
var driftExpected = map[string]bool{ReasonConnected: true, ReasonReconnected: true, ReasonGap: true}

// ObserveReload records a reload's end, as the mirror reports it (an event of kind mirror.KindReload).
func (s *Server) ObserveReload(reason string, res mirror.ReloadResult, err error) {
	result := ResultOK
	switch {
	case errors.Is(err, context.Canceled):
		result = ResultCancelled
	case err != nil:
		result = ResultError
	}
	normalized := NormalizeReason(reason)
	s.inst.resyncs.WithLabelValues(normalized, result).Inc()
	s.inst.reloadRows.Add(float64(max(res.Rows, 0)))
	if err == nil && !driftExpected[normalized] {
		if res.Drift > 0 {
			s.inst.driftStreak.Inc()
		} else {
			s.inst.driftStreak.Set(0)
		}
	}
	if err == nil {
		mode := "full"
		if res.Ranges > 0 {
			mode = "ranges"
		}
		s.inst.reloadDuration.WithLabelValues(mode).Observe(res.Duration.Seconds())
	}
}

// ObserveLag records the propagation lag of an applied notification; New
// registers it with the listener (Listener.HandleLag). It is cheap: it runs
// on the apply path.
func (s *Server) ObserveLag(lag time.Duration) {
	s.inst.lag.Observe(max(lag, 0).Seconds())
}

// ObserveWriteBatch records a write batch's duration by its result; New
// registers it with the writer (Writer.HandleBatch). It runs on the write
// path: it is cheap.
func (s *Server) ObserveWriteBatch(b pgstore.BatchDone) {
	s.inst.writeBatch.WithLabelValues(b.Result).Observe(b.Took.Seconds())
}

func registerRuntimeCollectors(reg *prometheus.Registry) {
	reg.MustRegister(collectors.NewGoCollector())
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// desc builds a pgmirror_ descriptor.
func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(namespace+"_"+name, help, labels, nil)
}

// The metrics read from the components' counters at scrape time.
var (
	descBuildInfo = desc("build_info", "Always 1; labels: pgmirror version and Go version.", "version", "goversion")
	descReady     = desc("ready", "1 when /readyz answers 200: first load complete and the listener connected or down for less than --max-staleness.")
	descState     = desc("mirror_state", "The mirror's state, one series set to 1: loading (first load not complete), ready, stale (listener down).", "state")

	// mirror
	descHits          = desc("hits_total", "Reads answered with a value (GET, MGET, ...), including values fetched again after eviction.")
	descMisses        = desc("misses_total", "Reads of absent keys (answered from the key index, no query).")
	descLoads         = desc("loader_reads_total", "Reads of absent keys under a loader prefix, handed to the loader.")
	descFetches       = desc("fetches_total", "Queries for values the value cache lacked (evicted, dropped, or too large to travel in a notification).")
	descFetchedKeys   = desc("fetched_keys_total", "Keys those fetch queries asked for.")
	descNotifications = desc("notifications_applied_total", "Notification payloads applied to the mirror (one payload may pack several changes).")
	descChanges       = desc("changes_applied_total", "Changes applied to the mirror, by kind: set (value inline), fetch (value fetched by key), delete, truncate; from notifications and from this sidecar's own writes.", "kind")
	descSkipped       = desc("changes_skipped_total", "Changes not applied because the mirror already held a newer state (a reload's snapshot, or this sidecar's own write).")
	descDrift         = desc("reload_drift_keys_total", "Keys reloads had to correct: changes notifications did not deliver.")
	descForged        = desc("reload_forged_keys_total", "Keys reloads restored from the table because a notification had set them claiming a transaction id no transaction had (forged; part of reload_drift_keys_total).")
	descLastReload    = desc("last_reload_timestamp_seconds", "Unix time of the last successful reload; absent before the first.")
	descEntries       = desc("entries", "Keys present in the mirror.")
	descTombstones    = desc("tombstones", "Delete markers held while a reload or fetch is in flight.")
	descIndexBytes    = desc("index_bytes", "Estimated memory of the key index, counted against --max-memory; includes the small values it holds.")
	descInlineBytes   = desc("index_value_bytes", "Bytes of the small values held in the key index itself (part of index_bytes).")
	descInlineEvicted = desc("index_values_moved_total", "Small values moved from the key index to the value cache to keep the index within its share of --max-memory.")
	descValueBytes    = desc("value_bytes", "Cost of the values held by the value cache (ristretto).")
	descValueBudget   = desc("value_budget_bytes", "What the value cache may hold: --max-memory less the key index.")
	descSetsDropped   = desc("value_cache_sets_dropped_total", "Value-cache sets dropped by ristretto's buffers under contention (the value is fetched again when read).")
	descSetsRejected  = desc("value_cache_sets_rejected_total", "Value-cache sets rejected by ristretto's admission policy.")
	descEvicted       = desc("value_cache_evictions_total", "Values evicted from the value cache to stay within its budget.")
	descMaxMemory     = desc("max_memory_bytes", "--max-memory: the budget of the whole mirror (index_bytes + value_bytes stay within it).")
	descMaxStaleness  = desc("max_staleness_seconds", "--max-staleness: how long the listener may be down before the sidecar stops being ready.")
	descDeferred      = desc("own_writes_deferred_total", "Changes of this sidecar's own writes not applied at commit but left to their notification, because another of its writes on the key could not be ordered against them (the writer waits up to 2 s for that notification before answering).")
	descClockLead     = desc("clock_lead_seconds", "Estimated lead of this host's clock over the database clock (used to judge expiry).")
	descMessages      = desc("pubsub_messages_total", "Application pub/sub messages received on the notification channel (PUBLISH on any sidecar, pgmirror_publish_channel in SQL).")
	descMessagesDrop  = desc("pubsub_messages_dropped_total", "Application pub/sub messages dropped because the mirror's event handlers fell behind.")

	// listener
	descConnected    = desc("listener_connected", "1 while the LISTEN connection is up.")
	descDownSeconds  = desc("listener_down_seconds", "Seconds the LISTEN connection has been down; 0 while connected.")
	descReceived     = desc("notifications_received_total", "Notifications received on the LISTEN connection.")
	descUndecodable  = desc("notifications_undecodable_total", "Notifications that could not be decoded (dropped; also counted in notifications_rejected_total).")
	descNotifDropped = desc("notifications_rejected_total", "Notifications dropped, by reason: malformed (undecodable), unsigned (no MAC, refused by --unsigned-payloads), "+
		"unknown_key, bad_mac (forged or altered), parts (a part out of sequence or an incomplete publish), replayed (authentic but applied already, "+
		"or older than the last reload's snapshot). All but replayed schedule a coalesced, rate-limited repair reload.", "reason")
	descOverflows    = desc("notification_queue_overflows_total", "Notifications dropped because the listener's queue was full (causes a resync).")
	descReconnects   = desc("listener_reconnects_total", "Reconnections of the LISTEN connection (each causes a resync).")
	descGenuineDrops = desc("notifications_genuine_drops_total", "Notifications dropped as unverifiable (unknown key) that proved authentic once the key was read: each caused an immediate resync.")
	descLastNotifAge = desc("last_notification_age_seconds", "Seconds since the last notification was received; absent before the first.")

	// socket server
	descClients        = desc("clients_connected", "Clients connected to the Unix socket.")
	descConnections    = desc("client_connections_total", "Client connections accepted.")
	descRejected       = desc("client_connections_rejected_total", "Client connections refused because --max-clients was reached.")
	descProtocolErrors = desc("client_protocol_errors_total", "Client connections closed for breaking the protocol.")
	descClientEvicted  = desc("clients_evicted_total", "Clients disconnected by the server, by reason: budget (--max-client-buffers passed; the largest go first), output_timeout (replies not drained within --client-output-timeout), subscriber_backlog (a subscriber with more than --subscriber-buffer messages or 1 MiB waiting).", "reason")
	descClientBuffers  = desc("client_buffers_bytes", "Bytes of client buffers (commands being read and run, replies and pushes waiting, subscriptions), counted against --max-client-buffers.")
	descClientBudget   = desc("client_buffers_budget_bytes", "--max-client-buffers.")
	descKeyEventsDrop  = desc("keyspace_events_dropped_total", "Keyspace events not published because the publisher's queue was full (subscribers miss them).")
	descAcceptErrors   = desc("client_accept_errors_total", "Accepts of client connections that failed and were retried with a backoff (out of file descriptors, ...).")
	descLoopCommands   = desc("client_loop_commands_total", "Commands the event loops answered themselves (reads the mirror holds, PING, ...), without a handoff.")
	descHandoffs       = desc("client_handoffs_total", "Times a client left its event loop for a goroutine of its own, to run a command that may wait (writes, loader misses, transactions, scripts) or costs more than a lookup.")
	descSpinHits       = desc("client_loop_spin_hits_total", "Times an event loop serving a few busy clients polled for their next command (--loop-spin) and found it without sleeping.")
	descSpinSeconds    = desc("client_loop_spin_seconds_total", "Time the event loops spent polling for a few busy clients' next command instead of sleeping (--loop-spin): the CPU spent to answer them sooner.")
	descCommands       = desc("commands_total", "Client commands run, by command name (lower case; unknown commands as \"unknown\").", "command")

	// writer
	descWriterBatches = desc("writer_batches_total", "Write batches (group commits) sent to Postgres.")
	descWriterOps     = desc("writer_ops_total", "Write commands in those batches.")
	descWriterErrors  = desc("writer_batch_errors_total", "Write batches that failed, by kind: unavailable (nothing was written) or unknown (commit outcome unknown; keys re-read).", "kind")

	// jobs
	descLoaderRuns     = desc("loader_runs_total", "Loader computations run (for reads and refreshes).")
	descLoaderFailures = desc("loader_failures_total", "Loader computations that failed.")
	descAccessFlushes  = desc("access_flushes_total", "Batched last_accessed_at updates run.")
	descAccessRows     = desc("access_rows_updated_total", "Rows whose last_accessed_at the access flushes advanced.")
	descRefreshes      = desc("refreshes_total", "Refreshes of expiring keys, by result: ok (stored), removed (the loader found no row), fenced (the claim was lost; not stored), error.", "result")
	descCleanup        = desc("cleanup_deleted_rows_total", "Rows deleted by the cleanup (unused past --retention, or long expired).")
	descQueueUsage     = desc("notification_queue_usage_ratio", "Postgres's pg_notification_queue_usage() (0 to 1), read in the background every 15 s (never at the scrape); "+
		"absent before the first reading. When the queue is full every write that notifies fails.")
	descQueueSampled = desc("notification_queue_usage_timestamp_seconds", "Unix time of the last successful reading of notification_queue_usage_ratio; absent before the first.")
)

var allDescs = []*prometheus.Desc{
	descBuildInfo, descReady, descState,
	descHits, descMisses, descLoads, descFetches, descFetchedKeys, descNotifications, descChanges, descSkipped,
	descDrift, descForged, descLastReload, descEntries, descTombstones, descIndexBytes, descInlineBytes, descInlineEvicted, descValueBytes,
	descValueBudget, descSetsDropped, descSetsRejected, descEvicted, descClockLead, descMaxMemory, descMaxStaleness, descDeferred,
	descMessages, descMessagesDrop,
	descConnected, descDownSeconds, descReceived, descUndecodable, descNotifDropped, descOverflows, descReconnects, descLastNotifAge,
	descGenuineDrops,
	descClients, descConnections, descRejected, descProtocolErrors, descCommands,
	descClientEvicted, descClientBuffers, descClientBudget, descKeyEventsDrop, descAcceptErrors, descLoopCommands, descHandoffs, descSpinHits, descSpinSeconds,
	descWriterBatches, descWriterOps, descWriterErrors,
	descLoaderRuns, descLoaderFailures, descAccessFlushes, descAccessRows, descRefreshes, descCleanup,
	descQueueUsage, descQueueSampled,
}

// collector reads the sources of a Server at scrape time.
type collector struct{ s *Server }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect reads every source now.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s, e := c.s, emitter{ch: ch, now: time.Now()}
	version := s.cfg.Version
	if version == "" {
		version = "unknown"
	}
	e.gauge(descBuildInfo, 1, version, runtime.Version())
	if s.cfg.MaxMemory > 0 {
		e.gauge(descMaxMemory, float64(s.cfg.MaxMemory))
	}
	e.gauge(descMaxStaleness, s.cfg.MaxStaleness.Seconds())
	if s.src.Mirror != nil {
		e.mirror(s.src.Mirror.Stats(), s.cfg.MaxStaleness)
	} else {
		e.gauge(descReady, 0)
	}
	if s.src.Listener != nil {
		e.listener(s.src.Listener.Stats())
	}
	if s.src.Socket != nil {
		e.socket(s.src.Socket.Stats())
	}
	if s.src.Commands != nil {
		for name, n := range s.src.Commands() {
			e.counter(descCommands, float64(n), name)
		}
	}
	if s.src.Writer != nil {
		st := s.src.Writer.Stats()
		e.counter(descWriterBatches, float64(st.Batches))
		e.counter(descWriterOps, float64(st.Ops))
		e.counter(descWriterErrors, float64(st.Unavailable), "unavailable")
		e.counter(descWriterErrors, float64(st.Unknown), "unknown")
	}
	if s.src.Jobs != nil {
		e.jobs(s.src.Jobs.Stats())
	}
}

// emitter sends the metrics of one scrape.
type emitter struct {
	ch  chan<- prometheus.Metric
	now time.Time
}

func (e emitter) counter(d *prometheus.Desc, v float64, labels ...string) {
	e.ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func (e emitter) gauge(d *prometheus.Desc, v float64, labels ...string) {
	e.ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// mirror sends the mirror's state and counters, and the listener's
// connection as the mirror saw it.
func (e emitter) mirror(st mirror.Stats, maxStaleness time.Duration) {
	e.gauge(descReady, b2f(Readiness(st, maxStaleness, e.now).Ready))
	for _, state := range []mirror.State{mirror.StateLoading, mirror.StateReady, mirror.StateStale} {
		e.gauge(descState, b2f(stateOf(st) == state), state.String())
	}
	e.counter(descHits, float64(st.Hits))
	e.counter(descMisses, float64(st.Misses))
	e.counter(descLoads, float64(st.Loads))
	e.counter(descFetches, float64(st.Fetches))
	e.counter(descFetchedKeys, float64(st.FetchedKeys))
	e.counter(descNotifications, float64(st.Batches))
	kinds := map[string]bool{}
	for _, k := range notificationKinds {
		kinds[k] = true
		e.counter(descChanges, float64(st.Applied[k]), k)
	}
	for k, v := range st.Applied { // kinds added to the mirror later
		if !kinds[k] {
			e.counter(descChanges, float64(v), k)
		}
	}
	e.counter(descSkipped, float64(st.Skipped))
	e.counter(descDeferred, float64(st.Contested))
	e.counter(descDrift, float64(st.Drift))
	e.counter(descForged, float64(st.Forged))
	e.counter(descMessages, float64(st.Messages))
	e.counter(descMessagesDrop, float64(st.MessagesDropped))
	e.counter(descNotifDropped, float64(st.Replays), "replayed")
	if !st.LastReload.IsZero() {
		e.gauge(descLastReload, float64(st.LastReload.UnixNano())/1e9)
	}
	e.gauge(descEntries, float64(st.Entries))
	e.gauge(descTombstones, float64(st.Tombstones))
	e.gauge(descIndexBytes, float64(st.IndexBytes))
	e.gauge(descInlineBytes, float64(st.InlineBytes))
	e.counter(descInlineEvicted, float64(st.InlineEvicted))
	e.gauge(descValueBytes, float64(st.ValueBytes))
	e.gauge(descValueBudget, float64(st.ValueBudget))
	e.counter(descSetsDropped, float64(st.SetsDropped))
	e.counter(descSetsRejected, float64(st.SetsRejected))
	e.counter(descEvicted, float64(st.Evicted))
	e.gauge(descClockLead, st.ClockLead.Seconds())
	e.gauge(descConnected, b2f(st.Connected))
	down := 0.0
	if !st.Connected && !st.DownSince.IsZero() {
		down = e.now.Sub(st.DownSince).Seconds()
	}
	e.gauge(descDownSeconds, down)
}

// listener sends the listener's counters.
func (e emitter) listener(st listener.Stats) {
	e.counter(descReceived, float64(st.Received))
	e.counter(descUndecodable, float64(st.DecodeErrors))
	for _, reason := range listener.RejectReasons {
		e.counter(descNotifDropped, float64(st.Rejected[reason]), reason)
	}
	e.counter(descOverflows, float64(st.Overflows))
	e.counter(descReconnects, float64(st.Reconnects))
	e.counter(descGenuineDrops, float64(st.GenuineDrops))
	if !st.LastNotification.IsZero() {
		e.gauge(descLastNotifAge, max(e.now.Sub(st.LastNotification), 0).Seconds())
	}
}

// socket sends the socket server's counters.
func (e emitter) socket(st unixsock.Stats) {
	e.gauge(descClients, float64(st.Clients))
	e.counter(descConnections, float64(st.Connections))
	e.counter(descRejected, float64(st.Rejected))
	e.counter(descProtocolErrors, float64(st.ProtocolErrors))
	e.counter(descClientEvicted, float64(st.EvictedBudget), "budget")
	e.counter(descClientEvicted, float64(st.EvictedOutput), "output_timeout")
	e.counter(descClientEvicted, float64(st.SubscribersDropped), "subscriber_backlog")
	e.gauge(descClientBuffers, float64(st.ClientBuffers))
	e.gauge(descClientBudget, float64(st.MaxClientBuffers))
	e.counter(descKeyEventsDrop, float64(st.KeyEventsDropped))
	e.counter(descAcceptErrors, float64(st.AcceptErrors))
	e.counter(descLoopCommands, float64(st.LoopCommands))
	e.counter(descHandoffs, float64(st.Handoffs))
	e.counter(descSpinHits, float64(st.LoopSpinHits))
	e.counter(descSpinSeconds, st.LoopSpinTime.Seconds())
	e.tracking(st.Tracking) // metrics_tracking.go
}

// jobs sends the background jobs' counters.
func (e emitter) jobs(st jobs.Stats) {
	e.counter(descLoaderRuns, float64(st.LoaderRuns))
	e.counter(descLoaderFailures, float64(st.LoaderFailures))
	e.counter(descAccessFlushes, float64(st.AccessFlushes))
	e.counter(descAccessRows, float64(st.AccessRows))
	e.counter(descRefreshes, float64(st.Refreshed), "ok")
	e.counter(descRefreshes, float64(st.RefreshRemoved), "removed")
	e.counter(descRefreshes, float64(st.RefreshFenced), "fenced")
	e.counter(descRefreshes, float64(st.RefreshFailed), "error")
	e.counter(descCleanup, float64(st.CleanupDeleted))
	if !st.QueueSampled.IsZero() {
		e.gauge(descQueueUsage, st.QueueUsage)
		e.gauge(descQueueSampled, float64(st.QueueSampled.UnixNano())/1e9)
	}
}
