package unixsock_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
)

// TestClientBudget: clients that together hold more than the budget in
// buffers (here commands half sent) lose the largest of them, and only
// it: the others carry on.
func TestClientBudget(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	const budget = 2 << 20
	sc := startSidecar(t, dsn, config{maxValue: 2 << 20, server: budgetServer(budget)})
	const value = 2 << 20
	// Bytes of the value each client sends before it stalls; the parser
	// holds them in a buffer that doubles (1 MiB, 128 KiB, 256 KiB, ...).
	sent := map[string]int{"A": 1_000_000, "B": 128_000, "C": 256_000, "D": 500_000, "E": 200_000}
	conns := map[string]net.Conn{}
	for _, name := range []string{"A", "B", "C", "D", "E"} {
		c, err := net.Dial("unix", sc.socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[name] = c
		before := clientBuffers(sc.srv)
		fmt.Fprintf(c, "*3\r\n$3\r\nSET\r\n$1\r\n%s\r\n$%d\r\n", name, value)
		if _, err := c.Write(bytes.Repeat([]byte("v"), sent[name])); err != nil {
			t.Fatal(err)
		}
		if name == "E" {
			break
		}
		// Each of A..D is counted; together they fit the budget.
		testutil.Eventually(t, 10*time.Second, func() (bool, string) {
			now := clientBuffers(sc.srv)
			return now-before >= int64(sent[name]), fmt.Sprintf("client %s: buffers %d before, %d now", name, before, now)
		})
	}
	// E takes the total past the budget: A, the largest, is disconnected.
	if !closedByServer(t, conns["A"]) {
		t.Fatal("the largest client was not disconnected")
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		evicted, buffers := evictedBudget(sc.srv), clientBuffers(sc.srv)
		return evicted == 1 && buffers <= budget,
			fmt.Sprintf("after the eviction: %d evicted, %d bytes of buffers (budget %d)", evicted, buffers, budget)
	})
	// The others stay connected (their reads wait), and other clients are served.
	for _, name := range []string{"B", "C", "D", "E"} {
		_ = conns[name].SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := conns[name].Read(make([]byte, 1)); !isTimeout(err) {
			t.Fatalf("client %s was disconnected too: %v", name, err)
		}
		conns[name].Close()
	}
	if got, _ := raw(t, sc.socket, []byte("PING\r\n")); got != "+PONG\r\n" {
		t.Fatalf("PING after the eviction: %q", got)
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		n := clientBuffers(sc.srv)
		return n == 0, fmt.Sprintf("%d bytes of buffers left after every client left", n)
	})
	info, _ := raw(t, sc.socket, []byte("INFO\r\n"))
	for _, want := range []string{"evicted_clients:1\r\n", "max_client_buffers:2097152\r\n"} {
		if !strings.Contains(info, want) {
			t.Errorf("INFO lacks %q", want)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// closedByServer reports whether the server closes c (its reads end)
// within a few seconds.
func closedByServer(t *testing.T, c net.Conn) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	return !isTimeout(err)
}
