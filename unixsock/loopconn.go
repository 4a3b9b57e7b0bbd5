package unixsock

import (
	"bytes"
	"io"

	"golang.org/x/sys/unix"

	"pgmirror/mirror"
)

// A client's life between its event loop and its handoffs: the loop reads
// and runs what it can answer at once; the first command it cannot, and
// everything after it, go to one goroutine of the client's, which gives
// the client back to the loop when it has answered them all.

// readable reads what the client sent (the loop calls it, with the loop's
// buffer) and answers it, or hands it off.
func (c *client) readable(buf []byte) {
	n, err := rawRead(c.fd, buf)
	if err == unix.EAGAIN || err == unix.EINTR {
		return
	}
	if n <= 0 {
		if err == nil {
			err = io.EOF
		}
		c.readFailed(err)
		c.disarm()
		go c.finish()
		return
	}
	c.info.active.Store(c.lp.now)
	c.onLoop = true
	if c.trk.tc != nil {
		c.holdOutput() // invalidations wait for the replies of the reads before them (runAll's rule)
	}
	in := buf[:n]
	for len(in) > 0 {
		cmds, used, perr := c.p.Parse(in, c.cmds[:0], maxBatch)
		in = in[used:]
		c.setInput(c.p.Buffered() + c.p.Returned())
		for i, args := range cmds {
			if !c.runOnLoop(args) {
				_ = c.flush() // the replies so far leave now, not after the command that waits
				c.handoff(cmds[i:], in, perr)
				return
			}
			cmds[i] = nil
			if len(c.wbuf) >= flushThreshold || len(c.segs) > 0 {
				_ = c.flush()
			}
			// A long reply, or a large value sent from the mirror's memory,
			// was sent: past the client's output bound the rest waits off
			// the loop for the output to drain, so a pipeline of large GETs
			// holds one value at a time beyond the bound.
			if c.sent {
				c.sent = false
				if c.werr != nil || c.out.over(c.s.MaxClientOutput) {
					c.handoff(cmds[i+1:], in, perr)
					return
				}
			}
		}
		clear(cmds)
		c.cmds = cmds[:0]
		if perr != nil {
			c.handoff(nil, nil, perr) // answers the protocol error, then closes
			return
		}
	}
	_ = c.flush()
	if c.holding {
		c.holding = false
		c.out.release(c)
	}
	c.setInput(c.p.Buffered())
	c.onLoop = false
	sent := c.sent
	c.sent = false
	if c.werr != nil || sent && c.out.over(c.s.MaxClientOutput) {
		// More output waits than the client's bound: stop reading it
		// until it drains, as the handoff's flush waits.
		c.handoff(nil, nil, nil)
	}
}

// runOnLoop runs a command the loop may answer at once, and reports
// whether it did: a command that may wait, or costs more than a lookup, is
// not run (nothing is answered) and is left for a handoff, as is every
// command of a client in a transaction, subscribed, or not yet
// authenticated, and one of more than maxLoopArgs arguments.
//
// A tracking client's read registers its keys first, as dispatch does,
// unless the tracking table's lock is taken (the loop does not wait for
// it). A command handed off after that leaves the client's CLIENT CACHING
// state as it found it: dispatch goes through it again (and registering a
// key twice changes nothing).
func (c *client) runOnLoop(args [][]byte) bool {
	if len(args) == 0 {
		return true
	}
	if len(args) > maxLoopArgs || c.txn.multi != nil || c.subscribed() || c.s.Password != "" && !c.info.authed {
		return false
	}
	cmd := c.s.commands().lookup(args[0])
	if cmd == nil || cmd.now == nil || !cmd.arityOK(len(args)) {
		return false
	}
	// A command the loop runs answers LOADING itself while the mirror
	// loads (its reads do): no look at the mirror's state here, but for
	// a tracking client, whose refused read must not register its keys.
	if tc := c.trk.tc; tc != nil {
		if cmd.has(flagMirror) && c.s.Mirror.State() == mirror.StateLoading {
			return false
		}
		wasCaching, wasClear := c.trk.caching, c.trk.clear
		if !c.beforeCommandNow(cmd, args) || !cmd.now(c, args) { // tracking.go
			c.trk.caching, c.trk.clear = wasCaching, wasClear
			return false
		}
	} else if !cmd.now(c, args) {
		return false
	}
	c.s.stats.commands.Add(1)
	c.s.stats.loopCommands.Add(1)
	cmd.calls.Add(1)
	c.info.last.Store(cmd)
	return true
}

// handoff is what a client's goroutine runs: the commands parsed, the
// input after them, and the protocol error that ended the input.
type handoff struct {
	cmds [][][]byte
	in   []byte
	perr error
}

// handoff leaves the loop: the client's goroutine runs cmds, then the
// input in (copied: it is the loop's buffer), and gives the client back.
func (c *client) handoff(cmds [][][]byte, in []byte, perr error) {
	c.onLoop = false
	h := handoff{cmds: append([][][]byte(nil), cmds...), in: bytes.Clone(in), perr: perr}
	c.account(int64(len(h.in))) // at most one read: work gives it back
	clear(cmds)
	c.cmds = c.cmds[:0]
	c.disarm()
	c.s.stats.handoffs.Add(1)
	c.s.handoffs.Add(1)
	go c.work(h)
}

// work runs a handoff and gives the client back to its loop, or ends it.
func (c *client) work(h handoff) {
	defer c.s.handoffs.Done()
	defer c.account(-int64(len(h.in))) // the input handoff counted
	if err := c.flush(); err != nil {  // waits for the output the loop left over the bound
		h.cmds, h.in, h.perr = nil, nil, nil
	}
	c.runAll(h.cmds)
	in, perr := h.in, h.perr
	for len(in) > 0 && perr == nil && !c.quit && c.werr == nil {
		var cmds [][][]byte
		var used int
		cmds, used, perr = c.p.Parse(in, c.cmds[:0], maxBatch)
		in = in[used:]
		c.setInput(c.p.Buffered() + c.p.Returned())
		c.runAll(cmds)
		c.cmds = cmds[:0]
	}
	if perr != nil && c.werr == nil {
		c.protocolError(perr)
	}
	err := c.flush()
	if c.holding {
		c.holding = false
		c.out.release(c)
	}
	c.setInput(c.p.Buffered())
	if err != nil || c.quit || perr != nil || !c.rearm() {
		c.finish()
	}
}

// runAll runs commands in order until one ends the connection.
func (c *client) runAll(cmds [][][]byte) {
	if len(cmds) > 0 && (c.sub != nil || c.trk.tc != nil) {
		c.holdOutput()
	}
	for i, args := range cmds {
		c.s.stats.commands.Add(1)
		c.dispatch(args)
		cmds[i] = nil
		if c.quit || c.werr != nil {
			clear(cmds[i:])
			return
		}
		if len(c.wbuf) >= flushThreshold || len(c.segs) > 0 {
			_ = c.flush()
		}
	}
}

// finish ends the client: its output written (or failed), its socket
// closed, and the server told.
func (c *client) finish() {
	c.close()
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	c.s.wg.Done()
}

// armed reports whether the loop reads the client.
func (c *client) armed() bool { return !c.handed.Load() }

// disarm stops the loop reading the client.
func (c *client) disarm() {
	c.handed.Store(true)
	c.pollMu.Lock()
	c.wantIn = false
	c.pollErr(c.pollLocked())
	c.pollMu.Unlock()
}

// rearm gives the client back to its loop; false when the server drains
// or the loop stopped, and the client should end.
func (c *client) rearm() bool {
	l := c.lp
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed || c.s.draining.Load() {
		return false
	}
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	c.wantIn = true
	if err := c.pollLocked(); err != nil {
		c.wantIn = false
		c.pollErr(err)
		return false
	}
	// Only once registered: until then the loop may not read the client
	// (a failed registration leaves it to this goroutine to end).
	c.handed.Store(false)
	return true
}

// setWantOut records whether the client's output waits for the socket to
// be writable, for the loop to write it then. The outbox calls it with
// its lock held.
func (c *client) setWantOut(on bool) {
	if c.lp == nil {
		return
	}
	c.pollMu.Lock()
	changed := c.wantOut != on
	c.wantOut = on
	if changed {
		c.pollErr(c.pollLocked())
	}
	c.pollMu.Unlock()
	if changed {
		c.lp.setWaiting(c, on, !c.onLoop) // the loop itself looks again before it waits
	}
}

// pollLocked registers with the loop's epoll the events the client waits
// for: none removes it.
func (c *client) pollLocked() error {
	if c.fdGone || c.lp == nil {
		return nil
	}
	var want uint32
	if c.wantIn {
		want |= pollIn
	}
	if c.wantOut {
		want |= pollOut
	}
	if want == c.polled {
		return nil
	}
	ev := unix.EpollEvent{Events: want, Fd: int32(c.fd)}
	var err error
	switch {
	case want == 0:
		err = unix.EpollCtl(c.lp.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	case c.polled == 0:
		err = unix.EpollCtl(c.lp.epfd, unix.EPOLL_CTL_ADD, c.fd, &ev)
	default:
		err = unix.EpollCtl(c.lp.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
	}
	if err == nil {
		c.polled = want
	}
	return err
}

// pollErr logs a failed epoll_ctl, which leaves the client unserved: it
// is disconnected.
func (c *client) pollErr(err error) {
	if err == nil {
		return
	}
	c.s.Logger.Error("event loop: epoll_ctl failed; disconnecting the client", "client", c.id, "error", err)
	if !c.fdGone {
		_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
}

// kill disconnects the client from another goroutine: its socket is shut
// down, so the loop reads its end (or its goroutine's next write fails),
// and the client ends the usual way.
func (c *client) kill() {
	if c.lp == nil {
		return
	}
	c.pollMu.Lock()
	if !c.fdGone {
		_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
	c.pollMu.Unlock()
}

// closeFD closes the socket, once no one writes it any more.
func (c *client) closeFD() {
	if c.lp == nil {
		return
	}
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	if c.fdGone {
		return
	}
	c.wantIn, c.wantOut = false, false
	_ = c.pollLocked()
	c.lp.remove(c)
	c.fdGone = true
	_ = unix.Close(c.fd)
}
