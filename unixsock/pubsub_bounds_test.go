package unixsock_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
)

// TestSubscriberCannotSlowApply: a client's patterns are
// bounded, and keyspace delivery is off the mirror's apply path: with a
// subscriber holding the most patterns and its delivery blocked, 500
// updates still become visible, about as fast as with no subscriber.
func TestSubscriberCannotSlowApply(t *testing.T) {
	// Not parallel: it compares durations measured in the test.
	dsn, db := testdb.New(t)
	var gate atomic.Pointer[chan struct{}] // set: the publisher waits until it is closed
	sc := startSidecar(t, dsn, config{server: publishHook(func() {
		if ch := gate.Load(); ch != nil {
			<-*ch
		}
	})})
	reader := client(t, sc.socket)
	// visible runs 500 updates, one transaction each, and returns how long
	// until the last is served.
	visible := func(tag string) time.Duration {
		t.Helper()
		start := time.Now()
		for i := 1; i <= 500; i++ {
			exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ($1, $2)
				ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, fmt.Sprintf("u%d", i), tag)
		}
		testutil.Eventually(t, 30*time.Second, func() (bool, string) {
			v, err := reader.Get(context.Background(), "u500").Result()
			return v == tag, fmt.Sprintf("u500 = %q, %v", v, err)
		})
		return time.Since(start)
	}
	visible("warm-up")
	without := visible("a")

	sub, err := net.Dial("unix", sc.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	rd := bufio.NewReader(sub)
	// The most patterns a client may have; none can be told apart by its
	// literal start, so every event is matched against every one.
	var cmd strings.Builder
	fmt.Fprintf(&cmd, "*%d\r\n$10\r\nPSUBSCRIBE\r\n", maxPatterns+1)
	for i := 0; i < maxPatterns-1; i++ {
		p := fmt.Sprintf("*nomatch%d", i)
		fmt.Fprintf(&cmd, "$%d\r\n%s\r\n", len(p), p)
	}
	fmt.Fprintf(&cmd, "$%d\r\n%s\r\n", len("*:u500"), "*:u500")
	if _, err := sub.Write([]byte(cmd.String())); err != nil {
		t.Fatal(err)
	}
	_ = sub.SetReadDeadline(time.Now().Add(30 * time.Second))
	for i := 0; i < maxPatterns; i++ {
		if _, err := readPush(rd); err != nil {
			t.Fatalf("confirmation %d: %v", i, err)
		}
	}
	// One more is refused, as Redis refuses what passes a limit.
	if _, err := sub.Write([]byte("PSUBSCRIBE one-too-many\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := rd.ReadString('\n'); !strings.HasPrefix(line, "-ERR too many patterns subscribed: at most 1000 per client") {
		t.Fatalf("pattern %d: %q, %v", maxPatterns+1, line, err)
	}

	// Delivery blocked: the updates are applied all the same.
	closed := make(chan struct{})
	gate.Store(&closed)
	blocked := visible("b")
	if n := keyEventsDropped(sc.srv); n != 0 {
		t.Errorf("%d events dropped: the queue holds 1,000", n)
	}
	gate.Store(nil)
	close(closed)
	// Once delivery resumes, the subscriber hears of the last update.
	for {
		m, err := readPush(rd)
		if err != nil {
			t.Fatalf("waiting for the message about u500: %v", err)
		}
		if strings.Contains(m, "__keyspace@0__:u500") {
			break
		}
	}
	delivered := visible("c")
	t.Logf("500 updates visible in %v without a subscriber, %v with 1,000 patterns and delivery blocked, %v with delivery on",
		without, blocked, delivered)
	if limit := 5*without + 3*time.Second; blocked > limit || delivered > limit {
		t.Fatalf("a subscriber slowed the mirror: %v and %v against %v without one", blocked, delivered, without)
	}
}

// readPush reads one RESP2 array of bulk strings and returns its elements
// joined by spaces.
func readPush(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(line, "*") {
		return "", fmt.Errorf("not an array: %q", line)
	}
	var n int
	fmt.Sscanf(line, "*%d", &n)
	parts := make([]string, 0, n)
	for i := 0; i < n; i++ {
		h, err := rd.ReadString('\n')
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(h, ":") {
			parts = append(parts, strings.TrimSpace(h[1:]))
			continue
		}
		var size int
		fmt.Sscanf(h, "$%d", &size)
		b := make([]byte, size+2)
		if _, err := io.ReadFull(rd, b); err != nil {
			return "", err
		}
		parts = append(parts, string(b[:size]))
	}
	return strings.Join(parts, " "), nil
}
