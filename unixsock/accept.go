package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Accept backoff, as net/http's Server: a failing accept (out of file
// descriptors) is retried after 5 ms, doubling up to 1 s.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// serve accepts clients until Close. It returns nil after Close. A failing
// accept that may pass (too many open files, out of memory or buffers, an
// aborted connection) is retried with a backoff while the connected
// clients are served; so is taking the socket of an accepted connection
// for the event loop, which needs a descriptor too: the connection waits,
// accepted, until it can.
func (s *Server) serve() error {
	var delay time.Duration
	var lastLog time.Time
	var nc net.Conn // accepted, its socket not yet taken
	next := 0
	for {
		var err error
		if nc == nil {
			nc, err = s.ln.Accept()
		}
		fd := -1
		if err == nil {
			if fd, err = takeFD(nc); err == nil || !acceptRetryable(err) {
				nc.Close()
				nc = nil
			}
			if err != nil && !acceptRetryable(err) {
				// This connection only: the others are still accepted.
				s.Logger.Warn("dropping a client whose socket could not be taken", "error", err)
				continue
			}
		}
		if err != nil {
			if s.draining.Load() {
				if nc != nil {
					nc.Close()
				}
				return nil
			}
			if !acceptRetryable(err) {
				return fmt.Errorf("accept: %w", err)
			}
			s.stats.acceptErrors.Add(1)
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			if time.Since(lastLog) >= 10*time.Second {
				lastLog = time.Now()
				s.Logger.Warn("accepting a client failed; retrying (raise the file descriptor limit, ulimit -n, or lower --max-clients)",
					"error", err, "retry_in", delay, "clients", s.Clients())
			}
			select {
			case <-time.After(delay):
			case <-s.stop:
			}
			continue
		}
		delay = 0
		s.stats.connections.Add(1)
		next++
		s.admit(fd, s.loops[next%len(s.loops)])
	}
}

// takeFD returns the socket of an accepted connection, non-blocking, for
// an event loop alone: a duplicate of the descriptor Go accepted, which the
// caller closes (so it leaves Go's poller, which would otherwise wake for
// every request too).
func takeFD(nc net.Conn) (int, error) {
	raw, err := nc.(*net.UnixConn).SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd, derr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, os.NewSyscallError("fcntl", derr)
	}
	return nfd, nil
}

// admit gives a new connection to loop l, or refuses it past --max-clients.
func (s *Server) admit(fd int, l *loop) {
	c := s.newClient(fd)
	c.lp = l // before others can see it (CLIENT KILL, CLIENT LIST)
	s.mu.Lock()
	full := len(s.conns) >= s.MaxClients
	if !full {
		s.conns[c] = struct{}{}
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if full {
		s.stats.rejected.Add(1)
		_, _ = unix.Write(fd, []byte("-ERR max number of clients reached\r\n"))
		_ = unix.Close(fd)
		return
	}
	if err := l.add(c); err != nil {
		s.Logger.Error("event loop: cannot watch a new client; disconnecting it", "error", err)
		c.finish()
	}
}

// acceptRetryable reports whether a failed accept may succeed later.
func acceptRetryable(err error) bool {
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.EINTR, syscall.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
