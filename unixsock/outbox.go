package unixsock

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Output sizes.
const (
	// DefaultMaxClientOutput bounds the output waiting for one client:
	// while more is pending the client is not read from, and a push that
	// would go past it disconnects the client.
	DefaultMaxClientOutput = 1 << 20
	// DefaultOutputTimeout disconnects a client whose output has not
	// drained for this long.
	DefaultOutputTimeout = 30 * time.Second
	// writeChunk is the most one write of the writer goroutine sends, so
	// its deadline measures progress, not the size of a reply.
	writeChunk = 256 << 10
)

// segKind says who owns the bytes of a segment.
type segKind uint8

const (
	segOwned  segKind = iota // a copy the outbox holds, counted in the client's buffers
	segShared                // a value owned elsewhere (the mirror's), never written to
	segWbuf                  // part of the command loop's reply buffer: copied when queued
)

// segment is a run of output bytes.
type segment struct {
	b    []byte
	kind segKind
}

// outbox is a client's output queue: the replies the socket did not take
// at once, and pushes (keyspace messages) from the publisher, in order.
// One goroutine at a time holds the write side (writing): the command loop
// or the publisher, which only ever try a write that does not block, or
// the writer goroutine they start when the socket is full, which writes
// with a deadline per chunk and exits when the queue is empty.
//
// It is bounded: the command loop waits while more than the client's
// output bound is pending (the value it shares included), so a client that
// does not read its replies is not read from either; a push that would
// take the queue's copies past the bound, or its messages past
// --subscriber-buffer, disconnects the client.
type outbox struct {
	mu      sync.Mutex
	cond    sync.Cond // signalled when bytes are written or the queue fails
	segs    []segment // waiting, in order; head bytes of segs[0] are written
	head    int
	pending int64  // bytes of segs not yet written, shared values included
	owned   int64  // bytes of the copies the outbox holds (segs and side)
	held    bool   // the command loop is answering: pushes wait in side
	side    []byte // pushes that arrived while held
	pushes  int    // messages queued since the queue was last empty
	writing bool   // a goroutine holds the write side
	err     error  // the connection failed or is closing: nothing more is written
}

// hold makes pushes wait until release, so none splits a reply.
func (o *outbox) hold() {
	o.mu.Lock()
	o.held = true
	o.mu.Unlock()
}

// release lets the pushes that waited go after the replies, and starts
// writing them.
func (o *outbox) release(c *client) {
	o.mu.Lock()
	o.held = false
	if len(o.side) > 0 {
		o.segs = append(o.segs, segment{o.side, segOwned})
		o.pending += int64(len(o.side))
		o.side = nil
	}
	o.kickLocked(c)
	o.mu.Unlock()
}

// takeSide returns the pushes waiting for release, which the caller puts
// among its replies (they are no longer counted as the outbox's copies).
func (o *outbox) takeSide(c *client) []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	side := o.side
	o.side = nil
	o.owned -= int64(len(side))
	c.account(-int64(len(side)))
	if len(o.segs) == 0 {
		o.pushes = 0
	}
	return side
}

// send writes segs, or queues what the socket does not take now; then
// it waits while more than limit bytes are pending.
func (o *outbox) send(c *client, segs []segment, limit int64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return o.err
	}
	switch {
	case len(segs) == 0:
	case o.writing || len(o.segs) > 0:
		o.queueLocked(c, segs, false)
		if !o.writing {
			// Pushes queued before the batch held the output, whose kick
			// the hold skipped: nobody writes them, so start the writer,
			// or the wait below never ends.
			o.writing = true
			go o.run(c)
		}
	default:
		o.writing = true
		o.mu.Unlock()
		n, err := c.writeNow(segs)
		o.mu.Lock()
		if err != nil {
			o.writing = false
			o.failLocked(c, err)
			return o.err
		}
		for len(segs) > 0 && n >= len(segs[0].b) {
			n -= len(segs[0].b)
			segs = segs[1:]
		}
		if len(segs) > 0 {
			segs[0].b = segs[0].b[n:]
			o.queueLocked(c, segs, true) // before any push queued meanwhile
		}
		if len(o.segs) == 0 {
			o.writing = false
		} else {
			go o.run(c)
		}
	}
	for o.pending > limit && o.err == nil {
		o.cond.Wait()
	}
	return o.err
}

// queueLocked adds segs to the queue, at its front when first, copying
// the parts of the reply buffer.
func (o *outbox) queueLocked(c *client, segs []segment, first bool) {
	add := make([]segment, 0, len(segs))
	for _, s := range segs {
		if len(s.b) == 0 {
			continue
		}
		if s.kind == segWbuf {
			if n := len(add); n > 0 && add[n-1].kind == segOwned {
				add[n-1].b = append(add[n-1].b, s.b...)
			} else {
				add = append(add, segment{append(make([]byte, 0, len(s.b)), s.b...), segOwned})
			}
			o.owned += int64(len(s.b))
			c.account(int64(len(s.b)))
		} else {
			add = append(add, s)
		}
		o.pending += int64(len(s.b))
	}
	if first {
		o.segs = append(add, o.segs...)
	} else {
		o.segs = append(o.segs, add...)
	}
}

// drain blocks until everything queued is written or the queue failed.
func (o *outbox) drain() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for (o.writing || len(o.segs) > 0) && o.err == nil {
		o.cond.Wait()
	}
}

// push queues a message for a subscriber. It reports false when the
// message would take the client past its bounds: the caller drops it.
func (o *outbox) push(c *client, msg []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return true // closing: nothing to deliver
	}
	if o.owned+int64(len(msg)) > c.s.MaxClientOutput || o.pushes >= c.s.SubscriberBuffer {
		return false
	}
	o.owned += int64(len(msg))
	c.account(int64(len(msg)))
	o.pushes++
	if o.held {
		o.side = append(o.side, msg...)
		return true
	}
	if n := len(o.segs); n > 0 && o.segs[n-1].kind == segOwned {
		o.segs[n-1].b = append(o.segs[n-1].b, msg...)
	} else {
		o.segs = append(o.segs, segment{append(make([]byte, 0, max(len(msg), 512)), msg...), segOwned})
	}
	o.pending += int64(len(msg))
	return true
}

// kick starts writing what pushes queued, unless the command loop will.
func (o *outbox) kick(c *client) {
	o.mu.Lock()
	o.kickLocked(c)
	o.mu.Unlock()
}

func (o *outbox) kickLocked(c *client) {
	if o.held || o.writing || o.err != nil || len(o.segs) == 0 {
		return
	}
	o.writing = true
	segs := append([]segment(nil), o.segs...)
	segs[0].b = segs[0].b[o.head:]
	o.mu.Unlock()
	n, err := c.writeNow(segs)
	o.mu.Lock()
	o.advanceLocked(c, n)
	if err != nil {
		o.writing = false
		o.failLocked(c, err)
		return
	}
	if len(o.segs) == 0 {
		o.writing = false
		o.cond.Broadcast()
		return
	}
	go o.run(c)
}

// run is the writer goroutine: it writes the queue with a deadline per
// chunk until the queue is empty, and disconnects a client whose output
// did not drain within the deadline.
func (o *outbox) run(c *client) {
	var bufs net.Buffers
	for {
		o.mu.Lock()
		if o.err != nil || len(o.segs) == 0 {
			if o.err == nil {
				_ = c.nc.SetWriteDeadline(time.Time{}) // the next holder may write without blocking
			}
			o.writing = false
			o.cond.Broadcast()
			o.mu.Unlock()
			return
		}
		bufs = bufs[:0]
		size := 0
		for i, s := range o.segs {
			b := s.b
			if i == 0 {
				b = b[o.head:]
			}
			if size+len(b) > writeChunk {
				b = b[:writeChunk-size]
			}
			bufs = append(bufs, b)
			if size += len(b); size >= writeChunk {
				break
			}
		}
		o.mu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.OutputTimeout))
		w := bufs
		n, err := w.WriteTo(c.nc)
		o.mu.Lock()
		o.advanceLocked(c, int(n))
		if err != nil {
			o.failLocked(c, err)
		}
		o.cond.Broadcast()
		o.mu.Unlock()
	}
}

// advanceLocked drops n written bytes from the front of the queue.
func (o *outbox) advanceLocked(c *client, n int) {
	if o.err != nil {
		return // the queue was dropped
	}
	o.pending -= int64(n)
	for n > 0 && len(o.segs) > 0 {
		s := &o.segs[0]
		rest := len(s.b) - o.head
		if n < rest {
			o.head += n
			n = 0
			break
		}
		n -= rest
		if s.kind == segOwned {
			o.owned -= int64(len(s.b))
			c.account(-int64(len(s.b)))
		}
		*s = segment{}
		o.segs, o.head = o.segs[1:], 0
	}
	if len(o.segs) == 0 {
		o.segs = nil
		if len(o.side) == 0 {
			o.pushes = 0
		}
	}
	if n > 0 || o.pending < 0 {
		panic("unixsock: outbox advanced past its queue")
	}
}

// failLocked ends the output after a write error: the queue is dropped
// and the connection closed. A deadline that expired is an eviction.
func (o *outbox) failLocked(c *client, err error) {
	if o.err != nil {
		return
	}
	o.err = err
	c.account(-o.owned)
	o.segs, o.side, o.head, o.pending, o.owned = nil, nil, 0, 0, 0
	o.cond.Broadcast()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.s.evict(c, reasonOutputTimeout, "output not drained within --client-output-timeout")
	}
	_ = c.nc.Close()
}

// closeOutput makes further writes fail (the connection is closing).
func (o *outbox) closeOutput(c *client) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failLocked(c, net.ErrClosed)
}

// writeNow writes as much of segs as the socket takes without blocking
// and returns how many bytes that was. A connection that is not a socket
// takes nothing here: the writer goroutine writes it all. Only the holder
// of the write side calls it.
func (c *client) writeNow(segs []segment) (int, error) {
	if c.raw == nil {
		return 0, nil
	}
	c.nb = nonblockingWrite{segs: segs}
	err := c.raw.Write(c.nbWrite)
	n, werr := c.nb.total, c.nb.err
	c.nb = nonblockingWrite{}
	if werr != nil {
		return n, werr
	}
	return n, err
}

// nonblockingWrite is one call of writeNow: the segments, and what the
// write did.
type nonblockingWrite struct {
	segs  []segment
	total int
	err   error
}

// write is the syscall.RawConn callback of writeNow: it writes until the
// socket would block, and never asks to wait.
func (w *nonblockingWrite) write(fd uintptr) bool {
	for _, s := range w.segs {
		b := s.b
		for len(b) > 0 {
			n, err := syscall.Write(int(fd), b)
			if n > 0 {
				w.total += n
				b = b[n:]
			}
			switch {
			case err == syscall.EINTR:
			case err == syscall.EAGAIN:
				return true
			case err != nil:
				w.err = err
				return true
			case n <= 0:
				return true
			}
		}
	}
	return true
}
