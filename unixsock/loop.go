package unixsock

import (
	"errors"
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The connection layer: a few event loops, each an epoll instance and one
// goroutine, watch every client socket. A loop reads what a client sent
// into its own buffer, parses it, and answers the commands the mirror
// answers at once (GET of a value it holds, EXISTS, TTL, PING, ...) in the
// same pass, writing a pipeline's replies with one write. A command that
// may wait (a write, a loader, a value to fetch, MULTI, scripts) or costs
// more than a lookup (KEYS, a large MGET) is handed off: the client leaves
// the loop for one goroutine of its own that runs it and the rest of what
// was read, and comes back to the loop when that is done. While a client
// is handed off its socket is not read, so a client that sends faster
// than its commands run is held back by its socket, as Redis holds a
// blocked client; one handoff per client is in flight, and its replies and
// pushes leave in order because they share the client's output queue.
//
// Output the socket does not take at once waits in the client's outbox;
// the loop writes it when the socket is writable again (EPOLLOUT) and
// disconnects a client whose output did not move for --client-output-timeout.
//
// Why not gnet: it cannot stop reading a connection (its loop reads every
// readable socket into an unbounded inbound buffer), so a client that
// pipelines writes faster than Postgres commits them would have to be
// disconnected once past a bound instead of being slowed down.

// Sizes and periods of the loops.
const (
	// loopReadBuffer is what one read of a loop takes: shared by the
	// loop's clients (a command not complete is copied to its client's
	// parser), so an idle client holds no read buffer at all.
	loopReadBuffer = 64 << 10
	// loopEvents is the most events one epoll_wait returns.
	loopEvents = 256
	// outputCheck is how often a loop with clients whose output waits
	// checks their --client-output-timeout.
	outputCheck = 100 * time.Millisecond
	// DefaultLoopSpin is how long a loop serving a few busy clients polls
	// for their next command before it sleeps (Server.LoopSpin, --loop-spin).
	DefaultLoopSpin = 50 * time.Microsecond
)

// Epoll interests of a client.
const (
	pollIn  = unix.EPOLLIN | unix.EPOLLRDHUP
	pollOut = unix.EPOLLOUT
)

// loop is one event loop: its epoll instance, the clients it watches by
// descriptor, and an eventfd that wakes it.
type loop struct {
	s       *Server
	epfd    int
	wakefd  int
	buf     []byte
	done    chan struct{}
	now     int64 // Unix nanoseconds when the last wait returned (the loop's clock)
	checked int64 // when checkOutput last looked
	spin    spin  // whether to poll before sleeping

	mu      sync.Mutex
	clients map[int32]*client    // every client of this loop, armed or handed off
	closed  bool                 // the loop stopped: a client coming back is closed instead
	waiting map[*client]struct{} // clients whose output waits for EPOLLOUT (deadline checks)
}

// loopCount is how many loops a server runs: one per two processors, as
// one loop keeps a core busy and the handoffs, Postgres's replies and the
// mirror's appliers need the others.
func loopCount() int {
	return max(1, runtime.GOMAXPROCS(0)/2)
}

// startLoops creates the server's loops.
func (s *Server) startLoops() error {
	n := s.Loops
	if n <= 0 {
		n = loopCount()
	}
	for range n {
		l, err := newLoop(s)
		if err != nil {
			s.stopLoops()
			return err
		}
		s.loops = append(s.loops, l)
		go l.run()
	}
	return nil
}

func newLoop(s *Server) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, errors.New("event loop: epoll_create1: " + err.Error())
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, errors.New("event loop: eventfd: " + err.Error())
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, errors.New("event loop: epoll_ctl: " + err.Error())
	}
	return &loop{s: s, epfd: epfd, wakefd: wakefd, buf: make([]byte, loopReadBuffer), done: make(chan struct{}),
		spin:    spin{max: max(s.LoopSpin, 0)},
		clients: map[int32]*client{}, waiting: map[*client]struct{}{}}, nil
}

// stopLoops ends the loops once every client is gone, and frees them.
func (s *Server) stopLoops() {
	for _, l := range s.loops {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.wake()
		<-l.done
		unix.Close(l.epfd)
		unix.Close(l.wakefd)
	}
	s.loops = nil
}

// wake interrupts the loop's epoll_wait.
func (l *loop) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(l.wakefd, one[:])
}

// add makes l watch c, which starts armed (read from).
func (l *loop) add(c *client) error {
	c.lp = l
	l.mu.Lock()
	l.clients[int32(c.fd)] = c
	l.mu.Unlock()
	c.pollMu.Lock()
	c.wantIn = true
	err := c.pollLocked()
	c.pollMu.Unlock()
	if err != nil {
		l.mu.Lock()
		delete(l.clients, int32(c.fd))
		l.mu.Unlock()
	}
	return err
}

// run is the loop's goroutine: it waits for events and serves them until
// stopped.
func (l *loop) run() {
	defer close(l.done)
	events := make([]unix.EpollEvent, loopEvents)
	n := 0
	for {
		timeout := -1
		l.mu.Lock()
		if len(l.waiting) > 0 || l.s.draining.Load() {
			timeout = int(outputCheck / time.Millisecond)
		}
		closed := l.closed
		l.mu.Unlock()
		if closed {
			return
		}
		var err error
		n, err = l.wait(events, timeout, n)
		if err != nil && err != unix.EINTR {
			l.fail(err)
			return
		}
		l.now = time.Now().UnixNano()
		for i := range n {
			l.event(&events[i])
		}
		l.checkOutput()
		if l.s.draining.Load() {
			l.drainIdle()
		}
	}
}

// wait returns the next ready events, waiting up to msec (-1: no bound);
// last is how many the previous wait returned. A loop whose spin is on
// polls for up to Server.LoopSpin before it sleeps (see spin).
func (l *loop) wait(events []unix.EpollEvent, msec int, last int) (int, error) {
	start := time.Now()
	if last > 0 && l.spin.on() {
		for polls := 1; ; polls++ {
			n, err := epollPoll(l.epfd, events)
			spun := time.Since(start)
			if n > 0 || err != nil {
				l.spin.waited(spun)
				l.s.stats.spinNanos.Add(int64(spun))
				if n > 0 && polls > 1 { // found by spinning, not ready at once
					l.s.stats.spinHits.Add(1)
				}
				return n, err
			}
			if spun > l.spin.max {
				l.s.stats.spinNanos.Add(int64(spun))
				break
			}
		}
		last = 0 // polled already
	}
	n, err := epollWait(l.epfd, events, msec, last > 1)
	l.spin.waited(time.Since(start))
	return n, err
}

// spin decides whether a loop polls for its next event before it sleeps.
//
// A thread the kernel has to wake costs one client's round trip more than
// serving its command (on a virtual machine the wake-up is an interrupt to
// another core): a client in a request-reply loop is bounded by exactly
// that, in Redis as in a loop that always sleeps. So a loop spins, polling
// without sleeping for up to max, while both hold:
//   - its recent events came from a few clients (spinClients): with many,
//     the time a sleeping loop takes to wake is hidden behind the others'
//     commands, and spinning would only burn the CPU they need;
//   - its average wait for the next event is shorter than max: requests
//     far apart, or an idle sidecar, never make it spin, so a loop spins
//     only while a few clients keep it busy, at most max per event.
type spin struct {
	max    time.Duration          // longest poll before sleeping; 0: never spin
	idle   time.Duration          // average wait for the next event, each counted up to spinCap x max
	seen   [spinClients + 1]int32 // distinct clients of the window's events (the last slot: more)
	nseen  int                    // clients in seen
	events int                    // events in the window
	few    bool                   // the last window's events came from at most spinClients clients
}

// Spinning's window: whether a loop's events come from a few clients is
// judged over each block of spinWindow events (the last complete block
// decides); spinCap bounds one wait in the average so
// that a loop idle for a while spins again after a few quick commands.
const (
	spinClients = 4
	spinWindow  = 64
	spinCap     = 4
)

// on tells whether the loop should poll before sleeping.
func (s *spin) on() bool {
	return s.max > 0 && s.few && s.idle < s.max
}

// waited counts one wait of d.
func (s *spin) waited(d time.Duration) {
	s.idle += (min(d, spinCap*s.max) - s.idle) / 8
}

// client counts an event of the client with descriptor fd.
func (s *spin) client(fd int32) {
	if s.nseen <= spinClients && !slices.Contains(s.seen[:s.nseen], fd) {
		s.seen[s.nseen] = fd
		s.nseen++
	}
	s.events++
	if s.events == spinWindow {
		s.few = s.nseen <= spinClients
		s.nseen, s.events = 0, 0
	}
}

// event serves one epoll event.
func (l *loop) event(ev *unix.EpollEvent) {
	if int(ev.Fd) == l.wakefd {
		var b [8]byte
		_, _ = unix.Read(l.wakefd, b[:])
		return
	}
	l.mu.Lock()
	c := l.clients[ev.Fd]
	l.mu.Unlock()
	if c == nil {
		return
	}
	l.spin.client(ev.Fd)
	if ev.Events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		c.out.writable(c)
	}
	if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLERR|unix.EPOLLHUP) != 0 && c.armed() {
		c.readable(l.buf)
	}
}

// checkOutput disconnects the clients whose output has not moved for
// --client-output-timeout.
func (l *loop) checkOutput() {
	if l.now-l.checked < int64(outputCheck) {
		return
	}
	l.checked = l.now
	l.mu.Lock()
	if len(l.waiting) == 0 {
		l.mu.Unlock()
		return
	}
	waiting := make([]*client, 0, len(l.waiting))
	for c := range l.waiting {
		waiting = append(waiting, c)
	}
	l.mu.Unlock()
	now := time.Now()
	for _, c := range waiting {
		if c.out.stalledSince(now) > l.s.OutputTimeout {
			c.out.timedOut(c)
		}
	}
}

// setWaiting records whether c's output waits for EPOLLOUT; wake: the
// caller is not the loop, which may sleep without a timeout.
func (l *loop) setWaiting(c *client, on, wake bool) {
	l.mu.Lock()
	if on {
		l.waiting[c] = struct{}{}
	} else {
		delete(l.waiting, c)
	}
	l.mu.Unlock()
	if on && wake {
		l.wake()
	}
}

// drainIdle ends the armed clients while the server drains: everything
// they sent has been answered, as the loop answers what it reads before it
// waits again.
func (l *loop) drainIdle() {
	l.mu.Lock()
	var idle []*client
	for _, c := range l.clients {
		if c.armed() {
			idle = append(idle, c)
		}
	}
	l.mu.Unlock()
	for _, c := range idle {
		c.disarm()
		go c.finish()
	}
}

// fail ends a loop whose epoll_wait failed for good: its clients are
// disconnected (their output cannot be written any more), so that none
// waits for it and the server can still close.
func (l *loop) fail(err error) {
	l.s.Logger.Error("event loop: epoll_wait failed; disconnecting its clients", "error", err)
	l.mu.Lock()
	l.closed = true
	clients := make([]*client, 0, len(l.clients))
	for _, c := range l.clients {
		clients = append(clients, c)
	}
	l.mu.Unlock()
	for _, c := range clients {
		c.out.closeOutput(c)
		if c.armed() {
			c.disarm()
			go c.finish()
		}
	}
}

// remove forgets c (its descriptor may be reused once closed).
func (l *loop) remove(c *client) {
	l.mu.Lock()
	if l.clients[int32(c.fd)] == c {
		delete(l.clients, int32(c.fd))
	}
	delete(l.waiting, c)
	l.mu.Unlock()
}
