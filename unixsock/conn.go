package unixsock

import (
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Sizes of the connection loop.
const (
	// maxBatch bounds the commands parsed before they run: with one read's
	// bytes, it bounds what a batch holds.
	maxBatch = 256
	// flushThreshold: replies are sent once this many bytes are built,
	// even in the middle of a batch or of one long reply.
	flushThreshold = 64 << 10
	// bigValue: a bulk reply this long is sent from the value's own memory
	// instead of being copied into the reply buffer.
	bigValue = 16 << 10
	// keptReplyBuffer: a reply buffer that grew past this is dropped after
	// use, so an idle connection holds little.
	keptReplyBuffer = 16 << 10
	// accountFrom: a connection's input is counted against
	// --max-client-buffers from this size. Below it, like the connection's
	// other fixed costs, it is bounded by --max-clients, and a batch of
	// ordinary commands costs no update of the shared counter.
	accountFrom = 4 << 10
)

// client is one connection. Its event loop reads what it sends and parses
// it with the client's Parser; the commands run on the loop or, handed
// off, on a goroutine of the client's (loopconn.go), building their
// replies in wbuf; flush hands them to the outbox, which writes them or
// queues what the socket does not take. "The command loop" below is
// whichever of the two runs the client's commands: never both at once.
type client struct {
	s  *Server
	fd int   // the socket, non-blocking; -1 for a client without one (a script's scratch client)
	lp *loop // the event loop that watches fd

	// The loop's view of the client (loopconn.go).
	pollMu  sync.Mutex
	wantIn  bool        // read from: armed in the loop
	wantOut bool        // output waits for the socket to be writable
	polled  uint32      // the events registered with the loop's epoll; 0: none
	fdGone  bool        // fd is closed: no more epoll_ctl or shutdown on it
	handed  atomic.Bool // a goroutine runs the client's commands: the loop does not read
	onLoop  bool        // the loop runs the client's commands: nothing may wait

	id      int64
	proto   int           // 2, or 3 after HELLO 3 (the command loop's copy)
	push3   atomic.Bool   // proto == 3, for the publisher
	sub     *subscription // set by the first SUBSCRIBE or PSUBSCRIBE; its maps are guarded by hub.mu
	quit    bool
	capture bool // a script's scratch client: replies stay in wbuf, never sent
	p       Parser
	out     outbox
	cmds    [][][]byte
	vals    [][]byte // scratch of MGET on the loop

	// Replies being built by the command loop: segs then wbuf[cut:].
	wbuf    []byte
	segs    []segment
	cut     int
	holding bool  // the outbox is held: pushes wait until the batch is answered
	sent    bool  // flush sent something (the event loop checks the output bound then)
	werr    error // writing failed: the connection is closing

	inBytes int64        // input accounted (command loop only)
	used    atomic.Int64 // bytes counted against --max-client-buffers
	evicted atomic.Bool

	txn   txnState   // MULTI, WATCH (multi.go; command loop only)
	watch watchFlag  // set when a watched key changes (watch.go)
	trk   trackState // CLIENT TRACKING (tracking.go; command loop only)

	mu   sync.Mutex
	name string

	info clientInfo // CLIENT LIST's view (clientcmds.go)
}

// newClient returns the client of socket fd (-1: none).
func (s *Server) newClient(fd int) *client {
	c := &client{s: s, fd: fd, id: s.nextID.Add(1), proto: 2, p: *NewParser(s.MaxValueSize)}
	c.out.cond.L = &c.out.mu
	c.info.created = time.Now()
	return c
}

// close ends the connection once its output is written (or failed): the
// writer's deadline bounds the wait.
func (c *client) close() {
	c.leave()
	c.s.trk.gone(c)
	c.endMulti()
	c.unwatchAll()
	c.out.drain()
	c.out.closeOutput(c)
	c.closeFD()
	c.account(-c.inBytes)
	c.inBytes = 0
}

// readFailed reports a read error that is not the client leaving.
func (c *client) readFailed(err error) {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		c.s.draining.Load() || c.evicted.Load() {
		return
	}
	c.s.Logger.Debug("client read failed", "client", c.id, "error", err)
}

// protocolError answers a protocol violation; the connection then closes.
func (c *client) protocolError(err error) {
	msg := err.Error()
	if pe, ok := isProtocolError(err); ok {
		msg = pe.Error()
	}
	c.s.stats.protocolErrors.Add(1)
	c.s.Logger.Debug("closing client after a protocol error", "client", c.id, "error", msg)
	c.errorReply("ERR " + msg)
}

// holdOutput keeps pushes out of the replies of the batch in progress.
func (c *client) holdOutput() {
	if !c.holding {
		c.holding = true
		c.out.hold()
	}
}

// flush sends the replies built so far: written at once when the socket
// takes them, else queued for the event loop to write when the socket is
// writable. Then, off the loop, while more than the client's output bound
// is pending, it waits: a client that does not read its replies is not
// read from, and holds at most one reply beyond the bound. (The loop does
// not wait: it hands the client off instead.)
func (c *client) flush() error {
	if c.werr != nil || c.txn.hold {
		return c.werr
	}
	if c.cut < len(c.wbuf) {
		c.segs = append(c.segs, segment{c.wbuf[c.cut:], segWbuf})
	}
	c.werr = c.out.send(c, c.segs, c.s.MaxClientOutput)
	if len(c.segs) > 0 {
		c.sent = true
		clear(c.segs)
		c.segs = c.segs[:0]
		if cap(c.wbuf) > keptReplyBuffer {
			c.wbuf = nil
		}
		c.wbuf, c.cut = c.wbuf[:0], 0
	}
	return c.werr
}

// grew sends a long reply's first part once the buffer is full; pushes
// are held, so none can come between its parts.
func (c *client) grew() {
	if len(c.wbuf) >= flushThreshold && !c.capture {
		c.holdOutput()
		_ = c.flush()
	}
}

// setInput accounts the connection's input: the command being parsed and
// the batch being run.
func (c *client) setInput(n int64) {
	if n < accountFrom {
		n = 0
	}
	if d := n - c.inBytes; d != 0 {
		c.inBytes = n
		c.account(d)
	}
}

// setProto switches the protocol version of replies and pushes.
func (c *client) setProto(proto int) {
	c.proto = proto
	c.push3.Store(proto == 3)
}

// Replies.

func (c *client) ok()             { c.wbuf = append(c.wbuf, "+OK\r\n"...) }
func (c *client) status(s string) { c.wbuf = appendLine(c.wbuf, '+', s) }
func (c *client) integer(n int64) { c.wbuf = appendNumber(c.wbuf, ':', n); c.grew() }
func (c *client) array(n int)     { c.wbuf = appendNumber(c.wbuf, '*', int64(n)); c.grew() }

// bulk sends b; a long one from its own memory, which must not change.
func (c *client) bulk(b []byte) {
	if len(b) >= bigValue && !c.capture {
		c.wbuf = appendNumber(c.wbuf, '$', int64(len(b)))
		c.segs = append(c.segs, segment{c.wbuf[c.cut:], segWbuf}, segment{b, segShared})
		c.cut = len(c.wbuf)
		// Sent now: the next value of a long reply waits until this one
		// is (almost) written, so one reply holds one value at a time.
		c.holdOutput()
		_ = c.flush()
		c.wbuf = append(c.wbuf, '\r', '\n')
		return
	}
	c.wbuf = appendNumber(c.wbuf, '$', int64(len(b)))
	c.wbuf = append(append(c.wbuf, b...), '\r', '\n')
	c.grew()
}

func (c *client) bulkString(s string) {
	c.bulk(unsafe.Slice(unsafe.StringData(s), len(s))) // strings never change
}

// errorReply sends an error; msg starts with its code (ERR, LOADING, ...).
func (c *client) errorReply(msg string) { c.wbuf = appendLine(c.wbuf, '-', msg) }

func (c *client) null() {
	if c.proto == 3 {
		c.wbuf = append(c.wbuf, "_\r\n"...)
		return
	}
	c.wbuf = append(c.wbuf, "$-1\r\n"...)
}

// mapHeader starts a map of n pairs: a RESP3 map, or a flat array in RESP2.
func (c *client) mapHeader(n int) {
	if c.proto == 3 {
		c.wbuf = appendNumber(c.wbuf, '%', int64(n))
		return
	}
	c.array(2 * n)
}

// verbatim sends text: a verbatim string in RESP3, a bulk string in RESP2.
func (c *client) verbatim(text string) {
	if c.proto == 3 {
		c.wbuf = appendNumber(c.wbuf, '=', int64(len(text)+4))
		c.wbuf = append(append(append(c.wbuf, "txt:"...), text...), '\r', '\n')
		c.grew()
		return
	}
	c.bulkString(text)
}

// pushHeader starts a push message: a RESP3 push, or an array in RESP2.
func (c *client) pushHeader(n int) {
	if c.proto == 3 {
		c.wbuf = appendNumber(c.wbuf, '>', int64(n))
		return
	}
	c.array(n)
}

func appendNumber(b []byte, kind byte, n int64) []byte {
	return append(strconv.AppendInt(append(b, kind), n, 10), '\r', '\n')
}

// appendLine appends a simple string or error, its line breaks made spaces.
func appendLine(b []byte, kind byte, s string) []byte {
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	}
	return append(append(append(b, kind), s...), '\r', '\n')
}
