package pgtest

import (
	"errors"
	"syscall"
)

// Freeze stops the postmaster and every backend (SIGSTOP), as a server that
// hangs: connections are accepted by the kernel and never answered, queries
// on open connections never return. The returned thaw resumes them (safe to
// call twice); call it before the server or its clients are closed.
func (s *Server) Freeze() (thaw func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pm := s.running()
	if pm == nil {
		return nil, errors.New("pgtest: freeze: the server is not running")
	}
	root := pm.cmd.Process.Pid
	// A stopped postmaster forks no more backends between the listing and their stop.
	syscall.Kill(root, syscall.SIGSTOP)
	pids := append([]int{root}, childrenOf(root)...)
	for _, p := range pids[1:] {
		syscall.Kill(p, syscall.SIGSTOP)
	}
	thawed := false
	return func() {
		if thawed {
			return
		}
		thawed = true
		for _, p := range pids {
			syscall.Kill(p, syscall.SIGCONT)
		}
	}, nil
}
