package pgtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// errClosed is returned when a closed Server is asked to run again.
var errClosed = errors.New("pgtest: server is closed")

// Close shuts the server down (fast shutdown) and removes its temporary
// directory; calling it again does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.stopLocked()
	if rmErr := os.RemoveAll(s.root); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("pgtest: %w", rmErr))
	}
	return err
}

// Stop shuts the server down (fast shutdown: open sessions are cut, then a
// checkpoint) and keeps its data for a later Start.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

// Start starts a stopped or killed server again, on the same port and
// socket directory.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startLocked()
}

// Restart stops the server and starts it again; existing connections break.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		return err
	}
	return s.startLocked()
}

// Kill crashes the server with SIGKILL to the postmaster, so that the next
// Start goes through crash recovery.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running() == nil {
		return errors.New("pgtest: Kill: server is not running")
	}
	crash(s.pm)
	s.pm = nil
	return nil
}

// PID is the postmaster's process id, or 0 while the server is stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pm := s.running(); pm != nil {
		return pm.cmd.Process.Pid
	}
	return 0
}

// SocketDir is the directory holding the server's unix socket.
func (s *Server) SocketDir() string { return s.root }

// Port is the server's TCP port on 127.0.0.1, also part of the socket name.
func (s *Server) Port() int { return s.port }

// BinDir is the directory of the initdb and postgres binaries in use.
func (s *Server) BinDir() string { return s.binDir }

// DataDir is the cluster's data directory.
func (s *Server) DataDir() string { return s.dataDir }

// running returns the live postmaster, forgetting one that died on its own.
// s.mu must be held.
func (s *Server) running() *postmaster {
	if s.pm == nil {
		return nil
	}
	select {
	case <-s.pm.done:
		s.pm = nil
	default:
	}
	return s.pm
}

// startLocked starts the postmaster unless it runs already. s.mu must be held.
func (s *Server) startLocked() error {
	if s.closed {
		return errClosed
	}
	if s.running() != nil {
		return nil
	}
	return s.launch()
}

// stopLocked does a fast shutdown, escalating if the server does not
// comply in time. s.mu must be held.
func (s *Server) stopLocked() error {
	pm := s.pm
	if pm == nil {
		return nil
	}
	s.pm = nil
	select {
	case <-pm.done:
		return fmt.Errorf("pgtest: postgres had exited on its own: %v", pm.err)
	default:
	}
	// Fast shutdown ends when every backend has exited, so nothing is
	// left behind for the temporary directory's removal.
	pm.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-pm.done:
		return pm.err
	case <-time.After(shutdownTimeout):
		crash(pm)
		return fmt.Errorf("pgtest: postgres ignored fast shutdown for %v; killed it", shutdownTimeout)
	}
}

// crash SIGKILLs the postmaster and waits for its backends to exit: they
// notice the postmaster's death by themselves, but until they are gone they
// keep the shared memory attached and a new postmaster would refuse to start.
func crash(pm *postmaster) {
	var kids []int
	select {
	case <-pm.done: // reaped: its pid may belong to someone else by now
	default:
		// A stopped postmaster cannot fork between listing its children
		// and its death.
		pm.cmd.Process.Signal(syscall.SIGSTOP)
		kids = childrenOf(pm.cmd.Process.Pid)
		pm.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-pm.done
	if !waitGone(kids, 10*time.Second) {
		for _, k := range kids {
			syscall.Kill(k, syscall.SIGKILL)
		}
		waitGone(kids, 5*time.Second)
	}
}

// freePort asks the kernel for a TCP port on 127.0.0.1 that is free now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
