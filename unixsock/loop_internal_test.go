package unixsock

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// openFake opens a server with one loop over the fake mirror and writer
// (fuzz_test.go), spinning for spin (0: the default, negative: never), and
// closes it when the test ends.
func openFake(t *testing.T, spin time.Duration) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	s := &Server{Socket: path, Mirror: fakeMirror{}, Writer: fakeWriter{}, Loops: 1, LoopSpin: spin}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// TestHandoffGivesBackItsInput: clients that hand off a command and
// disconnect before its replies are written leave nothing counted against
// --max-client-buffers (the input a handoff took was counted and never
// given back when its first write failed).
func TestHandoffGivesBackItsInput(t *testing.T) {
	t.Parallel()
	s, path := openFake(t, 0)
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

// TestTrackingCachingKeptWhenTheLoopDeclines: a tracking client's read
// that the loop starts and then hands off (here every GET: the fake mirror
// cannot answer without waiting) registers exactly the keys the client's
// mode and CLIENT CACHING say, as a read the loop answers (EXISTS) does.
func TestTrackingCachingKeptWhenTheLoopDeclines(t *testing.T) {
	t.Parallel()
	s, path := openFake(t, 0)
	dial := func(mode string) (do func(args ...string) string) {
		nc, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(nc)
		do = func(args ...string) string {
			t.Helper()
			var b strings.Builder
			fmt.Fprintf(&b, "*%d\r\n", len(args))
			for _, a := range args {
				fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
			}
			if _, err := io.WriteString(nc, b.String()); err != nil {
				t.Fatal(err)
			}
			reply, err := ReadRESP(r)
			if err != nil {
				t.Fatal(err)
			}
			return reply
		}
		do("HELLO", "3")
		if r := do("CLIENT", "TRACKING", "ON", mode); r != "+OK\r\n" {
			t.Fatalf("CLIENT TRACKING ON %s: %q", mode, r)
		}
		return do
	}
	optout, optin := dial("OPTOUT"), dial("OPTIN")
	optout("CLIENT", "CACHING", "NO")
	optout("GET", "out-no") // handed off: not tracked
	optout("CLIENT", "CACHING", "NO")
	optout("EXISTS", "out-no-loop") // on the loop: not tracked
	optout("GET", "out")            // tracked
	optin("CLIENT", "CACHING", "YES")
	optin("GET", "in-yes") // handed off: tracked
	optin("GET", "in")     // not tracked
	optin("CLIENT", "CACHING", "YES")
	optin("EXISTS", "in-yes-loop") // on the loop: tracked
	s.trk.mu.Lock()
	var tracked []string
	for k := range s.trk.keys {
		tracked = append(tracked, k)
	}
	s.trk.mu.Unlock()
	slices.Sort(tracked)
	if want := []string{"in-yes", "in-yes-loop", "out"}; !slices.Equal(tracked, want) {
		t.Fatalf("tracked keys %q, want %q", tracked, want)
	}
}

// ReadRESP reads one RESP2/RESP3 value and returns its bytes (for the
// tests of both packages).
func ReadRESP(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return line, err
	}
	if len(line) < 3 || !strings.HasSuffix(line, "\r\n") {
		return "", fmt.Errorf("bad line %q", line)
	}
	body := line[1 : len(line)-2]
	switch line[0] {
	case '$', '=', '!':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return line, err
		}
		b := make([]byte, n+2)
		_, err = io.ReadFull(rd, b)
		return line + string(b), err
	case '*', '>', '%', '~', '|':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return line, err
		}
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		out := line
		for i := 0; i < n; i++ {
			v, err := ReadRESP(rd)
			out += v
			if err != nil {
				return out, err
			}
		}
		return out, nil
	}
	return line, nil
}
