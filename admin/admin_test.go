package admin_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"pgmirror/admin"
	"pgmirror/jobs"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
	"pgmirror/unixsock"
)

func TestReadinessRule(t *testing.T) {
	now := time.Now()
	const bound = 30 * time.Second
	cases := []struct {
		name   string
		st     mirror.Stats
		bound  time.Duration
		ready  bool
		state  string
		reason string
	}{
		{"loading, listener down", mirror.Stats{State: mirror.StateLoading}, bound, false, "loading", "first load not complete"},
		{"loading, listener up", mirror.Stats{State: mirror.StateLoading, Connected: true}, bound, false, "loading", "first load not complete"},
		{"loaded and connected", mirror.Stats{State: mirror.StateReady, Connected: true}, bound, true, "ready", ""},
		{"down within the bound", mirror.Stats{State: mirror.StateStale, DownSince: now.Add(-29 * time.Second)}, bound, true, "stale", ""},
		{"down past the bound", mirror.Stats{State: mirror.StateStale, DownSince: now.Add(-31 * time.Second)}, bound, false, "stale", "longer than --max-staleness 30s"},
		{"down exactly the bound", mirror.Stats{State: mirror.StateStale, DownSince: now.Add(-bound)}, bound, false, "stale", "longer than --max-staleness"},
		{"zero bound: down at all", mirror.Stats{State: mirror.StateStale, DownSince: now.Add(-time.Millisecond)}, 0, false, "stale", "longer than --max-staleness 0s"},
		{"never connected", mirror.Stats{State: mirror.StateStale}, bound, false, "stale", "listener not connected"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := admin.Readiness(c.st, c.bound, now)
			if got.Ready != c.ready || got.State != c.state || !strings.Contains(got.Reason, c.reason) || (c.reason == "" && got.Reason != "") {
				t.Fatalf("Readiness = %+v, want ready=%v state=%q reason containing %q", got, c.ready, c.state, c.reason)
			}
		})
	}
}

func TestNormalizeReason(t *testing.T) {
	for in, want := range map[string]string{
		"connected":                             admin.ReasonConnected,
		"reconnected":                           admin.ReasonReconnected,
		"SIGHUP":                                admin.ReasonSighup,
		"PGMIRROR.RESYNC":                       admin.ReasonCommand,
		"periodic":                              admin.ReasonPeriodic,
		"notification queue overflow":           admin.ReasonGap,
		"undecodable notification":              admin.ReasonGap,
		"retry: SIGHUP":                         admin.ReasonRetry,
		"retry: retry: periodic":                admin.ReasonRetry,
		"repair: notification dropped: bad_mac": admin.ReasonRepair,
		"repair: replay window full":            admin.ReasonRepair,
		"something new":                         admin.ReasonOther,
		"":                                      admin.ReasonOther,
	} {
		if got := admin.NormalizeReason(in); got != want {
			t.Errorf("NormalizeReason(%q) = %q, want %q", in, got, want)
		}
	}
}

// statsFunc is a source whose Stats returns what the function returns.
type statsFunc[T any] func() T

func (f statsFunc[T]) Stats() T { return f() }

// Handle makes a statsFunc a mirror source; these tests send no events.
func (f statsFunc[T]) Handle(func(mirror.Event)) {}

// fakeListener is a listener source; it keeps the lag observers registered with it.
type fakeListener struct {
	statsFunc[listener.Stats]
	lag []func(time.Duration)
}

func (l *fakeListener) HandleLag(h func(time.Duration)) { l.lag = append(l.lag, h) }

// fakeWriter is a writer source; it keeps the batch observers registered with it.
type fakeWriter struct {
	statsFunc[pgstore.WriterStats]
	batch []func(pgstore.BatchDone)
}

func (w *fakeWriter) HandleBatch(h func(pgstore.BatchDone)) { w.batch = append(w.batch, h) }

// fakeSources has every source, with fixed counters.
func fakeSources() admin.Sources {
	down := time.Now().Add(-2 * time.Second)
	return admin.Sources{
		Mirror: statsFunc[mirror.Stats](func() mirror.Stats {
			return mirror.Stats{State: mirror.StateStale, Entries: 42, Tombstones: 3, IndexBytes: 5000, InlineBytes: 2500, InlineEvicted: 4, ValueBytes: 7000,
				ValueBudget: 1 << 20, Hits: 11, Misses: 12, Loads: 10, Fetches: 13, FetchedKeys: 14, Batches: 15,
				Applied: map[string]int64{"set": 16, "fetch": 17, "delete": 18, "truncate": 19}, Skipped: 20,
				SetsDropped: 21, SetsRejected: 22, Evicted: 23, Drift: 24, Forged: 25, Replays: 26, Contested: 27, Messages: 28, MessagesDropped: 29, LastReload: time.Unix(1700000000, 0),
				DownSince: down, ClockLead: 5 * time.Millisecond}
		}),
		Listener: &fakeListener{statsFunc: func() listener.Stats {
			return listener.Stats{Received: 31, DecodeErrors: 32, Overflows: 33, Reconnects: 34, GenuineDrops: 36,
				Rejected:         map[string]int64{listener.RejectMalformed: 32, listener.RejectBadMAC: 35},
				LastNotification: time.Now().Add(-3 * time.Second)}
		}},
		Socket: statsFunc[unixsock.Stats](func() unixsock.Stats {
			return unixsock.Stats{Clients: 41, Connections: 42, Rejected: 43, ProtocolErrors: 44, EvictedBudget: 45,
				EvictedOutput: 46, SubscribersDropped: 47, ClientBuffers: 48, MaxClientBuffers: 49, KeyEventsDropped: 81, AcceptErrors: 82}
		}),
		Commands: func() map[string]int64 { return map[string]int64{"get": 51, "set": 52, "unknown": 53} },
		Writer: &fakeWriter{statsFunc: func() pgstore.WriterStats {
			return pgstore.WriterStats{Batches: 61, Ops: 62, Unavailable: 63, Unknown: 64}
		}},
		Jobs: statsFunc[jobs.Stats](func() jobs.Stats {
			return jobs.Stats{LoaderRuns: 71, LoaderFailures: 76, AccessFlushes: 72, AccessRows: 77,
				Refreshed: 73, RefreshFailed: 74, CleanupDeleted: 75, QueueUsage: 0.25, QueueSampled: time.Unix(1700000100, 0)}
		}),
	}
}

// fakeServer has every source, with fixed counters.
func fakeServer(cfg admin.Config) *admin.Server {
	cfg.MaxStaleness, cfg.Version = time.Minute, "v1.2.3"
	return admin.New(cfg, fakeSources())
}

func TestMetricsFromSources(t *testing.T) {
	srv := fakeServer(local())
	srv.ObserveReload("SIGHUP", mirror.ReloadResult{Rows: 100, Duration: 30 * time.Millisecond}, nil)
	srv.ObserveReload("retry: SIGHUP", mirror.ReloadResult{Ranges: 8, Rows: 5, Duration: time.Second}, nil)
	srv.ObserveReload("periodic", mirror.ReloadResult{}, errors.New("boom"))
	srv.ObserveReload("reconnected", mirror.ReloadResult{}, context.Canceled)
	srv.ObserveLag(300 * time.Microsecond)
	srv.ObserveLag(-time.Millisecond) // clock skew
	f := scrape(t, serve(t, srv))

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pgmirror_build_info", []string{"version", "v1.2.3", "goversion", runtimeVersion()}, 1},
		{"pgmirror_ready", nil, 1}, // stale for 2s, bound 1m
		{"pgmirror_mirror_state", []string{"state", "stale"}, 1},
		{"pgmirror_mirror_state", []string{"state", "ready"}, 0},
		{"pgmirror_mirror_state", []string{"state", "loading"}, 0},
		{"pgmirror_entries", nil, 42},
		{"pgmirror_tombstones", nil, 3},
		{"pgmirror_index_bytes", nil, 5000},
		{"pgmirror_index_value_bytes", nil, 2500},
		{"pgmirror_index_values_moved_total", nil, 4},
		{"pgmirror_value_bytes", nil, 7000},
		{"pgmirror_value_budget_bytes", nil, 1 << 20},
		{"pgmirror_hits_total", nil, 11},
		{"pgmirror_misses_total", nil, 12},
		{"pgmirror_loader_reads_total", nil, 10},
		{"pgmirror_fetches_total", nil, 13},
		{"pgmirror_fetched_keys_total", nil, 14},
		{"pgmirror_notifications_applied_total", nil, 15},
		{"pgmirror_changes_applied_total", []string{"kind", "set"}, 16},
		{"pgmirror_changes_applied_total", []string{"kind", "fetch"}, 17},
		{"pgmirror_changes_applied_total", []string{"kind", "delete"}, 18},
		{"pgmirror_changes_applied_total", []string{"kind", "truncate"}, 19},
		{"pgmirror_changes_skipped_total", nil, 20},
		{"pgmirror_value_cache_sets_dropped_total", nil, 21},
		{"pgmirror_value_cache_sets_rejected_total", nil, 22},
		{"pgmirror_value_cache_evictions_total", nil, 23},
		{"pgmirror_reload_drift_keys_total", nil, 24},
		{"pgmirror_last_reload_timestamp_seconds", nil, 1700000000},
		{"pgmirror_clock_lead_seconds", nil, 0.005},
		{"pgmirror_listener_connected", nil, 0},
		{"pgmirror_notifications_received_total", nil, 31},
		{"pgmirror_notifications_undecodable_total", nil, 32},
		{"pgmirror_notifications_rejected_total", []string{"reason", "malformed"}, 32},
		{"pgmirror_notifications_rejected_total", []string{"reason", "bad_mac"}, 35},
		{"pgmirror_notifications_rejected_total", []string{"reason", "unknown_key"}, 0},
		{"pgmirror_notifications_rejected_total", []string{"reason", "replayed"}, 26},
		{"pgmirror_reload_forged_keys_total", nil, 25},
		{"pgmirror_notification_queue_overflows_total", nil, 33},
		{"pgmirror_listener_reconnects_total", nil, 34},
		{"pgmirror_clients_connected", nil, 41},
		{"pgmirror_client_connections_total", nil, 42},
		{"pgmirror_client_connections_rejected_total", nil, 43},
		{"pgmirror_client_protocol_errors_total", nil, 44},
		{"pgmirror_clients_evicted_total", []string{"reason", "budget"}, 45},
		{"pgmirror_clients_evicted_total", []string{"reason", "output_timeout"}, 46},
		{"pgmirror_clients_evicted_total", []string{"reason", "subscriber_backlog"}, 47},
		{"pgmirror_client_buffers_bytes", nil, 48},
		{"pgmirror_client_buffers_budget_bytes", nil, 49},
		{"pgmirror_keyspace_events_dropped_total", nil, 81},
		{"pgmirror_pubsub_messages_total", nil, 28},
		{"pgmirror_pubsub_messages_dropped_total", nil, 29},
		{"pgmirror_client_accept_errors_total", nil, 82},
		{"pgmirror_commands_total", []string{"command", "get"}, 51},
		{"pgmirror_commands_total", []string{"command", "set"}, 52},
		{"pgmirror_commands_total", []string{"command", "unknown"}, 53},
		{"pgmirror_writer_batches_total", nil, 61},
		{"pgmirror_writer_ops_total", nil, 62},
		{"pgmirror_writer_batch_errors_total", []string{"kind", "unavailable"}, 63},
		{"pgmirror_writer_batch_errors_total", []string{"kind", "unknown"}, 64},
		{"pgmirror_loader_runs_total", nil, 71},
		{"pgmirror_access_flushes_total", nil, 72},
		{"pgmirror_loader_failures_total", nil, 76},
		{"pgmirror_access_rows_updated_total", nil, 77},
		{"pgmirror_refreshes_total", []string{"result", "ok"}, 73},
		{"pgmirror_refreshes_total", []string{"result", "error"}, 74},
		{"pgmirror_cleanup_deleted_rows_total", nil, 75},
		{"pgmirror_resyncs_total", []string{"reason", "sighup", "result", "ok"}, 1},
		{"pgmirror_resyncs_total", []string{"reason", "retry", "result", "ok"}, 1},
		{"pgmirror_resyncs_total", []string{"reason", "periodic", "result", "error"}, 1},
		{"pgmirror_resyncs_total", []string{"reason", "periodic", "result", "ok"}, 0},
		{"pgmirror_resyncs_total", []string{"reason", "reconnected", "result", "cancelled"}, 1},
		{"pgmirror_resyncs_total", []string{"reason", "command", "result", "ok"}, 0},
		{"pgmirror_reload_rows_read_total", nil, 105},
		{"pgmirror_reload_duration_seconds", []string{"mode", "full"}, 1}, // histogram count
		{"pgmirror_reload_duration_seconds", []string{"mode", "ranges"}, 1},
		{"pgmirror_propagation_lag_seconds", nil, 2},
	} {
		if got := f.value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if d := f.value(t, "pgmirror_listener_down_seconds"); d < 2 || d > 60 {
		t.Errorf("pgmirror_listener_down_seconds = %v, want about 2", d)
	}
	if a := f.value(t, "pgmirror_last_notification_age_seconds"); a < 2.5 || a > 60 {
		t.Errorf("pgmirror_last_notification_age_seconds = %v, want about 3", a)
	}
	// Negative lag counts as 0: the sum is the one positive observation.
	if h := f["pgmirror_propagation_lag_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleSum() != 0.0003 {
		t.Errorf("lag sum = %v, want 0.0003", h.GetSampleSum())
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := f[name]; !ok {
			t.Errorf("no %s: Go and process collectors missing", name)
		}
	}
	for name, fam := range f {
		if strings.HasPrefix(name, "pgmirror_") && fam.GetHelp() == "" {
			t.Errorf("%s has no HELP", name)
		}
	}
}

func TestMetricsLint(t *testing.T) {
	srv := fakeServer(admin.Config{})
	problems, err := testutil.GatherAndLint(srv.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "pgmirror_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
}

// Nil sources leave their metrics out; without a mirror the server is never ready.
func TestMetricsWithoutSources(t *testing.T) {
	srv := admin.New(local(), admin.Sources{})
	base := serve(t, srv)
	f := scrape(t, base)
	if got := f.value(t, "pgmirror_ready"); got != 0 {
		t.Errorf("pgmirror_ready = %v without a mirror", got)
	}
	for _, name := range []string{"pgmirror_hits_total", "pgmirror_loader_runs_total", "pgmirror_writer_ops_total",
		"pgmirror_commands_total", "pgmirror_clients_connected", "pgmirror_notifications_received_total"} {
		if _, ok := f[name]; ok {
			t.Errorf("%s exported without its source", name)
		}
	}
	if _, ok := f.lookup("pgmirror_resyncs_total", "reason", "sighup", "result", "ok"); !ok {
		t.Errorf("resync series not exported at 0")
	}
	code, st := readyz(t, base)
	if code != http.StatusServiceUnavailable || st.Ready || st.Reason == "" {
		t.Fatalf("/readyz without a mirror = %d %+v", code, st)
	}
}

func TestHTTP(t *testing.T) {
	log, buf := testLogger()
	cfg := local()
	cfg.Logger = log
	srv := fakeServer(cfg)
	base := serve(t, srv)

	if code, body := get(t, base+"/healthz"); code != http.StatusOK || !strings.Contains(body, `"ok"`) {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, st := readyz(t, base); code != http.StatusOK || !st.Ready || st.State != "stale" || st.ListenerDownSeconds < 2 {
		t.Errorf("/readyz = %d %+v", code, st)
	}
	if code, _ := get(t, base+"/nope"); code != http.StatusNotFound {
		t.Errorf("/nope = %d, want 404", code)
	}
	resp, err := client.Post(base+"/readyz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz = %d, want 405", resp.StatusCode)
	}
	resp, err = client.Head(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD /healthz = %d, want 200", resp.StatusCode)
	}
	if logs := buf.String(); !strings.Contains(logs, "admin HTTP listening") || !strings.Contains(logs, `path=/readyz`) {
		t.Errorf("logs lack the listen line or the request line:\n%s", logs)
	}
}

func TestOpenErrors(t *testing.T) {
	// A taken port fails at Open, not later.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := admin.New(admin.Config{Addr: ln.Addr().String()}, admin.Sources{})
	if err := srv.Open(); err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("Open on a taken port: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close after a failed Open: %v", err)
	}
	if err := admin.New(admin.Config{Addr: "256.1.1.1:9187"}, admin.Sources{}).Open(); err == nil {
		t.Fatal("Open on a bad address succeeded")
	}

	// "" disables: nothing listens, Open and Close do nothing.
	off := admin.New(admin.Config{}, admin.Sources{})
	if err := off.Open(); err != nil {
		t.Fatal(err)
	}
	if off.ListenAddr() != "" {
		t.Fatalf("disabled server bound %s", off.ListenAddr())
	}
	if err := off.Close(); err != nil {
		t.Fatal(err)
	}
	off.ObserveLag(time.Millisecond) // instruments work without HTTP

	// Close releases the port, at once when nothing is in flight; a second
	// Close does nothing, and a closed server does not open again.
	s := admin.New(local(), admin.Sources{})
	if err := s.Close(); err != nil {
		t.Fatalf("Close before Open: %v", err)
	}
	s = admin.New(local(), admin.Sources{})
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	addr := s.ListenAddr()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port not released by Close: %v", err)
	}
	ln2.Close()
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Open(); err == nil {
		t.Fatal("Open after Close succeeded")
	}
	select {
	case err := <-s.Err():
		t.Fatalf("Err after Close: %v", err)
	default:
	}
}

// New registers the lag observer with the listener: what the listener
// reports shows in the lag histogram.
func TestLagObserverRegistersWithTheListener(t *testing.T) {
	src := fakeSources()
	l := src.Listener.(*fakeListener)
	srv := admin.New(local(), src)
	if len(l.lag) != 1 {
		t.Fatalf("%d lag observers registered with the listener, want 1", len(l.lag))
	}
	l.lag[0](2 * time.Millisecond)
	if got := scrape(t, serve(t, srv)).value(t, "pgmirror_propagation_lag_seconds"); got != 1 {
		t.Fatalf("lag observations = %v, want 1", got)
	}
}
