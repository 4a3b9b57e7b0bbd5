package admin_test

// The admin server over a real sidecar: mirror + listener + pgstore on a
// real Postgres (internal/pgtest).

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"pgmirror/admin"
	"pgmirror/internal/pgtest"
	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/listener"
	"pgmirror/mirror"
	sidecarpkg "pgmirror/sidecar"
)

// sidecar is a whole sidecar with its admin server on 127.0.0.1:0.
type sidecar struct {
	*sidecartest.Sidecar
	m   *mirror.Mirror
	url string
}

// startSidecar runs a sidecar as the binary does, and does not wait for
// Postgres or the first load.
func startSidecar(t *testing.T, dsn string, maxStaleness time.Duration) *sidecar {
	t.Helper()
	logger, logs := testLogger()
	t.Cleanup(func() {
		// The admin server knows no DSN, and must never log one (cleanups run
		// last first: this one after the sidecar stopped).
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "admin.http: ") && (strings.Contains(line, "dbname=") || strings.Contains(line, dsn)) {
				t.Errorf("admin logged a DSN: %s", line)
			}
		}
	})
	sc := sidecartest.StartNoWait(t, dsn, sidecartest.Config{
		Mirror:   mirror.Options{MaxMemory: 64 << 20, MaxStaleness: maxStaleness, SentinelWait: 5 * time.Second},
		HTTPAddr: "127.0.0.1:0",
		Logger:   logger,
		Sidecar:  func(c *sidecarpkg.Config) { c.MaxStaleness = maxStaleness },
		Listener: func(l *listener.Listener) {
			l.PingInterval, l.PingTimeout = 200*time.Millisecond, 2*time.Second
			l.MinReconnect, l.MaxReconnect = 50*time.Millisecond, 200*time.Millisecond
		},
	})
	var addr string
	testutil.Eventually(t, 30*time.Second, func() (bool, string) {
		addr = sc.Admin.ListenAddr()
		return addr != "", "the admin server is not listening"
	})
	return &sidecar{Sidecar: sc, m: sc.Mirror, url: "http://" + addr}
}

func (s *sidecar) waitReady(t *testing.T) {
	t.Helper()
	s.WaitReady(t, 60*time.Second)
}

// waitReadyz polls /readyz until it answers code, and returns its status.
func (s *sidecar) waitReadyz(t *testing.T, code int, timeout time.Duration) admin.Status {
	t.Helper()
	var st admin.Status
	testutil.Eventually(t, timeout, func() (bool, string) {
		var got int
		got, st = readyz(t, s.url)
		return got == code, fmt.Sprintf("/readyz answered %d %+v, want %d", got, st, code)
	})
	return st
}

func (s *sidecar) healthy(t *testing.T) {
	t.Helper()
	if code, body := get(t, s.url+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d %s", code, body)
	}
}

func TestReadyzFollowsTheSidecar(t *testing.T) {
	srv := pgtest.New(t)
	dsn := srv.CreateDB(t)
	db := testdb.Migrate(t, dsn)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'v' FROM generate_series(1, 50) i`)
	db.Close()
	// Postgres is down when the sidecar starts.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	const maxStaleness = 500 * time.Millisecond
	s := startSidecar(t, dsn, maxStaleness)

	s.healthy(t)
	code, st := readyz(t, s.url)
	if code != http.StatusServiceUnavailable || st.Ready || st.State != "loading" || st.Reason != "first load not complete" {
		t.Fatalf("/readyz before the first load = %d %+v, want 503 loading", code, st)
	}
	if f := scrape(t, s.url); f.value(t, "pgmirror_ready") != 0 || f.value(t, "pgmirror_mirror_state", "state", "loading") != 1 {
		t.Fatalf("metrics before the first load: ready %v, loading %v",
			f.value(t, "pgmirror_ready"), f.value(t, "pgmirror_mirror_state", "state", "loading"))
	}

	// Postgres comes up: the listener connects, the mirror loads, ready.
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	s.waitReady(t)
	st = s.waitReadyz(t, http.StatusOK, 30*time.Second)
	if !st.Ready || st.State != "ready" || !st.ListenerConnected || st.Entries != 50 || st.Reason != "" {
		t.Fatalf("/readyz after the load = %+v", st)
	}
	s.healthy(t)

	// An outage longer than the staleness bound: not ready, still alive.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	st = s.waitReadyz(t, http.StatusServiceUnavailable, 30*time.Second)
	if st.State != "stale" || st.ListenerConnected || !strings.Contains(st.Reason, "longer than --max-staleness") ||
		st.ListenerDownSeconds < maxStaleness.Seconds() {
		t.Fatalf("/readyz during the outage = %+v", st)
	}
	s.healthy(t)
	if f := scrape(t, s.url); f.value(t, "pgmirror_listener_connected") != 0 || f.value(t, "pgmirror_listener_down_seconds") < maxStaleness.Seconds() {
		t.Fatalf("metrics during the outage: connected %v, down %vs",
			f.value(t, "pgmirror_listener_connected"), f.value(t, "pgmirror_listener_down_seconds"))
	}

	// Recovery.
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	st = s.waitReadyz(t, http.StatusOK, 30*time.Second)
	if !st.ListenerConnected || st.State != "ready" {
		t.Fatalf("/readyz after recovery = %+v", st)
	}
	s.healthy(t)
	// The reconnect resyncs; it shows in the metrics.
	testutil.Eventually(t, 30*time.Second, func() (bool, string) {
		n := scrape(t, s.url).value(t, "pgmirror_resyncs_total", "reason", "reconnected", "result", "ok")
		return n >= 1, fmt.Sprintf("resyncs{reconnected,ok} = %v", n)
	})
}

func TestMetricsCountWhatHappens(t *testing.T) {
	dsn, db := testdb.New(t)
	const preloaded = 20
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'pre' || i, convert_to('value' || i, 'UTF8') FROM generate_series(1, $1) i`, preloaded)
	s := startSidecar(t, dsn, 30*time.Second)
	s.waitReady(t)
	// The first load is reported to ObserveReload after Ready is closed.
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		n := scrape(t, s.url).value(t, "pgmirror_resyncs_total", "reason", "connected", "result", "ok")
		return n == 1, fmt.Sprintf("resyncs{connected,ok} = %v", n)
	})
	before := scrape(t, s.url)
	if got := before.value(t, "pgmirror_entries"); got != preloaded {
		t.Fatalf("pgmirror_entries = %v, want %d", got, preloaded)
	}

	// N hits, M misses.
	const hits, misses = 7, 5
	ctx := context.Background()
	for i := 0; i < hits; i++ {
		if _, ok, err := s.m.Get(ctx, fmt.Sprint("pre", i%preloaded+1)); err != nil || !ok {
			t.Fatalf("get pre%d: found %v, %v", i%preloaded+1, ok, err)
		}
	}
	for i := 0; i < misses; i++ {
		if _, ok, err := s.m.Get(ctx, fmt.Sprint("absent", i)); err != nil || ok {
			t.Fatalf("get absent%d: found %v, %v", i, ok, err)
		}
	}
	// K single-row inserts in SQL: K notifications, each one set.
	const inserts = 4
	for i := 0; i < inserts; i++ {
		exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ($1, 'new')`, fmt.Sprint("new", i))
	}
	// The listener reports a notification's lag after applying it: once the
	// lag histogram counts all K, the K notifications are fully applied.
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		n := scrape(t, s.url).value(t, "pgmirror_propagation_lag_seconds") - before.value(t, "pgmirror_propagation_lag_seconds")
		return n >= inserts, fmt.Sprintf("%v notifications' lag observed, want %d", n, inserts)
	})
	// A scrape is no snapshot: the registry reads the histogram and the
	// components' counters concurrently, so the scrape that saw the K-th lag
	// may have read the counters just before it. Scrape again.
	after := scrape(t, s.url)
	for _, c := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"pgmirror_hits_total", nil, hits},
		{"pgmirror_misses_total", nil, misses},
		{"pgmirror_fetches_total", nil, 0},
		{"pgmirror_notifications_received_total", nil, inserts},
		{"pgmirror_notifications_applied_total", nil, inserts},
		{"pgmirror_changes_applied_total", []string{"kind", "set"}, inserts},
		{"pgmirror_changes_applied_total", []string{"kind", "delete"}, 0},
		{"pgmirror_propagation_lag_seconds", nil, inserts}, // histogram count
		{"pgmirror_entries", nil, inserts},
		{"pgmirror_resyncs_total", []string{"reason", "connected", "result", "ok"}, 0},
		{"pgmirror_resyncs_total", []string{"reason", "sighup", "result", "ok"}, 0},
	} {
		if d := after.value(t, c.name, c.labels...) - before.value(t, c.name, c.labels...); d != c.delta {
			t.Errorf("%s%v changed by %v, want %v", c.name, c.labels, d, c.delta)
		}
	}

	// One SIGHUP: one full resync, which sends one sentinel notification and reads every row.
	s.m.RequestResync("SIGHUP")
	var resynced families
	testutil.Eventually(t, 30*time.Second, func() (bool, string) {
		resynced = scrape(t, s.url)
		n := resynced.value(t, "pgmirror_resyncs_total", "reason", "sighup", "result", "ok")
		// The mirror counts a notification once it is applied, which may be
		// just after the reload waiting for its sentinel has ended.
		sent := resynced.value(t, "pgmirror_notifications_applied_total") - after.value(t, "pgmirror_notifications_applied_total")
		return n == 1 && sent >= 1, fmt.Sprintf("resyncs{sighup,ok} = %v, notifications applied since: %v", n, sent)
	})
	for _, c := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"pgmirror_resyncs_total", []string{"reason", "sighup", "result", "ok"}, 1},
		{"pgmirror_resyncs_total", []string{"reason", "sighup", "result", "error"}, 0},
		{"pgmirror_resyncs_total", []string{"reason", "connected", "result", "ok"}, 0},
		{"pgmirror_resyncs_total", []string{"reason", "command", "result", "ok"}, 0},
		{"pgmirror_reload_duration_seconds", []string{"mode", "full"}, 1},
		{"pgmirror_reload_rows_read_total", nil, preloaded + inserts},
		{"pgmirror_reload_drift_keys_total", nil, 0},
		{"pgmirror_notifications_applied_total", nil, 1}, // the reload's sentinel
		{"pgmirror_changes_applied_total", []string{"kind", "set"}, 0},
		{"pgmirror_hits_total", nil, 0},
		{"pgmirror_misses_total", nil, 0},
	} {
		if d := resynced.value(t, c.name, c.labels...) - after.value(t, c.name, c.labels...); d != c.delta {
			t.Errorf("%s%v changed by %v, want %v", c.name, c.labels, d, c.delta)
		}
	}
	if ts := resynced.value(t, "pgmirror_last_reload_timestamp_seconds"); ts < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("pgmirror_last_reload_timestamp_seconds = %v, not recent", ts)
	}
}

func exec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%.80s: %v", q, err)
	}
}
