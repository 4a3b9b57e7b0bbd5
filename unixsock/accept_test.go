package unixsock

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"pgmirror/internal/testutil"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

const envAcceptSocket = "PGMIRROR_ACCEPT_CHILD_SOCKET"

// TestAcceptChild is the server of TestAcceptOutOfDescriptors; it runs only
// in the process that test starts. It listens, then lowers its file
// descriptor limit to leave room for 4 clients, and serves until stdin
// closes. An error on Err (the accept loop stopped) ends the process with
// status 3.
func TestAcceptChild(t *testing.T) {
	path := os.Getenv(envAcceptSocket)
	if path == "" {
		t.Skip("run by TestAcceptOutOfDescriptors in a process of its own")
	}
	s := &Server{Socket: path, Mirror: fakeMirror{}, Writer: fakeWriter{},
		Logger: hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Warn})}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = uint64(len(fds) + 4) // ReadDir's own descriptor is closed again: room for 4 or 5
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	stdin := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdin)
	}()
	select {
	case err := <-s.Err():
		fmt.Printf("serve: %v\n", err)
		os.Exit(3)
	case <-stdin:
	}
	_ = s.Close()
}

// TestAcceptOutOfDescriptors: when accept fails for lack of file
// descriptors, the server backs off and keeps serving the clients it has,
// rather than stopping its accept loop (which would stop the sidecar);
// once descriptors are free, the waiting clients are served.
func TestAcceptOutOfDescriptors(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "pgma")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "s.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envAcceptSocket+"="+path)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var out testutil.SyncBuffer
	go func() {
		_, _ = io.Copy(&out, stdout)
		_ = cmd.Wait()
		close(exited)
	}()
	defer func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			select {
			case <-exited:
				t.Fatalf("the server exited while waiting for %s; stdout %q, stderr:\n%s", what, out.String(), stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("not within 20s: %s; stdout %q, stderr:\n%s", what, out.String(), stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("ready", func() bool { return strings.Contains(out.String(), "ready") })

	// More clients than descriptors: each sends PING; some are answered.
	const n = 12
	conns := make([]net.Conn, n)
	replies := make([]chan string, n)
	for i := range conns {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i], replies[i] = c, make(chan string, 1)
		_, _ = c.Write([]byte("PING\r\n"))
		go func(c net.Conn, r chan<- string) {
			line, _ := bufio.NewReader(c).ReadString('\n')
			r <- line
		}(c, replies[i])
	}
	waitFor("accept failing with too many open files", func() bool {
		return strings.Contains(stderr.String(), "too many open files")
	})
	var answered []int
	for i := range conns {
		select {
		case line := <-replies[i]:
			if line != "+PONG\r\n" {
				t.Fatalf("client %d: %q", i, line)
			}
			answered = append(answered, i)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if len(answered) == 0 || len(answered) == n {
		t.Fatalf("%d of %d clients answered while descriptors ran out", len(answered), n)
	}
	// Free descriptors: the clients that waited are served.
	for _, i := range answered {
		conns[i].Close()
	}
	for i := range conns {
		if slicesContains(answered, i) {
			continue
		}
		// Each answered client frees its descriptor when it leaves.
		select {
		case line := <-replies[i]:
			if line != "+PONG\r\n" {
				t.Fatalf("client %d after descriptors were freed: %q", i, line)
			}
			conns[i].Close()
		case <-exited:
			t.Fatalf("the server exited: %q\n%s", out.String(), stderr.String())
		case <-time.After(20 * time.Second):
			t.Fatalf("client %d not answered after descriptors were freed; stderr:\n%s", i, stderr.String())
		}
	}
	stdin.Close()
	select {
	case <-exited:
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("the server exited with %d: %q", code, out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not stop")
	}
}

func slicesContains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestServerLifecycle: Close is safe before Open, after a failed Open and
// twice; Open serves at once; Close removes the socket file.
func TestServerLifecycle(t *testing.T) {
	dir, err := os.MkdirTemp("", "pgml")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "s.sock")
	if err := (&Server{Socket: path}).Close(); err != nil {
		t.Fatalf("Close before Open: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plain"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := &Server{Socket: filepath.Join(dir, "plain"), Mirror: fakeMirror{}, Writer: fakeWriter{}}
	if err := bad.Open(); err == nil {
		t.Fatal("Open on a regular file succeeded")
	}
	if err := bad.Close(); err != nil {
		t.Fatalf("Close after a failed Open: %v", err)
	}
	s := &Server{Socket: path, Mirror: fakeMirror{}, Writer: fakeWriter{}}
	if err := s.Open(); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(); err == nil {
		t.Fatal("a second Open succeeded")
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("PING\r\n"))
	if line, _ := bufio.NewReader(c).ReadString('\n'); line != "+PONG\r\n" {
		t.Fatalf("PING: %q", line)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case err := <-s.Err():
		t.Fatalf("Err after Close: %v", err)
	default:
	}
}
