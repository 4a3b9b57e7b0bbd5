package unixsock_test

import (
	"time"

	"pgmirror/unixsock"
)

// The server settings the attack and budget tests turn, in one place (so
// the tests can be run against a server that lacks them, to see them fail).

// attackServer sets the output deadline of an attack test's sidecar (0:
// the default).
func attackServer(outputTimeout time.Duration) func(*unixsock.Server) {
	return func(s *unixsock.Server) { s.OutputTimeout = outputTimeout }
}

// budgetServer sets the budget of all clients' buffers.
func budgetServer(budget int64) func(*unixsock.Server) {
	return func(s *unixsock.Server) { s.MaxClientBuffers = budget }
}
