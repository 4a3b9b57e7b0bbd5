package unixsock_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/lib/pq"

	"pgmirror/internal/testdb"
)

// TestPublishLatency measures, for the report, PUBLISH on sidecar A ->
// message received by a subscriber on sidecar B (and on A), next to the raw
// floor of the same run: pg_notify committed -> received by a bare LISTEN
// connection. It logs p50 and p99 and checks only that every message
// arrived.
func TestPublishLatency(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("a measurement")
	}
	const n = 500
	dsn, db := testdb.New(t)
	a, b := startSidecar(t, dsn, config{}), startSidecar(t, dsn, config{})
	ctx := context.Background()
	subA := subscribeOrFail(t, client(t, a.socket), false, "lat")
	subB := subscribeOrFail(t, client(t, b.socket), false, "lat")
	pub := client(t, a.socket)
	var reply, onA, onB []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		if err := pub.Publish(ctx, "lat", strconv.Itoa(i)).Err(); err != nil {
			t.Fatal(err)
		}
		reply = append(reply, time.Since(start))
		mb := receive(t, subB, 1)
		onB = append(onB, time.Since(start))
		ma := receive(t, subA, 1)
		onA = append(onA, time.Since(start))
		if mb[0] != "|lat="+strconv.Itoa(i) || ma[0] != mb[0] {
			t.Fatalf("message %d arrived as %q and %q", i, ma, mb)
		}
	}
	// The floor: pg_notify in an autocommit statement -> a bare listener.
	l := pq.NewListener(dsn, time.Second, time.Second, nil)
	defer l.Close()
	if err := l.Listen("pgmirror_floor"); err != nil {
		t.Fatal(err)
	}
	var floor []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		exec(t, db, `SELECT pg_notify('pgmirror_floor', 'x')`)
		select {
		case <-l.Notify:
		case <-time.After(10 * time.Second):
			t.Fatal("floor notification lost")
		}
		floor = append(floor, time.Since(start))
	}
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"PUBLISH reply on A", reply}, {"received on B", onB}, {"received on A (after B)", onA}, {"raw NOTIFY floor", floor}} {
		slices.Sort(m.d)
		t.Logf("%-26s p50 %v  p99 %v  (n=%d)", m.name, m.d[len(m.d)/2], m.d[len(m.d)*99/100], len(m.d))
	}
}
