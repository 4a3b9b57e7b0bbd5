// Package hung holds pgmirror's ways out of a hung Postgres connection.
// lib/pq honours a context while it dials and while it sends, but not while
// it waits for the answer of a peer that does not reply: a half-open
// connection, or a server that accepts and never answers, blocks a call for
// as long as the kernel keeps the socket, which can be many minutes. The
// calls that must return on time even then go through one of the two:
// Aside, which stops waiting for the call (connection checks, the writer's
// batches), or a Dialer, whose connections can be cut underneath the driver
// (the listener's connection). It depends on nothing else of pgmirror, so
// that both pgstore and the listener can use it.
package hung

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Aside runs call on a goroutine of its own and returns its result with ok
// true; or, once ctx is done and grace more has passed (at once when grace
// is 0), it stops waiting and returns ok false. A call given up on goes on
// until the driver returns (a dead peer's socket times out, the server
// answers at last); its result is dropped, and late, if not nil, runs then.
// A call that ends as Aside gives up counts as finished, not given up on.
func Aside[T any](ctx context.Context, grace time.Duration, call func() T, late func()) (res T, ok bool) {
	var state atomic.Int32 // 0 running, 1 finished, 2 given up on
	ch := make(chan T, 1)
	go func() {
		ch <- call()
		if !state.CompareAndSwap(0, 1) && late != nil {
			late()
		}
	}()
	select {
	case res = <-ch:
		return res, true
	case <-ctx.Done():
	}
	if grace > 0 {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case res = <-ch:
			return res, true
		case <-t.C:
		}
	}
	if !state.CompareAndSwap(0, 2) {
		return <-ch, true // it just finished
	}
	return res, false
}

// Dialer is a pq.Dialer (and pq.DialerContext) that remembers its open
// connections so that its user can cut them: pq.Listener.Ping has no
// timeout and pq.Listener.Close waits behind a stuck Ping, so closing the
// socket underneath is the only way out of a half-open connection there.
type Dialer struct {
	d     net.Dialer
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

// NewDialer returns a Dialer whose attempts give up after timeout, and
// whose connections send TCP keepalives every 15 seconds.
func NewDialer(timeout time.Duration) *Dialer {
	return &Dialer{
		d:     net.Dialer{Timeout: timeout, KeepAlive: 15 * time.Second},
		conns: map[*trackedConn]struct{}{},
	}
}

// Dial implements pq.Dialer.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialTimeout implements pq.Dialer.
func (d *Dialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, network, address)
}

// DialContext implements pq.DialerContext.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
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

// KillAll closes every open connection of the dialer.
func (d *Dialer) KillAll() {
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
	d    *Dialer
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
