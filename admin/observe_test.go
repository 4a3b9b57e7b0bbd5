package admin_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"pgmirror/admin"
	"pgmirror/jobs"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

// The metrics of issue 20: the budgets, the notification queue's usage as
// the jobs last read it, the listener's genuine drops, the mirror's
// deferred own writes, and the write-batch latency the writer reports.
func TestBudgetQueueAndBatchMetrics(t *testing.T) {
	cfg := local()
	cfg.MaxMemory = 64 << 20
	cfg.MaxStaleness = 30 * time.Second
	src := fakeSources()
	srv := admin.New(cfg, src)
	w := src.Writer.(*fakeWriter)
	if len(w.batch) != 1 {
		t.Fatalf("New registered %d batch observers with the writer, want 1", len(w.batch))
	}
	w.batch[0](pgstore.BatchDone{Ops: 3, Took: 2 * time.Millisecond, Result: pgstore.BatchCommitted})
	w.batch[0](pgstore.BatchDone{Ops: 1, Took: 7 * time.Millisecond, Result: pgstore.BatchCommitted})
	w.batch[0](pgstore.BatchDone{Ops: 1, Took: 5 * time.Second, Result: pgstore.BatchUnknown})
	f := scrape(t, serve(t, srv))
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pgmirror_max_memory_bytes", nil, 64 << 20},
		{"pgmirror_max_staleness_seconds", nil, 30},
		{"pgmirror_notification_queue_usage_ratio", nil, 0.25},
		{"pgmirror_notification_queue_usage_timestamp_seconds", nil, 1700000100},
		{"pgmirror_notifications_genuine_drops_total", nil, 36},
		{"pgmirror_own_writes_deferred_total", nil, 27},
		{"pgmirror_write_batch_duration_seconds", []string{"result", "ok"}, 2}, // histogram count
		{"pgmirror_write_batch_duration_seconds", []string{"result", "unknown"}, 1},
		{"pgmirror_write_batch_duration_seconds", []string{"result", "unavailable"}, 0},
	} {
		if got := f.value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, m := range f["pgmirror_write_batch_duration_seconds"].GetMetric() {
		if m.GetLabel()[0].GetValue() == "ok" && math.Abs(m.GetHistogram().GetSampleSum()-0.009) > 1e-9 {
			t.Errorf("write batch duration sum{ok} = %v, want 0.009", m.GetHistogram().GetSampleSum())
		}
	}

	// Before the first reading of the queue, and without --max-memory, those gauges are left out.
	srv = admin.New(local(), fakeSourcesUnsampled())
	f = scrape(t, serve(t, srv))
	for _, name := range []string{"pgmirror_notification_queue_usage_ratio", "pgmirror_max_memory_bytes"} {
		if _, ok := f[name]; ok {
			t.Errorf("%s exported before it has a value", name)
		}
	}
}

// fakeSourcesUnsampled are fakeSources whose jobs have not read the queue yet.
func fakeSourcesUnsampled() admin.Sources {
	src := fakeSources()
	src.Jobs = statsFunc[jobs.Stats](func() jobs.Stats { return jobs.Stats{LoaderRuns: 1} })
	return src
}

// The drift streak counts consecutive reloads that found drift, leaving out
// those where drift is expected (after a reconnect or lost notifications),
// and starts again at a reload that found none.
func TestDriftStreak(t *testing.T) {
	srv := admin.New(local(), admin.Sources{})
	base := serve(t, srv)
	drift := mirror.ReloadResult{Drift: 3}
	for _, step := range []struct {
		reason string
		res    mirror.ReloadResult
		err    error
		want   float64
	}{
		{"connected", drift, nil, 0},
		{"periodic", drift, nil, 1},
		{"reconnected", mirror.ReloadResult{}, nil, 1}, // expected: neither counts nor resets
		{"notification queue overflow", drift, nil, 1},
		{"periodic", drift, errors.New("boom"), 1}, // failed: no verdict
		{"SIGHUP", drift, nil, 2},
		{"periodic", mirror.ReloadResult{}, nil, 0},
		{"periodic", drift, nil, 1},
	} {
		srv.ObserveReload(step.reason, step.res, step.err)
		if got := scrape(t, base).value(t, "pgmirror_reload_drift_streak"); got != step.want {
			t.Fatalf("after %s (drift %d, err %v): streak %v, want %v", step.reason, step.res.Drift, step.err, got, step.want)
		}
	}
}
