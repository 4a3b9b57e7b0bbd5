package listener

import (
	"context"
	"net"
	"sync"
	"time"
)

// dialTimeout bounds a connection attempt when the DSN sets no connect_timeout.
const dialTimeout = 10 * time.Second

// dialer is the pq.Dialer of the listener. It remembers its open
// connections so the listener can cut them: pq.Listener.Ping has no timeout
// and Close waits behind a stuck Ping, so closing the socket underneath is
// the only way out of a half-open connection.
type dialer struct {
	d     net.Dialer
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

func newDialer() *dialer {
	return &dialer{
		d:     net.Dialer{Timeout: dialTimeout, KeepAlive: 15 * time.Second},
		conns: map[*trackedConn]struct{}{},
	}
}

// Dial implements pq.Dialer.
func (d *dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialTimeout implements pq.Dialer.
func (d *dialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

// DialContext implements pq.DialerContext.
func (d *dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, d: d}
	d.mu.Lock()
	d.conns[tc] = struct{}{}
	d.mu.Unlock()
	return tc, nil
}

// killAll closes every open connection of the dialer.
func (d *dialer) killAll() {
	d.mu.Lock()
	conns := make([]*trackedConn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

type trackedConn struct {
	net.Conn
	d    *dialer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.d.mu.Lock()
		delete(c.d.conns, c)
		c.d.mu.Unlock()
	})
	return c.Conn.Close()
}
