package pgstore_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"pgmirror/internal/testdb"
	"pgmirror/pgstore"
)

// lockedBuffer is a log sink safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// silentServer accepts TCP connections and never answers: the hung
// handshake lib/pq does not give up on when its context ends.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}

func openDSN(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestServerVersionHungServer: against a server that never answers,
// ServerVersion returns when its context ends, not when the driver would.
func TestServerVersionHungServer(t *testing.T) {
	host, port, _ := net.SplitHostPort(silentServer(t))
	db := openDSN(t, fmt.Sprintf("host=%s port=%s user=x dbname=x sslmode=disable", host, port))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := pgstore.ServerVersion(ctx, db)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ServerVersion: %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("ServerVersion returned after %v, long after its context ended", d)
	}
}

// TestConnectRetriesThenConnects: Connect logs each failed attempt, its
// error redacted, with the wait before the next (doubling from 100ms), and
// returns the context's error once it ends; on a database that answers it
// logs the server's version and the attempt.
func TestConnectRetriesThenConnects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	ln.Close() // nothing listens there now: every attempt is refused
	db := openDSN(t, fmt.Sprintf("host=127.0.0.1 port=%d user=x password=s3cret dbname=x sslmode=disable", addr.Port))
	var logs lockedBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	redact := func(s string) string { return strings.ReplaceAll(s, "127.0.0.1", "[host]") }
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := pgstore.Connect(ctx, db, log, redact); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect: %v, want the context's deadline", err)
	}
	out := logs.String()
	for _, want := range []string{
		"cannot connect to Postgres, will retry: attempt=1", "retry_in=100ms",
		"attempt=2", "retry_in=200ms", "[host]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "127.0.0.1") {
		t.Errorf("an error was logged unredacted:\n%s", out)
	}

	_, good := testdb.New(t)
	var ok lockedBuffer
	if err := pgstore.Connect(context.Background(), good, hclog.New(&hclog.LoggerOptions{Output: &ok}), nil); err != nil {
		t.Fatalf("Connect to a live database: %v", err)
	}
	if out := ok.String(); !strings.Contains(out, "connected: server_version=") || !strings.Contains(out, "attempt=1") {
		t.Errorf("log of a first-attempt connect:\n%s", out)
	}
}
