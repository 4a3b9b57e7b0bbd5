package unixsock

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
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
	// writeChunk and writeSegs bound one write of the queue.
	writeChunk = 256 << 10
	writeSegs  = 64
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
// Every write is one that does not block, by whoever holds the write side
// (writing) for its duration: the goroutine answering the client's
// commands, the publisher, or the event loop, which writes what is queued
// when the socket is writable again and disconnects a client whose output
// has not moved for --client-output-timeout.
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
	pending int64     // bytes of segs not yet written, shared values included
	owned   int64     // bytes of the copies the outbox holds (segs and side)
	held    bool      // the command loop is answering: pushes wait in side
	side    []byte    // pushes that arrived while held
	pushes  int       // messages queued since the queue was last empty
	writing bool      // a goroutine holds the write side
	err     error     // the connection failed or is closing: nothing more is written
	waitOut bool      // segs wait for the loop to see the socket writable
	moved   time.Time // when the queue last made progress (or started waiting)
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
		// Behind what waits (pushes queued before the batch held the
		// output, whose kick the hold skipped, included): the loop writes
		// it all in order (settleLocked).
		o.queueLocked(c, segs, false)
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
		o.writing = false
		o.cond.Broadcast()
	}
	o.settleLocked(c)
	// The event loop never waits: it stops reading the client instead
	// (loopconn.go).
	for o.pending > limit && o.err == nil && !c.onLoop {
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
	o.writeQueuedLocked(c)
}

// writable writes what is queued, as much as the socket takes: the event
// loop calls it when the socket is writable.
func (o *outbox) writable(c *client) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.writing || o.err != nil {
		return // the holder settles the queue when it is done
	}
	if len(o.segs) == 0 {
		o.settleLocked(c)
		return
	}
	o.writeQueuedLocked(c)
}

// writeQueuedLocked writes the head of the queue (up to writeChunk bytes in
// writeSegs pieces) without blocking, holding the write side meanwhile,
// and settles what is left.
func (o *outbox) writeQueuedLocked(c *client) {
	bufs := make([]segment, 0, min(len(o.segs), writeSegs))
	size := 0
	for i, s := range o.segs {
		b := s.b
		if i == 0 {
			b = b[o.head:]
		}
		b = b[:min(len(b), writeChunk-size)]
		bufs = append(bufs, segment{b, segShared})
		if size += len(b); size >= writeChunk || len(bufs) == writeSegs {
			break
		}
	}
	o.writing = true
	o.mu.Unlock()
	n, err := c.writeNow(bufs)
	o.mu.Lock()
	o.writing = false
	o.advanceLocked(c, n)
	o.cond.Broadcast()
	if err != nil {
		o.failLocked(c, err)
		return
	}
	o.settleLocked(c)
}

// settleLocked registers the client with its loop for writability while
// its queue holds output, and takes it off when it does not.
func (o *outbox) settleLocked(c *client) {
	want := len(o.segs) > 0 && o.err == nil
	if want == o.waitOut {
		return
	}
	o.waitOut = want
	if want {
		o.moved = time.Now()
	}
	c.setWantOut(want)
}

// stalledSince returns how long the queue has waited without progress.
func (o *outbox) stalledSince(now time.Time) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.waitOut || o.writing {
		return 0
	}
	return now.Sub(o.moved)
}

// timedOut disconnects the client whose output did not move for
// --client-output-timeout.
func (o *outbox) timedOut(c *client) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.waitOut && !o.writing && o.err == nil && time.Since(o.moved) > c.s.OutputTimeout {
		o.failLocked(c, os.ErrDeadlineExceeded)
	}
}

// over reports whether more than limit bytes wait.
func (o *outbox) over(limit int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pending > limit && o.err == nil
}

// advanceLocked drops n written bytes from the front of the queue.
func (o *outbox) advanceLocked(c *client, n int) {
	if o.err != nil {
		return // the queue was dropped
	}
	if n > 0 {
		o.moved = time.Now() // progress, whoever wrote
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
	o.settleLocked(c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.s.evict(c, reasonOutputTimeout, "output not drained within --client-output-timeout")
	}
	c.kill()
}

// closeOutput makes further writes fail (the connection is closing).
func (o *outbox) closeOutput(c *client) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.failLocked(c, net.ErrClosed)
	for o.writing { // a write in progress: the socket is closed after it
		o.cond.Wait()
	}
}

// writeNow writes as much of segs as the socket takes without blocking
// and returns how many bytes that was. A client without a socket takes
// nothing. Only the holder of the write side calls it.
func (c *client) writeNow(segs []segment) (int, error) {
	if c.lp == nil {
		return 0, nil
	}
	var bufs [writeSegs][]byte
	var iov [writeSegs]unix.Iovec
	total := 0
	for len(segs) > 0 {
		k := 0
		for ; k < len(segs) && k < writeSegs; k++ {
			bufs[k] = segs[k].b
		}
		var n int
		var err error
		c.s.stats.writes.Add(1)
		if k == 1 {
			n, err = rawWrite(c.fd, bufs[0])
		} else {
			n, err = rawWritev(c.fd, bufs[:k], iov[:])
		}
		clear(bufs[:k])
		if n > 0 {
			total += n
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return total, nil
		case err != nil:
			return total, err
		}
		for len(segs) > 0 && n >= len(segs[0].b) {
			n -= len(segs[0].b)
			segs = segs[1:]
		}
		if n > 0 {
			return total, nil // a short write: the socket is full
		}
	}
	return total, nil
}
