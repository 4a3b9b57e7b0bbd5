package unixsock_test

// Attacks by a local client, run against a sidecar in a process of its
// own (this test binary, re-run as TestAttackChild) whose memory the test
// watches: an attack that works must not take the test binary down, and a
// sidecar that grows past a hard cap is killed and the test fails.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	execpkg "os/exec"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
)

// Environment of TestAttackChild.
const (
	envAttackDSN     = "PGMIRROR_ATTACK_DSN"
	envAttackValue   = "PGMIRROR_ATTACK_MAX_VALUE"
	envAttackTimeout = "PGMIRROR_ATTACK_OUTPUT_TIMEOUT"
	// attackSlack is what an attack may add to the sidecar's memory beyond
	// --max-value-size: the connection's fixed buffers, the test sampler,
	// allocator rounding.
	attackSlack = 8 << 20
	// attackKill is the growth at which the watchdog kills the sidecar.
	attackKill = 768 << 20
)

// TestAttackChild is the sidecar of the attack tests; it runs only in the
// process they start. It prints its socket, then every 20 ms its live heap
// and stacks (after a GC) and its resident memory, until stdin closes.
func TestAttackChild(t *testing.T) {
	dsn := os.Getenv(envAttackDSN)
	if dsn == "" {
		t.Skip("run by the attack tests in a process of its own")
	}
	maxValue, _ := strconv.ParseInt(os.Getenv(envAttackValue), 10, 64)
	timeout, _ := time.ParseDuration(os.Getenv(envAttackTimeout))
	// A 4 MiB SET takes seconds under -race on a loaded machine; the write
	// timeout is not what these tests are about.
	sc := startSidecar(t, dsn, config{maxValue: maxValue, server: attackServer(timeout), writeTimeout: time.Minute})
	fmt.Printf("socket %s\n", sc.socket)
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		runtime.GC()
		metrics.Read(samples)
		fmt.Printf("mem %d %d %d\n", samples[0].Value.Uint64(), samples[1].Value.Uint64(), rss())
		select {
		case <-done:
			return
		case <-tick.C:
		}
	}
}

// rss returns the process's resident memory in bytes (0 if unknown).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// attackSidecar is a sidecar in a child process and what it reports.
type attackSidecar struct {
	t      *testing.T
	socket string
	cmd    *execpkg.Cmd
	stdin  io.Closer
	exited chan struct{}

	mu       sync.Mutex
	mem      int64 // live heap and stacks, last sample
	rss      int64
	base     int64 // at mark
	peak     int64 // since mark
	baseRSS  int64
	peakRSS  int64
	killed   string
	lastLine string
}

// startAttackSidecar runs TestAttackChild on a fresh database.
func startAttackSidecar(t *testing.T, maxValue int64, outputTimeout time.Duration) *attackSidecar {
	t.Helper()
	dsn, _ := testdb.New(t)
	cmd := execpkg.Command(os.Args[0], "-test.run=^TestAttackChild$", "-test.count=1", "-test.timeout=10m")
	cmd.Env = append(os.Environ(), envAttackDSN+"="+dsn, envAttackValue+"="+strconv.FormatInt(maxValue, 10),
		envAttackTimeout+"="+outputTimeout.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &attackSidecar{t: t, cmd: cmd, stdin: stdin, exited: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		defer close(a.exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			a.line(sc.Text(), ready)
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-a.exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-a.exited
		}
		if t.Failed() {
			t.Logf("sidecar stderr (tail):\n%s", tail(stderr.String(), 3000))
		}
	})
	select {
	case a.socket = <-ready:
	case <-a.exited:
		t.Fatalf("the sidecar process exited before it was ready:\n%s", tail(stderr.String(), 3000))
	case <-time.After(60 * time.Second):
		t.Fatal("the sidecar process was not ready within 60s")
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.mem > 0, "no memory sample"
	})
	return a
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// line handles one line of the child's output; the watchdog kills a child
// that grew past attackKill since the last mark.
func (a *attackSidecar) line(l string, ready chan<- string) {
	if s, ok := strings.CutPrefix(l, "socket "); ok {
		ready <- s
		return
	}
	f := strings.Fields(l)
	if len(f) != 4 || f[0] != "mem" {
		return
	}
	objects, _ := strconv.ParseInt(f[1], 10, 64)
	stacks, _ := strconv.ParseInt(f[2], 10, 64)
	r, _ := strconv.ParseInt(f[3], 10, 64)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.mem, a.rss = objects+stacks, r
	a.peak, a.peakRSS = max(a.peak, a.mem), max(a.peakRSS, r)
	a.lastLine = l
	if a.base > 0 && a.mem-a.base > attackKill && a.killed == "" {
		a.killed = fmt.Sprintf("heap and stacks grew by %d MiB", (a.mem-a.base)>>20)
		_ = a.cmd.Process.Kill()
	}
}

// mark starts a measurement: the peak is reset to the current sample,
// taken after the sidecar settled (two samples).
func (a *attackSidecar) mark() {
	a.nextSample()
	a.nextSample()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.base, a.peak, a.baseRSS, a.peakRSS = a.mem, a.mem, a.rss, a.rss
}

// nextSample waits for a sample taken after the call.
func (a *attackSidecar) nextSample() {
	a.mu.Lock()
	last := a.lastLine
	a.mu.Unlock()
	testutil.Eventually(a.t, 10*time.Second, func() (bool, string) {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.lastLine != last || a.killed != "", "no new memory sample"
	})
}

// alive reports whether the sidecar runs and has not been killed.
func (a *attackSidecar) alive() bool {
	select {
	case <-a.exited:
		return false
	default:
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.killed == ""
}

// check fails the test when the sidecar died or grew past bound since mark.
func (a *attackSidecar) check(what string, bound int64) {
	a.t.Helper()
	a.nextSample()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.t.Logf("%s: live heap+stacks %d MiB at the mark, peak %+.1f MiB; RSS %d MiB, peak %+.1f MiB",
		what, a.base>>20, float64(a.peak-a.base)/(1<<20), a.baseRSS>>20, float64(a.peakRSS-a.baseRSS)/(1<<20))
	if a.killed != "" {
		a.t.Fatalf("%s: the sidecar was killed: %s", what, a.killed)
	}
	select {
	case <-a.exited:
		a.t.Fatalf("%s: the sidecar process died", what)
	default:
	}
	if grown := a.peak - a.base; grown > bound {
		a.t.Fatalf("%s: the sidecar's live heap and stacks grew by %.1f MiB, more than %.1f MiB", what,
			float64(grown)/(1<<20), float64(bound)/(1<<20))
	}
}

// TestAttackTrickledFrame: a command sent one byte per write up to the
// largest argument costs no more than the bytes sent (within the frame
// bound), and is answered: a reader that recursed once per read would grow
// its stack with the frame until the process died.
func TestAttackTrickledFrame(t *testing.T) {
	t.Parallel()
	const maxValue = 512 << 10
	a := startAttackSidecar(t, maxValue, 0)
	a.mark()
	c, err := net.Dial("unix", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	size := maxValue + 64<<10 // the largest argument the parser takes
	if _, err := fmt.Fprintf(c, "*2\r\n$3\r\nGET\r\n$%d\r\n", size); err != nil {
		t.Fatal(err)
	}
	one := []byte("k")
	for i := 0; i < size; i++ {
		if _, err := c.Write(one); err != nil {
			t.Fatalf("after %d bytes: %v (sidecar alive: %v)", i, err, a.alive())
		}
		if i%8192 == 0 && !a.alive() {
			break
		}
	}
	if _, err := c.Write([]byte("\r\n")); err != nil {
		t.Fatal(err)
	}
	a.check("trickle", maxValue+attackSlack)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "-ERR key too long") {
		t.Fatalf("reply to the trickled GET: %q, %v", line, err)
	}
}

// TestAttackHeaderAfterStrayCR: a stray \r, then a bulk that swallows the
// real header, tries to get a 2,000,000,000-byte length past the bounds
// and have its body buffered. The parser frames as Redis does: the header
// is refused before anything is buffered and the connection closed.
func TestAttackHeaderAfterStrayCR(t *testing.T) {
	t.Parallel()
	const maxValue = 1 << 20
	a := startAttackSidecar(t, maxValue, 0)
	a.mark()
	c, err := net.Dial("unix", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var replies bytes.Buffer
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		_, _ = io.Copy(&replies, c)
	}()
	if _, err := c.Write([]byte("\r*1\r\n$40\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000000\r\n")); err != nil {
		t.Fatal(err)
	}
	line := append(bytes.Repeat([]byte("x"), 64<<10-1), '\n') // lines just under the inline-line bound
	sent := 0
	for sent < 256<<20 && a.alive() {
		n, err := c.Write(line)
		sent += n
		if err != nil {
			break // the server closed the connection
		}
	}
	a.check(fmt.Sprintf("2 GB header after a stray CR (%d MiB streamed)", sent>>20), maxValue+attackSlack)
	select {
	case <-readDone:
	case <-time.After(30 * time.Second):
		t.Fatal("the connection was not closed")
	}
	if !strings.Contains(replies.String(), "-ERR Protocol error: invalid bulk length") {
		t.Fatalf("replies: %.300q", replies.String())
	}
	if sent >= 256<<20 {
		t.Fatalf("the sidecar took %d MiB of a body it should have refused", sent>>20)
	}
}

// TestAttackPipelineNeverRead: 5,000 GETs of a large value from a client
// that never reads its replies hold one reply at a time (not every reply,
// built before one flush), and the client is disconnected once its output
// has not drained for --client-output-timeout.
func TestAttackPipelineNeverRead(t *testing.T) {
	t.Parallel()
	const maxValue = 4 << 20
	a := startAttackSidecar(t, maxValue, 3*time.Second)
	ctx := context.Background()
	good := client(t, a.socket)
	if err := good.Set(ctx, "big", bytes.Repeat([]byte("v"), maxValue), 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := good.Get(ctx, "big").Bytes(); err != nil || len(v) != maxValue {
		t.Fatalf("GET big: %d bytes, %v", len(v), err)
	}
	a.mark()
	c, err := net.Dial("unix", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.UnixConn).SetReadBuffer(4096)
	pipeline := bytes.Repeat([]byte("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n"), 5000)
	go func() { _, _ = c.Write(pipeline) }()
	// One reply in flight, and the fetch that may produce it: a value the
	// value cache does not hold is read from Postgres, which costs about
	// three times its size while lib/pq decodes the hex text of the bytea
	// and Scan copies it (the read path's, whoever reads).
	bound := int64(maxValue + 3*maxValue + attackSlack)
	// The client never reads: wait until the sidecar gives up on it.
	deadline := time.Now().Add(60 * time.Second)
	for {
		info, err := good.Info(ctx, "stats").Result()
		if err == nil && strings.Contains(info, "client_output_timeouts:1") {
			break
		}
		if !a.alive() || time.Now().After(deadline) {
			a.check("5,000 GET big, never read", bound)
			t.Fatalf("the client that never reads was not disconnected within 60s (INFO: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.check("5,000 GET big, never read", bound)
	if err := good.Ping(ctx).Err(); err != nil {
		t.Fatalf("another client after the attack: %v", err)
	}
	// The attacker finds its connection closed after the replies the
	// socket held.
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading the attacker's connection: %v", err)
	}
	if n >= 5000*maxValue {
		t.Fatalf("the attacker got %d bytes: every reply", n)
	}
}
