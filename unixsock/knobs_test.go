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

// publishHook blocks the keyspace publisher while f blocks.
func publishHook(f func()) func(*unixsock.Server) {
	return func(s *unixsock.Server) { unixsock.SetPublishHook(s, f) }
}

// maxPatterns is the most patterns one client may subscribe.
const maxPatterns = unixsock.MaxPatternsPerClient

// keyEventsDropped is the number of keyspace events the publisher dropped.
func keyEventsDropped(s *unixsock.Server) int64 { return s.Stats().KeyEventsDropped }

// clientBuffers is the bytes of client buffers the server counts now.
func clientBuffers(s *unixsock.Server) int64 { return s.Stats().ClientBuffers }

// evictedBudget is the number of clients disconnected for the budget.
func evictedBudget(s *unixsock.Server) int64 { return s.Stats().EvictedBudget }
