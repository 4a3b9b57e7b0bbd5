package unixsock_test

import (
	"os"
	"testing"

	"pgmirror/internal/testdb"
	"pgmirror/unixsock"
)

// TestShutdownLeavesReplacedSocket: a server that closes after a newer one
// replaced its socket file leaves the newer one's file alone (closing a Go
// unix listener would unlink the path, whoever's it is).
func TestShutdownLeavesReplacedSocket(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	old := startSidecar(t, dsn, config{})
	path := old.socket
	// A newer instance takes the path over, as a restarted pod does when
	// it finds the file (the old one is draining and no longer accepts).
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	newer := &unixsock.Server{Socket: path, Mirror: old.m, Writer: old.w}
	if err := newer.Open(); err != nil {
		t.Fatal(err)
	}
	defer newer.Close()
	before, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	old.stop()
	after, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("the newer server's socket file is gone after the old one shut down: %v", err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("the socket file changed")
	}
	if got, _ := raw(t, path, []byte("PING\r\n")); got != "+PONG\r\n" {
		t.Fatalf("PING to the newer server: %q", got)
	}
	// The newer server removes its own file when it stops.
	if err := newer.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("the newer server's own file after its shutdown: %v", err)
	}
}
