package listener

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lib/pq"

	"pgmirror/mirror"
	"pgmirror/pgstore/hung"
)

// Defaults of Listener.
const (
	DefaultQueueSize    = 8192
	DefaultPingInterval = 5 * time.Second
	DefaultPingTimeout  = 5 * time.Second
	DefaultMinReconnect = 100 * time.Millisecond
	DefaultMaxReconnect = 5 * time.Second
	DefaultProbeTimeout = 5 * time.Second
)

// Sink receives the stream: decoded, authenticated batches in commit
// order, and the stream's ups and downs; it holds the keys that sign
// payloads. *mirror.Mirror implements it.
type Sink interface {
	Apply(mirror.Batch)
	StreamUp(reason string)
	StreamDown(reason string)
	// StreamGap reports notifications lost (queue overflow): resync.
	StreamGap(reason string)
	// Keyring returns the keys payloads are signed with, as last read (at
	// every load); nil before the first read.
	Keyring() *mirror.Keyring
	// RefreshKeyring reads them again, for a payload under a key the sink
	// does not know; at most once a second.
	RefreshKeyring(ctx context.Context) *mirror.Keyring
	// RequestRepair asks for a reload after a payload was dropped; the sink
	// coalesces and spaces out such requests.
	RequestRepair(why string)
	// RememberDropped remembers the MAC prefix of a payload dropped for a
	// key the sink does not hold yet, so that a replay of it, once the key
	// is read, is refused as a replay of an applied payload would be.
	RememberDropped(mac uint64)
}

var _ Sink = (*mirror.Mirror)(nil)

// TrySink is a Sink that can apply without waiting: TryApply applies the
// batch and reports true, or reports false at once when the sink is busy.
// The listener then applies a notification on the goroutine that received
// it, when nothing is queued before it, which saves a hand-off between
// goroutines (and often a thread wake-up) per notification.
type TrySink interface {
	TryApply(mirror.Batch) bool
}

var _ TrySink = (*mirror.Mirror)(nil)

// Listener holds the LISTEN connection (a pq.Listener) and feeds the sink.
// Configure the exported fields (a struct literal builds it; nothing starts),
// register lag handlers (HandleLag), then Open; Close stops it. A listener
// that cannot run (Postgres refuses the LISTEN, or notifications are not
// delivered) reports it on Err.
type Listener struct {
	DSN          string
	Sink         Sink
	Logger       hclog.Logger  // nil logs nothing
	QueueSize    int           // notifications buffered between the connection and the sink
	PingInterval time.Duration // ping after this long without a notification
	PingTimeout  time.Duration // a ping slower than this means a half-open connection
	MinReconnect time.Duration
	MaxReconnect time.Duration
	ProbeTimeout time.Duration // how long the delivery probe at start may take
	// BeforeApply, when set, runs before each notification is applied; tests
	// use it to hold notifications back. Nil in production.
	BeforeApply func()
	// Unsigned says whether unsigned payloads (format 1) are applied
	// (--unsigned-payloads); "" means UnsignedAuto.
	Unsigned UnsignedPolicy
	// MaxHeldBytes bounds the parts of one publish held until its last
	// arrives; 0 means DefaultMaxHeldBytes.
	MaxHeldBytes int

	auth                                          auth
	received, decodeErrors, overflows, reconnects atomic.Int64
	genuineDrops                                  atomic.Int64    // dropped for a key not read yet, then verified
	rejected                                      [5]atomic.Int64 // by RejectReasons
	rejectedSinceWarn, lastRejectWarn             atomic.Int64
	// pending counts the items in the queue or in the apply loop's hands:
	// while it is not zero, a notification must queue behind them.
	pending          atomic.Int64
	lastNotification atomic.Int64 // unix nanos
	lagMicros        atomic.Int64 // latest send-to-apply lag

	lagHandlers []func(time.Duration) // HandleLag; fixed once Open ran

	mu      sync.Mutex
	opened  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the run goroutine
	errOnce sync.Once
	errc    chan error // Err
}

// item is one entry of the queue between the connection and the sink.
type item struct {
	n   *pq.Notification
	gap string // non-empty: notifications may have been lost (reconnect, overflow)
	// b is n decoded, when the receiving goroutine decoded it already (a
	// TryApply that was refused).
	b *mirror.Batch
}

func (l *Listener) defaults() {
	if l.QueueSize <= 0 {
		l.QueueSize = DefaultQueueSize
	}
	if l.PingInterval <= 0 {
		l.PingInterval = DefaultPingInterval
	}
	if l.PingTimeout <= 0 {
		l.PingTimeout = DefaultPingTimeout
	}
	if l.MinReconnect <= 0 {
		l.MinReconnect = DefaultMinReconnect
	}
	if l.MaxReconnect <= 0 {
		l.MaxReconnect = DefaultMaxReconnect
	}
	if l.ProbeTimeout <= 0 {
		l.ProbeTimeout = DefaultProbeTimeout
	}
	if l.Logger == nil {
		l.Logger = hclog.NewNullLogger()
	}
	if l.MaxHeldBytes <= 0 {
		l.MaxHeldBytes = DefaultMaxHeldBytes
	}
	if l.Unsigned == "" {
		l.Unsigned = UnsignedAuto
	}
}

// ErrListen wraps a LISTEN that Postgres refused, such as on a hot standby.
var ErrListen = errors.New("LISTEN refused")

// HandleLag registers h to be told the propagation lag of each applied
// notification: from the writer's clock_timestamp() to now (clocks of
// different hosts may differ). h runs on the apply path: keep it fast.
// Register before Open: registering after it is a wiring bug, and panics.
func (l *Listener) HandleLag(h func(time.Duration)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.opened {
		panic("listener: HandleLag after Open")
	}
	l.lagHandlers = append(l.lagHandlers, h)
}

// Open starts the listener in the background: it connects, LISTENs, tells
// the sink the stream is up (which makes it load), and then feeds it until
// Close. Connection losses are retried with backoff; after each reconnect
// the sink resyncs. Open does not wait for Postgres; a listener that cannot
// run (Postgres refuses the LISTEN, as a hot standby does, or the delivery
// probe fails) stops and reports why on Err.
func (l *Listener) Open() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.opened {
		return errors.New("listener: already opened")
	}
	l.opened = true
	l.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	errc := l.errChan()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if err := l.run(ctx); err != nil {
			errc <- err
		}
	}()
	return nil
}

// Close stops the listener and waits until it stopped. It is safe to call
// when Open never ran, and twice.
func (l *Listener) Close() error {
	l.mu.Lock()
	cancel := l.cancel
	l.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	l.wg.Wait()
	return nil
}

// Err receives the error that stopped the listener, at most one: a LISTEN
// Postgres refused (ErrListen) or notifications not delivered
// (ErrNoDelivery). Nothing is sent when Close stops it.
func (l *Listener) Err() <-chan error { return l.errChan() }

func (l *Listener) errChan() chan error {
	l.errOnce.Do(func() { l.errc = make(chan error, 1) })
	return l.errc
}

// run feeds the sink until ctx is cancelled; it returns nil then, or an
// error when Postgres refuses the LISTEN or does not deliver.
func (l *Listener) run(ctx context.Context) error {
	d := newDialer()
	pl := pq.NewDialListener(d, l.DSN, l.MinReconnect, l.MaxReconnect, l.event)
	var closeOnce sync.Once
	closeAll := func() {
		closeOnce.Do(func() {
			d.killAll() // unblocks a Ping or dial stuck on a dead connection
			_ = pl.Close()
			d.killAll()
		})
	}
	defer closeAll()

	// Listen waits for a connection; on Close, closeAll unblocks it.
	err, listened := hung.Aside(ctx, 0, func() error { return pl.Listen(Channel) }, nil)
	if !listened {
		return nil
	}
	if err != nil {
		return l.listenError(err)
	}
	if err := l.probe(ctx, pl); err != nil {
		return err
	}
	l.Logger.Info("listening", "channel", Channel, "unsigned_payloads", l.Unsigned)
	l.Sink.StreamUp("connected")

	queue := make(chan item, l.QueueSize)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.drain(pl.Notify, queue) }()
	go func() { defer wg.Done(); l.applyLoop(queue) }()
	l.pingLoop(ctx, pl, d)
	closeAll()
	wg.Wait()
	l.stopChecks()
	return nil
}

// ErrNoDelivery means a notification sent through the listener's DSN did
// not come back to the listener: the connection goes through a
// transaction-pooling proxy, which accepts LISTEN but delivers nothing.
var ErrNoDelivery = errors.New("notifications are not delivered to the listener")

// probe sends a notification through the listener's own DSN and waits for
// it: LISTEN through a transaction pooler (pgbouncer pool_mode=transaction)
// succeeds but never delivers, and would leave the mirror silently stale.
// Notifications other than the probe are dropped; the load that follows
// includes what they said.
func (l *Listener) probe(ctx context.Context, pl *pq.Listener) error {
	db, err := sql.Open("postgres", l.DSN)
	if err != nil {
		return err
	}
	defer db.Close()
	var b [8]byte
	_, _ = rand.Read(b[:])
	payload := Encode(Payload{SentAt: time.Now().UnixMicro(),
		Changes: []mirror.Change{{Op: mirror.OpSentinel, Token: "probe" + hex.EncodeToString(b[:])}}})
	sctx, cancel := context.WithTimeout(ctx, l.ProbeTimeout)
	defer cancel()
	if _, err := db.ExecContext(sctx, `SELECT pg_notify($1, $2)`, Channel, payload); err != nil {
		// Cannot tell; the mirror's sentinel wait will notice a real problem.
		l.Logger.Warn("could not send the delivery probe; skipping it", "error", err)
		return nil
	}
	for {
		select {
		case n, ok := <-pl.Notify:
			if !ok {
				return nil
			}
			if n != nil && n.Extra == payload {
				return nil
			}
		case <-sctx.Done():
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%w: a notification sent through --listen-dsn did not arrive within %v; the listener's "+
				"connection probably goes through a transaction-pooling proxy (pgbouncer pool_mode=transaction), "+
				"which accepts LISTEN but delivers nothing: point --listen-dsn straight at the primary (or at a "+
				"session-pooling proxy)", ErrNoDelivery, l.ProbeTimeout)
		}
	}
}

// listenError explains a refused LISTEN.
func (l *Listener) listenError(err error) error {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		msg := pqErr.Message
		if strings.Contains(msg, "recovery") {
			return fmt.Errorf("%w: %s: this is a hot standby; the listener needs the primary "+
				"(point --listen-dsn at it, or use target_session_attrs=read-write)", ErrListen, msg)
		}
		return fmt.Errorf("%w: %s", ErrListen, msg)
	}
	return fmt.Errorf("%w: %v", ErrListen, err)
}

// event runs on pq's dispatch goroutine and must stay fast.
func (l *Listener) event(ev pq.ListenerEventType, err error) {
	switch ev {
	case pq.ListenerEventDisconnected:
		l.Sink.StreamDown(fmt.Sprintf("listener disconnected: %v", err))
	case pq.ListenerEventConnectionAttemptFailed:
		l.Logger.Warn("listener cannot connect; retrying", "error", err)
	case pq.ListenerEventReconnected:
		l.reconnects.Add(1)
		l.Logger.Info("listener reconnected")
	}
}

// drain takes notifications from pq at once, so the connection never
// stalls: it applies one itself when it can without waiting
// (applyInline), and otherwise moves it into the queue. When the queue is full it drops notifications
// and owes the applier a gap (a resync): it queues the gap as soon as there
// is room, whether or not more notifications arrive, and drops what arrives
// meanwhile (the resync, read after the gap is taken, includes it).
func (l *Listener) drain(in <-chan *pq.Notification, queue chan<- item) {
	defer close(queue)
	gap := ""
	for {
		var n *pq.Notification
		var ok bool
		if gap != "" {
			l.pending.Add(1)
			select {
			case queue <- item{gap: gap}:
				gap = ""
				continue
			case n, ok = <-in:
				l.pending.Add(-1)
			}
		} else {
			n, ok = <-in
		}
		if !ok {
			return
		}
		if n == nil {
			// pq reconnected: LISTEN is re-issued, but what was committed
			// meanwhile is lost.
			gap = "reconnected"
			continue
		}
		l.received.Add(1)
		l.lastNotification.Store(time.Now().UnixNano())
		if gap != "" {
			l.overflows.Add(1)
			continue
		}
		it := item{n: n}
		if l.applyInline(&it) {
			continue
		}
		l.pending.Add(1)
		select {
		case queue <- it:
		default:
			l.pending.Add(-1)
			l.overflows.Add(1)
			gap = "notification queue overflow"
		}
	}
}

// applyInline takes the item's notification on the receiving goroutine if
// nothing is queued before it: it decodes and authenticates it, and applies
// it if the sink takes it without waiting. A payload under a key the sink
// does not know (which needs a query), a notification on another channel,
// and a batch the sink refused (which travels decoded) go through the queue
// and the apply loop instead.
func (l *Listener) applyInline(it *item) bool {
	ts, ok := l.Sink.(TrySink)
	if !ok || l.BeforeApply != nil || l.pending.Load() != 0 || it.n.Channel != Channel {
		return false
	}
	b, ready, err := l.admit(it.n.Extra, false)
	if err != nil {
		return false // errDeferred
	}
	if !ready {
		return true // a part held for later, or dropped
	}
	if !ts.TryApply(b) {
		it.b = &b
		return false
	}
	l.applied(b)
	return true
}

// applyLoop decodes and applies notifications in arrival (commit) order.
func (l *Listener) applyLoop(queue <-chan item) {
	for it := range queue {
		l.applyItem(it)
		l.pending.Add(-1)
	}
}

// applyItem hands one queued item to the sink.
func (l *Listener) applyItem(it item) {
	if it.gap != "" {
		l.resetHeld()
		if it.gap == "reconnected" {
			l.Sink.StreamUp(it.gap)
		} else {
			l.Logger.Warn("notifications lost; resyncing", "reason", it.gap)
			l.Sink.StreamGap(it.gap)
		}
		return
	}
	if it.n.Channel != Channel {
		return
	}
	if l.BeforeApply != nil {
		l.BeforeApply()
	}
	if it.b == nil {
		b, ready, _ := l.admit(it.n.Extra, true)
		if !ready {
			return // held, or dropped and reported
		}
		it.b = &b
	}
	l.Sink.Apply(*it.b)
	l.applied(*it.b)
}

// applied records the lag of an applied notification.
func (l *Listener) applied(b mirror.Batch) {
	if b.SentAt > 0 {
		lag := time.Now().UnixMicro() - b.SentAt
		l.lagMicros.Store(lag)
		for _, h := range l.lagHandlers {
			h(time.Duration(lag) * time.Microsecond)
		}
	}
}

// pingLoop pings the connection when it has been idle, with a bound: a ping
// that does not answer in time means a half-open connection, which is cut so
// pq reconnects.
func (l *Listener) pingLoop(ctx context.Context, pl *pq.Listener, d *dialer) {
	t := time.NewTicker(l.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, l.lastNotification.Load())) < l.PingInterval {
			continue
		}
		done := make(chan error, 1)
		go func() { done <- pl.Ping() }()
		timer := time.NewTimer(l.PingTimeout)
		select {
		case err := <-done:
			if err != nil {
				l.Logger.Debug("listener ping failed", "error", err)
			}
		case <-timer.C:
			l.Logger.Warn("listener ping timed out; cutting the connection", "timeout", l.PingTimeout)
			d.killAll()
			<-done
		case <-ctx.Done():
			timer.Stop()
			return
		}
		timer.Stop()
	}
}

// Stats are the listener's counters.
type Stats struct {
	Received, DecodeErrors, Overflows, Reconnects int64
	// Rejected counts the payloads dropped, by reason (RejectReasons).
	Rejected map[string]int64
	// GenuineDrops counts the payloads dropped for a key not read yet
	// that verified once it was read: each resynced at once.
	GenuineDrops     int64
	LastNotification time.Time
	Lag              time.Duration // send-to-apply time of the latest notification
}

// Stats returns the listener's counters.
func (l *Listener) Stats() Stats {
	s := Stats{
		Received:     l.received.Load(),
		DecodeErrors: l.decodeErrors.Load(),
		Overflows:    l.overflows.Load(),
		Reconnects:   l.reconnects.Load(),
		GenuineDrops: l.genuineDrops.Load(),
		Lag:          time.Duration(l.lagMicros.Load()) * time.Microsecond,
		Rejected:     make(map[string]int64, len(RejectReasons)),
	}
	for i, r := range RejectReasons {
		s.Rejected[r] = l.rejected[i].Load()
	}
	if n := l.lastNotification.Load(); n != 0 {
		s.LastNotification = time.Unix(0, n)
	}
	return s
}

// Info is the listener's part of INFO's # Mirror section.
func (l *Listener) Info() [][2]string {
	st := l.Stats()
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
