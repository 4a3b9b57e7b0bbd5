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
// clients are served.
func (s *Server) serve() error {
	var delay time.Duration
	var lastLog time.Time
	next := 0
	for {
		fd, err := acceptFD(s.ln)
		if err != nil {
			if s.draining.Load() {
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

// acceptFD accepts a connection on the listener and returns its socket,
// non-blocking, for an event loop alone: a duplicate of the descriptor Go
// accepted, which is closed (and so leaves Go's poller, which would
// otherwise wake for every request too).
func acceptFD(ln net.Listener) (int, error) {
	nc, err := ln.Accept()
	if err != nil {
		return -1, err
	}
	defer nc.Close()
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
