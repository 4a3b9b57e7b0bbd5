package unixsock

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
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
	for {
		nc, err := s.ln.Accept()
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
		c := s.newClient(nc)
		s.mu.Lock()
		full := len(s.conns) >= s.MaxClients
		if !full {
			s.conns[c] = struct{}{}
			s.wg.Add(1)
		}
		s.mu.Unlock()
		if full {
			s.stats.rejected.Add(1)
			_, _ = nc.Write([]byte("-ERR max number of clients reached\r\n"))
			nc.Close()
			continue
		}
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
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
