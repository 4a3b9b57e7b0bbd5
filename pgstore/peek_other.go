//go:build !(linux || darwin || freebsd)

package pgstore

// peerClosed cannot peek on this platform: a connection Postgres closed is
// found when the batch fails on it, as an unknown outcome.
func peerClosed(uintptr) bool { return false }
