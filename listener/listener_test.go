package listener

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/mirror"
)

// recorder is a Sink that records what the listener tells it.
type recorder struct {
	mu      sync.Mutex
	events  []string
	batches []mirror.Batch
	block   chan struct{} // Apply waits on it while non-nil
}

func (r *recorder) Apply(b mirror.Batch) {
	r.mu.Lock()
	block := r.block
	r.mu.Unlock()
	if block != nil {
		<-block
	}
	r.mu.Lock()
	r.batches = append(r.batches, b)
	r.mu.Unlock()
}
func (r *recorder) record(e string)          { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }
func (r *recorder) StreamUp(reason string)   { r.record("up:" + reason) }
func (r *recorder) StreamDown(reason string) { r.record("down") }
func (r *recorder) StreamGap(reason string)  { r.record("gap:" + reason) }

func (r *recorder) has(prefix string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}

func (r *recorder) applied() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.batches)
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func run(t *testing.T, l *Listener) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	poll(t, "connection", func() bool { return l.Sink.(*recorder).has("up:connected") })
}

func TestUndecodableNotificationResyncs(t *testing.T) {
	dsn, db := testdb.New(t)
	r := &recorder{}
	l := &Listener{DSN: dsn, Sink: r}
	run(t, l)
	exec(t, db, `SELECT pg_notify('pgmirror', 'garbage')`)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('a', 'b')`)
	poll(t, "gap", func() bool { return r.has("gap:undecodable") })
	poll(t, "the next notification", func() bool { return r.applied() == 1 })
	if s := l.Stats(); s.DecodeErrors != 1 || s.Received != 2 {
		t.Fatalf("stats %+v, want one decode error of two received", s)
	}
}

func TestOverflowBecomesAGap(t *testing.T) {
	dsn, db := testdb.New(t)
	r := &recorder{block: make(chan struct{})}
	l := &Listener{DSN: dsn, Sink: r, QueueSize: 2}
	run(t, l)
	for i := 0; i < 50; i++ {
		exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ($1, 'v')`, fmt.Sprint("k", i))
	}
	// Every notification of the burst has arrived (most dropped) before the
	// applier is let go; nothing arrives after it.
	poll(t, "the burst", func() bool { st := l.Stats(); return st.Received == 50 && st.Overflows > 0 })
	r.mu.Lock()
	close(r.block)
	r.block = nil
	r.mu.Unlock()
	// The gap is queued once there is room, before anything else is
	// committed: a burst that overflows the queue and then stops must not
	// leave the mirror stale until the next write.
	poll(t, "gap", func() bool { return r.has("gap:notification queue overflow") })
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('after', 'v')`)
	poll(t, "the notification after the gap", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		n := len(r.batches)
		return n > 0 && r.batches[n-1].Changes[0].Key == "after"
	})
}

func TestReconnectReportsDownThenUp(t *testing.T) {
	srv := pgtest.New(t)
	dsn := srv.CreateDB(t)
	testdb.Migrate(t, dsn)
	r := &recorder{}
	l := &Listener{DSN: dsn + " application_name=listener-under-test", Sink: r, MaxReconnect: 200 * time.Millisecond}
	run(t, l)
	dbname := dsn[strings.Index(dsn, "dbname=")+7:]
	dbname = strings.Fields(dbname)[0]
	if n, err := srv.TerminateBackends(dbname, "application_name = 'listener-under-test'"); err != nil || n != 1 {
		t.Fatalf("terminated %d (%v), want 1", n, err)
	}
	poll(t, "down", func() bool { return r.has("down") })
	poll(t, "up after reconnect", func() bool { return r.has("up:reconnected") })
}

func TestListenErrorOnStandby(t *testing.T) {
	err := (&Listener{}).listenError(&pq.Error{Message: "cannot execute LISTEN during recovery"})
	if !strings.Contains(err.Error(), "hot standby") || !strings.Contains(err.Error(), "target_session_attrs=read-write") {
		t.Fatalf("error %q should explain the standby and the fix", err)
	}
}
