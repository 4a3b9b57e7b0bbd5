package listener

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
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
	db      *sql.DB       // where the keyring is read from; nil: no keys
	ring    atomic.Pointer[mirror.Keyring]
}

func (r *recorder) Keyring() *mirror.Keyring {
	if k := r.ring.Load(); k != nil || r.db == nil {
		return k
	}
	return r.RefreshKeyring(context.Background())
}

func (r *recorder) RefreshKeyring(ctx context.Context) *mirror.Keyring {
	if r.db == nil {
		return nil
	}
	k, err := readKeyring(ctx, r.db)
	if err != nil {
		panic(err)
	}
	r.ring.Store(&k)
	return &k
}

func (r *recorder) RequestRepair(why string) { r.record("repair:" + why) }

func (r *recorder) RememberDropped(mac uint64) { r.record(fmt.Sprintf("dropped-mac:%x", mac)) }

// readKeyring reads pgmirror_secret as pgstore does (which this package's
// tests cannot import).
func readKeyring(ctx context.Context, db *sql.DB) (mirror.Keyring, error) {
	kr := mirror.Keyring{Read: time.Now()}
	rows, err := db.QueryContext(ctx, `SELECT kid, key FROM pgmirror_secret ORDER BY kid DESC LIMIT 3`)
	if err != nil {
		return kr, err
	}
	defer rows.Close()
	for rows.Next() {
		var k mirror.Key
		if err := rows.Scan(&k.ID, &k.Secret); err != nil {
			return kr, err
		}
		kr.Keys = append(kr.Keys, k)
	}
	kr.Signed = len(kr.Keys) > 0
	return kr, rows.Err()
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
	if err := l.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-l.Err():
			t.Errorf("listener stopped: %v", err)
		default:
		}
	})
	poll(t, "connection", func() bool { return l.Sink.(interface{ has(string) bool }).has("up:connected") })
}

// TestUndecodableNotificationIsDropped: an undecodable payload (anyone can
// NOTIFY) is counted and asks for a repair; it is not a gap in the stream,
// which would make a reload in progress start over.
func TestUndecodableNotificationIsDropped(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	r := &recorder{db: db}
	l := &Listener{DSN: dsn, Sink: r}
	run(t, l)
	exec(t, db, `SELECT pg_notify('pgmirror', 'garbage')`)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('a', 'b')`)
	poll(t, "the next notification", func() bool { return r.applied() == 1 })
	if !r.has("repair:notification dropped: malformed") || r.has("gap:") {
		t.Fatalf("events %q: want a repair request and no gap", r.events)
	}
	if s := l.Stats(); s.DecodeErrors != 1 || s.Received != 2 || s.Rejected[RejectMalformed] != 1 {
		t.Fatalf("stats %+v, want one decode error of two received", s)
	}
}

func TestOverflowBecomesAGap(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	r := &recorder{block: make(chan struct{}), db: db}
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
	t.Parallel()
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

// trySink is a recorder that also applies without waiting, refusing every
// third TryApply (as a busy mirror does) and making every fifth queued
// Apply slow, so that notifications take both paths and meet in the queue.
type trySink struct {
	recorder
	tries, refused, slow atomic.Int64
	order                []string // tokens in the order they were applied
}

func (s *trySink) record(b mirror.Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range b.Changes {
		s.order = append(s.order, c.Token)
	}
}

func (s *trySink) TryApply(b mirror.Batch) bool {
	if s.tries.Add(1)%3 == 0 {
		s.refused.Add(1)
		return false
	}
	s.record(b)
	return true
}

func (s *trySink) Apply(b mirror.Batch) {
	if s.slow.Add(1)%5 == 0 {
		time.Sleep(2 * time.Millisecond)
	}
	s.record(b)
}

// TestInlineApplyKeepsOrder: notifications applied on the receiving
// goroutine (TryApply) and those queued when the sink was busy or others
// were queued arrive at the sink in commit order, none twice.
func TestInlineApplyKeepsOrder(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	s := &trySink{recorder: recorder{db: db}}
	l := &Listener{DSN: dsn, Sink: s}
	run(t, l)
	const n = 600
	var payloads []string
	for i := 0; i < n; i++ {
		payloads = append(payloads, Encode(Payload{SentAt: time.Now().UnixMicro(),
			Changes: []mirror.Change{{Op: mirror.OpSentinel, Token: fmt.Sprintf("t%d", i)}}}))
	}
	// In bursts of 50 per transaction, each sent once the one before is
	// applied: a burst starts inline, turns to the queue at the first
	// refusal, and the rest of it queues behind.
	applied := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.order)
	}
	for i := 0; i < n; i += 50 {
		exec(t, db, `SELECT pg_notify('pgmirror', p) FROM unnest($1::text[]) WITH ORDINALITY u(p, i) ORDER BY i`,
			pq.Array(payloads[i:i+50]))
		poll(t, "the burst", func() bool { return applied() >= i+50 })
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, tok := range s.order {
		if want := fmt.Sprintf("t%d", i); tok != want {
			t.Fatalf("notification %d applied as %s: order broken (%d applied)", i, tok, len(s.order))
		}
	}
	if len(s.order) != n {
		t.Fatalf("%d applied, want %d", len(s.order), n)
	}
	inline := s.tries.Load() - s.refused.Load()
	queued := s.slow.Load()
	t.Logf("%d applied inline, %d queued (%d refused by TryApply)", inline, queued, s.refused.Load())
	if inline == 0 || queued == 0 || s.refused.Load() == 0 {
		t.Fatalf("want both paths taken: %d inline, %d queued", inline, queued)
	}
}

// TestLifecycle: Close is safe before Open and twice; Open runs once; lag
// handlers register before Open only. Open does not wait for Postgres
// (here: none answers), and Close stops a listener still trying to connect.
func TestLifecycle(t *testing.T) {
	l := &Listener{DSN: "host=/nonexistent-pgmirror-test sslmode=disable", Sink: &recorder{},
		MinReconnect: 10 * time.Millisecond, MaxReconnect: 20 * time.Millisecond}
	if err := l.Close(); err != nil {
		t.Fatalf("Close before Open: %v", err)
	}
	l.HandleLag(func(time.Duration) {})
	if err := l.Open(); err != nil {
		t.Fatal(err)
	}
	if err := l.Open(); err == nil {
		t.Fatal("a second Open succeeded")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("HandleLag after Open did not panic")
			}
		}()
		l.HandleLag(func(time.Duration) {})
	}()
	time.Sleep(50 * time.Millisecond) // a few failed attempts
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not stop a listener trying to connect within 10s")
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case err := <-l.Err():
		t.Fatalf("Err after Close: %v", err)
	default:
	}
}
