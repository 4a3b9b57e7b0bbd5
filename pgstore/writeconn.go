package pgstore

// The Writer's own connections (WriterOptions.DSN). lib/pq sends a
// statement with arguments as Parse and Describe, waits for the answer, then
// sends Bind, Execute and Sync: two round trips. In its binary-parameters
// mode it sends all five in one write, so a batch costs one round trip, still
// on the unnamed statement (nothing is prepared by name, which a transaction
// pooler in front of Postgres would break). The mode is per connection and
// sends every []byte argument in binary, so it is confined to a pool that
// runs nothing but the batch statement, whose only []byte argument is bytea.
//
// The pool's sockets are watched from below the driver (wireConn), which
// tells the Writer what lib/pq cannot: whether Postgres closed a pooled
// connection while it sat idle (a restart, a terminated backend, an idle
// timeout leave a FATAL message or an end of file waiting unread), found
// without a round trip; and, after a failure, whether any byte of the
// statement was written and whether its write completed.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lib/pq"
)

// writePool is the Writer's pool in binary-parameters mode, and the
// sockets of its connections.
type writePool struct {
	db    *sql.DB
	wires sync.Map // driver.Conn -> *wireConn
}

// openWritePool returns the Writer's pool on dsn: conns connections at most,
// all of them kept while in use.
func openWritePool(dsn string, conns int) (*writePool, error) {
	cfg, err := pq.NewConfig(dsn)
	if err != nil {
		// The parser's message may quote the DSN, password included.
		return nil, errors.New("the writer cannot parse its DSN: give it the DSN of the sidecar's pool")
	}
	cfg.BinaryParameters = true
	pc, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return nil, errors.New("the writer cannot use its DSN: give it the DSN of the sidecar's pool")
	}
	pc.Dialer(wireDialer{})
	p := &writePool{}
	p.db = sql.OpenDB(&wireConnector{pq: pc, pool: p})
	p.db.SetMaxOpenConns(conns)
	p.db.SetMaxIdleConns(conns)
	p.db.SetConnMaxIdleTime(idleConnTimeout)
	return p, nil
}

// take returns a pooled connection that Postgres has not closed, and its
// socket. A connection found closed is dropped from the pool (its
// driver-level error) and the next one tried; stale counts them.
func (p *writePool) take(ctx context.Context, stale *atomic.Uint64) (*sql.Conn, *wireConn, error) {
	var err error
	for range connAttempts {
		var c *sql.Conn
		if c, err = p.db.Conn(ctx); err != nil {
			return nil, nil, err
		}
		var wire *wireConn
		err = c.Raw(func(dc any) error {
			w, ok := p.wires.Load(dc)
			if !ok {
				return errors.New("pgstore: a connection of the writer's pool without its socket")
			}
			wire = w.(*wireConn)
			if wire.closedByPeer() {
				return driver.ErrBadConn // database/sql closes it instead of pooling it
			}
			return nil
		})
		if err == nil {
			return c, wire, nil
		}
		_ = c.Close()
		if !errors.Is(err, driver.ErrBadConn) {
			return nil, nil, err
		}
		stale.Add(1)
	}
	return nil, nil, errors.New("every connection tried had been closed by Postgres")
}

// wireConnector is lib/pq's connector, with each new connection's socket
// recorded in the pool.
type wireConnector struct {
	pq   *pq.Connector
	pool *writePool
}

// wireSlot receives, through the context of a connection attempt, the
// socket wireDialer opened for it (the last one, when lib/pq dials again).
type wireSlot struct{ conn *wireConn }

type wireSlotKey struct{}

func (c *wireConnector) Connect(ctx context.Context) (driver.Conn, error) {
	slot := &wireSlot{}
	dc, err := c.pq.Connect(context.WithValue(ctx, wireSlotKey{}, slot))
	if err != nil {
		return nil, err
	}
	if slot.conn == nil {
		_ = dc.Close()
		return nil, errors.New("pgstore: lib/pq connected without the writer's dialer")
	}
	slot.conn.forget = func() { c.pool.wires.Delete(dc) }
	c.pool.wires.Store(dc, slot.conn)
	return dc, nil
}

func (c *wireConnector) Driver() driver.Driver { return c.pq.Driver() }

// wireDialer dials as lib/pq does, and wraps a connection attempt's socket in
// a wireConn (a cancel request's socket is left as it is).
type wireDialer struct{}

func (d wireDialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

func (d wireDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

func (wireDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	slot, _ := ctx.Value(wireSlotKey{}).(*wireSlot)
	if slot == nil {
		return c, nil
	}
	w := &wireConn{Conn: c}
	slot.conn = w
	return w, nil
}

// wireConn is a socket of the Writer's pool. Between arm and disarm it
// records what a statement did on it; it counts round trips as the turns
// from writing to reading.
type wireConn struct {
	net.Conn
	forget func() // removes it from the pool's sockets

	mu      sync.Mutex
	armed   bool
	sent    *atomic.Bool // set as the statement's first byte is written
	st      wireStats
	pending bool // written since the last read
	closed  sync.Once
}

// wireStats is what one statement did on a socket.
type wireStats struct {
	writes   int   // Write calls
	writeErr error // the first failed write
	reads    int   // Read calls
	trips    int   // round trips: reads that followed a write
}

// unsent tells whether the statement surely did not reach Postgres whole:
// nothing of it was written, or a write failed before lib/pq went on to
// read (its Sync, the message that commits, never left). Postgres cannot
// have committed it, so it may run on another connection.
func (s wireStats) unsent() bool {
	return s.writes == 0 || s.writeErr != nil && s.reads == 0
}

// arm starts recording a statement; sent is set before its first byte is
// written.
func (c *wireConn) arm(sent *atomic.Bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed, c.sent, c.st, c.pending = true, sent, wireStats{}, false
}

// disarm stops recording and returns what the statement did.
func (c *wireConn) disarm() wireStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed, c.sent = false, nil
	return c.st
}

func (c *wireConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if c.armed {
		c.st.writes++
		c.sent.Store(true)
	}
	c.pending = true
	c.mu.Unlock()
	n, err := c.Conn.Write(b)
	if err != nil {
		c.mu.Lock()
		if c.armed && c.st.writeErr == nil {
			c.st.writeErr = err
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *wireConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.armed {
		c.st.reads++
		if c.pending {
			c.st.trips++
		}
	}
	c.pending = false
	c.mu.Unlock()
	return c.Conn.Read(b)
}

func (c *wireConn) Close() error {
	c.closed.Do(func() {
		if c.forget != nil {
			c.forget()
		}
	})
	return c.Conn.Close()
}

// peek is peerClosed; the tests turn it off to reach the failed writes it
// would have spared.
var peek = peerClosed

// closedByPeer tells whether Postgres has closed this idle connection: on a
// connection between statements nothing is due from Postgres, so a byte or
// an end of file waiting on it is its goodbye (a FATAL message, then the
// close); at worst a connection that got an unprompted notice is replaced.
// It looks without reading or blocking; false when it cannot tell.
func (c *wireConn) closedByPeer() bool {
	sc, ok := c.Conn.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	if err := rc.Control(func(fd uintptr) { closed = peek(fd) }); err != nil {
		return true // the socket is closed already
	}
	return closed
}
