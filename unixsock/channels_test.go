package unixsock_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
)

// subscribeOrFail subscribes (channels, or patterns when pattern) and
// waits for the confirmations.
func subscribeOrFail(t *testing.T, c *redis.Client, pattern bool, names ...string) *redis.PubSub {
	t.Helper()
	ctx := context.Background()
	var ps *redis.PubSub
	if pattern {
		ps = c.PSubscribe(ctx, names...)
	} else {
		ps = c.Subscribe(ctx, names...)
	}
	t.Cleanup(func() { ps.Close() })
	for range names {
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return ps
}

// receive returns the next n messages of ps as "pattern|channel=payload"
// (pattern empty for a plain message), failing after 10 s.
func receive(t *testing.T, ps *redis.PubSub, n int) []string {
	t.Helper()
	var got []string
	deadline := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case m := <-ps.Channel():
			got = append(got, m.Pattern+"|"+m.Channel+"="+m.Payload)
		case <-deadline:
			t.Fatalf("received %q of %d messages within 10s", got, n)
		}
	}
	return got
}

// TestPublishReachesEverySidecar (issue 18, acceptance): PUBLISH on sidecar
// A reaches the subscribers of sidecars A and B, channel and pattern
// subscribers alike, in the order A's connection published; a message
// published from SQL (pgmirror_publish_channel, text and bytea) reaches
// both; PUBLISH answers the subscribers of its own sidecar; a message in a
// transaction that rolls back is never delivered.
func TestPublishReachesEverySidecar(t *testing.T) {
	dsn, db := testdb.New(t)
	a, b := startSidecar(t, dsn, config{}), startSidecar(t, dsn, config{})
	ctx := context.Background()
	ca, cb := client(t, a.socket), client(t, b.socket)
	subA := subscribeOrFail(t, ca, false, "news")
	subB := subscribeOrFail(t, cb, false, "news")
	patB := subscribeOrFail(t, cb, true, "ne*")
	pub := client(t, a.socket)
	for i := 0; i < 20; i++ {
		n, err := pub.Publish(ctx, "news", fmt.Sprint("m", i)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("PUBLISH answered %d, want 1 (the one subscriber of sidecar A)", n)
		}
	}
	var want []string
	for i := 0; i < 20; i++ {
		want = append(want, fmt.Sprint("|news=m", i))
	}
	for name, ps := range map[string]*redis.PubSub{"A": subA, "B": subB} {
		if got := receive(t, ps, 20); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("sidecar %s received %q, want %q", name, got, want)
		}
	}
	if got := receive(t, patB, 20); got[0] != "ne*|news=m0" || got[19] != "ne*|news=m19" {
		t.Errorf("pattern subscriber of B received %q", got)
	}

	exec(t, db, `SELECT pgmirror_publish_channel('news', 'from sql')`)
	exec(t, db, `SELECT pgmirror_publish_channel('news', '\x00ff'::bytea)`)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`SELECT pgmirror_publish_channel('news', 'rolled back')`); err != nil {
		t.Fatal(err)
	}
	tx.Rollback()
	exec(t, db, `SELECT pgmirror_publish_channel('news', 'last'), pgmirror_publish_channel('news', 'last')`)
	for name, ps := range map[string]*redis.PubSub{"A": subA, "B": subB} {
		got := strings.Join(receive(t, ps, 4), " ")
		if want := "|news=from sql |news=\x00\xff |news=last |news=last"; got != want {
			t.Errorf("sidecar %s received %q from SQL, want %q", name, got, want)
		}
	}
}
