package admin_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/jobs"
	"pgmirror/listener"
)

// The notification queue's usage is read by the jobs in the background and
// follows a real backlog; a write shows in the write-batch histogram; and a
// scrape answers at once while Postgres is down (it never waits for it).
func TestQueueUsageAndScrapeWithPostgresDown(t *testing.T) {
	srv := pgtest.New(t)
	dsn := srv.CreateDB(t)
	testdb.Migrate(t, dsn).Close()
	sc := sidecartest.Start(t, dsn, sidecartest.Config{
		HTTPAddr: "127.0.0.1:0",
		Jobs:     jobs.Config{QueueSampleInterval: 100 * time.Millisecond},
		Listener: func(l *listener.Listener) { l.MinReconnect, l.MaxReconnect = 50*time.Millisecond, 200*time.Millisecond },
	})
	url := "http://" + sc.Admin.ListenAddr()
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		v, ok := scrape(t, url).lookup("pgmirror_notification_queue_usage_ratio")
		return ok && v == 0, fmt.Sprintf("queue usage %v (exported: %v), want 0", v, ok)
	})

	// A listener that cannot read (its session stays in a transaction) holds
	// the queue's tail: notifications of more than a page pile up.
	holder := testdb.Open(t, dsn)
	conn, err := holder.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"LISTEN pgm_backlog", "BEGIN", "SELECT 1"} {
		if _, err := conn.ExecContext(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(t, holder, `SELECT pg_notify('pgm_backlog', repeat('x', 1000) || i) FROM generate_series(1, 100) i`)
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		v := scrape(t, url).value(t, "pgmirror_notification_queue_usage_ratio")
		return v > 0, fmt.Sprintf("queue usage %v with a backlog, want > 0", v)
	})
	// The listener goes away: the queue's tail moves on and the usage falls.
	for _, q := range []string{"ROLLBACK", "UNLISTEN *"} {
		if _, err := conn.ExecContext(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn.Close()
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		v := scrape(t, url).value(t, "pgmirror_notification_queue_usage_ratio")
		return v == 0, fmt.Sprintf("queue usage %v once the backlog is read, want 0", v)
	})

	if err := sc.Client.Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n := scrape(t, url).value(t, "pgmirror_write_batch_duration_seconds", "result", "ok"); n < 1 {
		t.Errorf("write batches observed: %v after a SET, want at least 1", n)
	}

	holder.Close()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		d := scrape(t, url).value(t, "pgmirror_listener_down_seconds")
		return d > 0, fmt.Sprintf("listener down for %vs after Postgres stopped", d)
	})
	// Postgres is down: every scrape answers within a second (the client's
	// timeout), with the last reading of the queue, several sample intervals on.
	quick := &http.Client{Timeout: time.Second}
	for i := 0; i < 5; i++ {
		start := time.Now()
		resp, err := quick.Get(url + "/metrics")
		if err != nil {
			t.Fatalf("scrape %d with Postgres down: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape %d with Postgres down answered %d", i, resp.StatusCode)
		}
		t.Logf("scrape %d with Postgres down took %v", i, time.Since(start))
		time.Sleep(200 * time.Millisecond) // spread the scrapes over sample intervals
	}
	if _, ok := scrape(t, url).lookup("pgmirror_notification_queue_usage_ratio"); !ok {
		t.Errorf("the queue's last reading is gone while Postgres is down")
	}
}

// A Postgres that hangs (every process stopped: connections accepted and
// never answered) does not hold up a scrape, and the queue's reading resumes
// once it answers again.
func TestScrapeWithPostgresHung(t *testing.T) {
	srv := pgtest.New(t)
	dsn := srv.CreateDB(t)
	testdb.Migrate(t, dsn).Close()
	sc := sidecartest.Start(t, dsn, sidecartest.Config{
		HTTPAddr: "127.0.0.1:0",
		Jobs:     jobs.Config{QueueSampleInterval: 100 * time.Millisecond},
	})
	url := "http://" + sc.Admin.ListenAddr()
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		_, ok := scrape(t, url).lookup("pgmirror_notification_queue_usage_timestamp_seconds")
		return ok, "no reading of the queue yet"
	})
	thaw, err := srv.Freeze()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(thaw) // before the sidecar stops (cleanups run last first)
	frozen := time.Now()
	quick := &http.Client{Timeout: time.Second}
	scrapes := 0
	for time.Since(frozen) < 2*time.Second { // many sample intervals, each reading hung
		resp, err := quick.Get(url + "/metrics")
		if err != nil {
			t.Fatalf("scrape %d with Postgres hung: %v", scrapes, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape %d with Postgres hung answered %d", scrapes, resp.StatusCode)
		}
		scrapes++
	}
	t.Logf("%d scrapes answered within 1 s each while Postgres hung", scrapes)
	thaw()
	testutil.Eventually(t, 15*time.Second, func() (bool, string) {
		ts := scrape(t, url).value(t, "pgmirror_notification_queue_usage_timestamp_seconds")
		return ts > float64(frozen.Add(2*time.Second).UnixNano())/1e9, "the queue's reading has not resumed"
	})
}
