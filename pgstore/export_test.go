package pgstore

import "context"

// ParseSnapshot exposes parseSnapshot to the tests.
var ParseSnapshot = parseSnapshot

// CheckPrimaryQuery runs CheckPrimary's logic with query in place of
// pg_is_in_recovery(), so that the tests can play a standby.
func (s *Store) CheckPrimaryQuery(ctx context.Context, query string) error {
	return s.checkPrimary(ctx, query)
}

// NoPeek makes the Writer's own pool send on pooled connections without
// looking whether Postgres closed them, until the test ends.
func NoPeek(t interface{ Cleanup(func()) }) {
	peek = func(uintptr) bool { return false }
	t.Cleanup(func() { peek = peerClosed })
}
