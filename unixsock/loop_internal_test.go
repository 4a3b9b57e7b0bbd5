package unixsock

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHandoffGivesBackItsInput: clients that hand off a command and
// disconnect before its replies are written leave nothing counted against
// --max-client-buffers (the input a handoff took was counted and never
// given back when its first write failed).
func TestHandoffGivesBackItsInput(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s.sock")
	s := &Server{Socket: path, Mirror: fakeMirror{}, Writer: fakeWriter{}, Loops: 1}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// 200 PINGs answered on the loop, CLIENT ID handed off with the 3,000
	// PINGs after it, and the client gone before any reply is read.
	req := strings.Repeat("*1\r\n$4\r\nPING\r\n", 200) + "*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n" +
		strings.Repeat("*1\r\n$4\r\nPING\r\n", 3000)
	for range 200 {
		nc, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(nc, req)
		nc.Close()
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.Clients() > 0 || s.Stats().ClientBuffers != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d clients connected, client buffers %d bytes; want 0 and 0 once every client left",
				s.Clients(), s.Stats().ClientBuffers)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
