package unixsock_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/mirror"
	"pgmirror/unixsock"
)

// raw sends bytes on a fresh connection and returns what the server
// answered until it closed the connection or went quiet.
func raw(t *testing.T, socket string, send []byte) (string, bool) {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() { _, _ = c.Write(send) }()
	var out bytes.Buffer
	buf := make([]byte, 4096)
	closed := false
	for {
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			var ne net.Error
			closed = !(errors.As(err, &ne) && ne.Timeout())
			break
		}
	}
	return out.String(), closed
}

func TestBadInputKeepsServerHealthy(t *testing.T) {
	// Not parallel: it measures the heap of the whole test process.
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{maxValue: 1 << 20})
	ctx := context.Background()
	other := client(t, sc.socket)
	if err := other.Set(ctx, "steady", "ok", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var otherErrs atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // another client keeps working throughout
		defer wg.Done()
		for !stop.Load() {
			if v, err := other.Get(ctx, "steady").Result(); err != nil || v != "ok" {
				otherErrs.Add(1)
			}
		}
	}()
	cases := []struct {
		name      string
		send      []byte
		wantReply string
		wantClose bool
	}{
		{"huge bulk header", []byte("*2\r\n$3\r\nGET\r\n$2147483647\r\n"), "-ERR Protocol error: invalid bulk length", true},
		{"huge multibulk", []byte("*99999999999\r\n"), "-ERR Protocol error: invalid multibulk length", true},
		{"negative bulk", []byte("*1\r\n$-5\r\n"), "-ERR Protocol error: invalid bulk length", true},
		{"no dollar", []byte("*1\r\n:5\r\n"), "-ERR Protocol error: expected '$'", true},
		{"binary garbage", bytes.Repeat([]byte{0xff, 0x00, 0x13, 0x37}, 40000), "-ERR Protocol error: too big inline request", true},
		{"garbage line", []byte("\x01\x02garbage\r\n"), "-ERR unknown command", false},
		{"truncated command", []byte("*3\r\n$3\r\nSET\r\n$1\r\nk"), "", false},
		{"inline ping", []byte("PING\r\n"), "+PONG", false},
		{"pipeline", bytes.Repeat([]byte("*1\r\n$4\r\nPING\r\n"), 100), strings.Repeat("+PONG\r\n", 100), false},
	}
	for _, tc := range cases {
		got, closed := raw(t, sc.socket, tc.send)
		if !strings.HasPrefix(got, tc.wantReply) || closed != tc.wantClose {
			t.Errorf("%s: reply %.80q (closed %v), want prefix %q (closed %v)", tc.name, got, closed, tc.wantReply, tc.wantClose)
		}
	}
	// A client announcing 2 GB gets nothing allocated for it: memory stays put.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 50; i++ {
		raw(t, sc.socket, []byte("*2\r\n$3\r\nSET\r\n$2000000000\r\nxxxx"))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > 64<<20 {
		t.Errorf("heap grew by %d MiB after 50 clients announced 2 GB values", grown>>20)
	}
	stop.Store(true)
	wg.Wait()
	if otherErrs.Load() != 0 {
		t.Fatalf("the well-behaved client saw %d errors", otherErrs.Load())
	}
}

func TestKeyAndValueLimits(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{maxValue: 1 << 20})
	ctx := context.Background()
	c := client(t, sc.socket)
	c.Options().PoolSize = 1
	err := c.Set(ctx, strings.Repeat("k", 4001), "v", 0).Err()
	if err == nil || !strings.Contains(err.Error(), "key too long") {
		t.Fatalf("4001-byte key: %v", err)
	}
	err = c.Set(ctx, "big", bytes.Repeat([]byte("v"), 1<<20+1), 0).Err()
	if err == nil || !strings.Contains(err.Error(), "value too large") {
		t.Fatalf("over-limit value: %v", err)
	}
	err = c.Set(ctx, "bad\xffkey", "v", 0).Err()
	if err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("invalid UTF-8 key: %v", err)
	}
	if err := c.Set(ctx, strings.Repeat("k", 4000), "fits", 0).Err(); err != nil {
		t.Fatalf("4000-byte key: %v", err)
	}
	if v, err := c.Get(ctx, strings.Repeat("k", 4000)).Result(); err != nil || v != "fits" {
		t.Fatalf("the connection is not usable after the errors: %q %v", v, err)
	}
}

func TestBinaryAndLargeValuesRoundTrip(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	// A 10 MiB SET took more than the tests' usual 3 s write timeout on a
	// loaded 2-core machine; this test is about bytes, not time.
	sc := startSidecar(t, dsn, config{writeTimeout: 15 * time.Second})
	ctx := context.Background()
	c := client(t, sc.socket)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := make([]byte, 10<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	for key, v := range map[string][]byte{"bin": all, "big": big, "empty": {}} {
		if err := c.Set(ctx, key, v, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		got, err := c.Get(ctx, key).Bytes()
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("GET %s: %d bytes, %v; want %d exact bytes", key, len(got), err, len(v))
		}
		var stored []byte
		if err := db.QueryRow(`SELECT value FROM cache_entries WHERE key = $1`, key).Scan(&stored); err != nil || !bytes.Equal(stored, v) {
			t.Fatalf("%s in the table: %d bytes, %v", key, len(stored), err)
		}
	}
}

func TestLoadingBeforeFirstLoad(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	release := make(chan struct{})
	var once sync.Once
	sc := startSidecarNoWait(t, dsn, config{mirror: mirror.Options{Hooks: &mirror.Hooks{
		AfterSnapshotVisible: func() { once.Do(func() { <-release }) },
	}}})
	c := client(t, sc.socket)
	ctx := context.Background()
	for _, cmd := range [][]any{{"GET", "k"}, {"SET", "k", "v"}, {"EXISTS", "k"}, {"DBSIZE"}} {
		err := c.Do(ctx, cmd...).Err()
		if err == nil || !strings.HasPrefix(err.Error(), "LOADING") {
			t.Errorf("%v before the first load: %v, want LOADING", cmd, err)
		}
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Errorf("PING while loading: %v", err)
	}
	close(release)
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		err := c.Get(ctx, "k").Err()
		return err == redis.Nil, "GET after the load: " + errString(err)
	})
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestRESP3(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	got, _ := raw(t, sc.socket, []byte("HELLO 3\r\nGET missing\r\nCONFIG GET appendonly\r\nHELLO 2\r\nGET missing\r\n"))
	for _, want := range []string{"%7\r\n$6\r\nserver\r\n", "$5\r\nproto\r\n:3\r\n", "_\r\n%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
		"$5\r\nproto\r\n:2\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("RESP3 exchange lacks %q:\n%q", want, got)
		}
	}
	if !strings.HasSuffix(got, "$-1\r\n") {
		t.Errorf("after HELLO 2 a nil should be $-1:\n%q", got)
	}
	if got, _ := raw(t, sc.socket, []byte("HELLO 4\r\n")); !strings.HasPrefix(got, "-NOPROTO") {
		t.Errorf("HELLO 4: %q", got)
	}
	// One keyspace: unlike Redis, SELECT of another database is refused.
	if got, _ := raw(t, sc.socket, []byte("SELECT 1\r\nSELECT 0\r\n")); got != "-ERR DB index is out of range\r\n+OK\r\n" {
		t.Errorf("SELECT: %q", got)
	}
}

func TestSocketFile(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	dir := sockDir(t)
	path := filepath.Join(dir, "s.sock")
	// A stale socket file, as a crash leaves it: nobody answers.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	sc := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.Socket = path; s.SocketMode = 0o600 }})
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket %v mode %v, want a socket with 0600", err, fi.Mode())
	}
	// A second server on the same live socket refuses to start.
	second := &unixsock.Server{Socket: path, Mirror: sc.m, Writer: sc.w}
	if err := second.Open(); err == nil || !strings.Contains(err.Error(), "another server is answering") {
		t.Fatalf("second server on a live socket: %v", err)
	}
	// A path that is not a socket is never replaced.
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("x"), 0o600)
	third := &unixsock.Server{Socket: plain, Mirror: sc.m, Writer: sc.w}
	if err := third.Open(); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("listen on a regular file: %v", err)
	}
	sc.stop()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file after shutdown: %v", err)
	}
}

func TestMaxClients(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.MaxClients = 2 }})
	for i := 0; i < 2; i++ { // two clients, kept open until the test ends
		c, err := net.Dial("unix", sc.socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("PING\r\n"))
		line, _ := bufio.NewReader(c).ReadString('\n')
		if line != "+PONG\r\n" {
			t.Fatalf("client %d: %q", i, line)
		}
	}
	c, err := net.Dial("unix", sc.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, _ := io.ReadAll(c)
	if string(got) != "-ERR max number of clients reached\r\n" {
		t.Fatalf("third client: %q", got)
	}
}
