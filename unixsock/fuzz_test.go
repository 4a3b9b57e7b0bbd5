package unixsock

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"pgmirror/mirror"
)

// fakeMirror and fakeWriter stand in for Postgres in the fuzz test of the
// command layer, which is pure parsing and dispatch.
type fakeMirror struct{}

func (fakeMirror) Get(context.Context, string) ([]byte, bool, error) { return []byte("v"), true, nil }
func (fakeMirror) Exists(string) (mirror.Lookup, error) {
	return mirror.Lookup{Found: true, Expires: mirror.NoExpiry, Size: 1}, nil
}
func (fakeMirror) GetMulti(_ context.Context, keys []string, _ int64, emit func([]byte)) error {
	for range keys {
		emit([]byte("v"))
	}
	return nil
}
func (fakeMirror) PTTL(string) (int64, bool, error)              { return 1000, true, nil }
func (fakeMirror) StrLen(context.Context, string) (int64, error) { return 1, nil }
func (fakeMirror) Scan(uint64, int, func(string) bool) (uint64, []string) {
	return 0, []string{"a", "b"}
}
func (fakeMirror) State() mirror.State                  { return mirror.StateReady }
func (fakeMirror) Stats() mirror.Stats                  { return mirror.Stats{} }
func (fakeMirror) RequestResync(string)                 {}
func (fakeMirror) Handle(func(mirror.Event))            {}
func (fakeMirror) ClockLead() time.Duration             { return 0 }
func (fakeMirror) Touch(string) (bool, error)           { return true, nil }
func (fakeMirror) IdleTime(string) (int64, bool, error) { return 0, true, nil }
func (fakeMirror) ViewSeq() uint64                      { return 0 }
func (fakeWriter) Write(context.Context, mirror.WriteOp) (mirror.WriteResult, error) {
	return mirror.WriteResult{Reply: mirror.ReplyInt, Int: 1}, nil
}

type fakeWriter struct{}

// FuzzCommands sends arbitrary bytes to a server: it must answer or close,
// never panic or hang. `make test` runs it briefly.
func FuzzCommands(f *testing.F) {
	for _, s := range []string{
		"*1\r\n$4\r\nPING\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
		"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nEX\r\n$2\r\n10\r\n",
		"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n",
		"*4\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nMATCH\r\n$3\r\na[b\r\n",
		"*2\r\n$4\r\nKEYS\r\n$6\r\n[^a-]*\r\n",
		"*3\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$20\r\n-9223372036854775808\r\n",
		"GET k\r\nINFO\r\nCONFIG GET *\r\n",
		"*2\r\n$3\r\nGET\r\n$2147483647\r\n",
		"\xff\xfe\r\n",
		"\r*1\r\n$40\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000000\r\n",
		"HELLO 3\r\nSUBSCRIBE a\r\nPSUBSCRIBE *\r\nGET k\r\nUNSUBSCRIBE\r\n",
		"HELLO 3\r\nCLIENT TRACKING on\r\nGET k\r\nMGET a b\r\nSET k v\r\nCLIENT TRACKING on bcast prefix a\r\n",
	} {
		f.Add([]byte(s))
	}
	dir, err := os.MkdirTemp("", "pgmf")
	if err != nil {
		f.Fatal(err)
	}
	defer os.RemoveAll(dir)
	s := &Server{Socket: filepath.Join(dir, "f.sock"), Mirror: fakeMirror{}, Writer: fakeWriter{}, MaxValueSize: 1 << 16}
	if err := s.Open(); err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("unix", s.Socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			_, _ = c.Write(data)
			_ = c.(*net.UnixConn).CloseWrite()
		}()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("server neither answered nor closed within 10s on %q", data)
			}
		}
	})
}
