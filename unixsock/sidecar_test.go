package unixsock_test

// Test helpers: a whole sidecar (mirror, listener, writer, socket server)
// on a real Postgres, a go-redis client on its socket, and a real Redis to
// compare with.

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	execpkg "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/sidecartest"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
	"pgmirror/unixsock"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// sidecar is a whole sidecar (internal/sidecartest) seen by these tests.
type sidecar struct {
	m      *mirror.Mirror
	srv    *unixsock.Server
	w      *pgstore.Writer
	socket string
	stop   func()
	sc     *sidecartest.Sidecar
}

// sockDir returns a short directory for sockets (paths are limited to ~107 bytes).
func sockDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "pgm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// config adjusts a test sidecar; every field may be left zero.
type config struct {
	mirror   mirror.Options
	server   func(*unixsock.Server)
	listener func(*listener.Listener)
	maxValue int64
	// writeTimeout bounds one write batch; 0: 3 s, so that tests of a cut
	// database are quick.
	writeTimeout time.Duration
}

// startSidecar runs a sidecar on dsn and waits until its mirror is ready.
func startSidecar(t testing.TB, dsn string, cfg config) *sidecar {
	t.Helper()
	s := startSidecarNoWait(t, dsn, cfg)
	s.waitReady(t)
	return s
}

func startSidecarNoWait(t testing.TB, dsn string, cfg config) *sidecar {
	t.Helper()
	if cfg.writeTimeout == 0 {
		cfg.writeTimeout = 3 * time.Second
	}
	sc := sidecartest.StartNoWait(t, dsn, sidecartest.Config{
		Mirror:       cfg.mirror,
		MaxValueSize: cfg.maxValue,
		WriteTimeout: cfg.writeTimeout,
		Server:       cfg.server,
		NoJobs:       true, // as before: these tests exercise the socket server, not the jobs
		Listener: func(l *listener.Listener) {
			l.PingInterval, l.MaxReconnect = 200*time.Millisecond, 300*time.Millisecond
			if cfg.listener != nil {
				cfg.listener(l)
			}
		},
	})
	return &sidecar{m: sc.Mirror, srv: sc.Server, w: sc.Writer, socket: sc.Server.Socket, stop: sc.Stop, sc: sc}
}

// waitReady waits until the mirror completed its first load.
func (s *sidecar) waitReady(t testing.TB) {
	t.Helper()
	s.sc.WaitReady(t, 30*time.Second)
}

// client returns a go-redis client on the sidecar's socket.
func client(t testing.TB, socket string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: socket, DialTimeout: 5 * time.Second,
		ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second, MaxRetries: -1, PoolSize: 64})
	t.Cleanup(func() { c.Close() })
	return c
}

// startRedis runs a real redis-server on a Unix socket for comparison. The
// setup step installs it; without it the test fails.
func startRedis(t testing.TB) string {
	t.Helper()
	bin, err := execpkg.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: run `make setup` (scripts/setup installs Debian's redis-server)")
	}
	dir := sockDir(t)
	socket := filepath.Join(dir, "redis.sock")
	cmd := execpkg.Command(bin, "--port", "0", "--unixsocket", socket, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := client(t, socket)
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not answer within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return socket
}

// do runs a command and renders its result and error for comparison.
func do(c *redis.Client, args ...any) string {
	v, err := c.Do(context.Background(), args...).Result()
	if err == redis.Nil {
		return "nil"
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return render(v)
}

func render(v any) string {
	switch x := v.(type) {
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = render(e)
		}
		return "[" + strings.Join(parts, " ") + "]"
	case nil:
		return "nil"
	case string:
		return fmt.Sprintf("%q", x)
	default:
		return fmt.Sprintf("%T(%v)", v, v)
	}
}

func exec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%.80s: %v", q, err)
	}
}

// multibulk encodes one command.
func multibulk(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}
