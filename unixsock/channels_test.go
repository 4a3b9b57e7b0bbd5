package unixsock_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
	"pgmirror/unixsock"
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

// TestPublishLimitsAndNamespace: a message whose channel and bytes pass
// the bound of one notification is refused with an error naming the bound
// (less the namespace), and one at the bound is delivered; a channel that
// is not valid UTF-8 is refused; under --namespace a channel is prefixed
// like a key, so a sidecar of another namespace never delivers it and one
// without a namespace sees the prefixed name; PUBLISH is refused inside
// MULTI, as pub/sub commands are.
func TestPublishLimitsAndNamespace(t *testing.T) {
	dsn, db := testdb.New(t)
	ns := func(p string) config { return config{server: func(s *unixsock.Server) { s.Namespace = p }} }
	a, b, plain := startSidecar(t, dsn, ns("a:")), startSidecar(t, dsn, ns("b:")), startSidecar(t, dsn, config{})
	ctx := context.Background()
	ca, cb, cp := client(t, a.socket), client(t, b.socket), client(t, plain.socket)
	subA := subscribeOrFail(t, ca, false, "news")
	subB := subscribeOrFail(t, cb, true, "*")
	subP := subscribeOrFail(t, cp, true, "*news")

	room := 5840 - len("a:")
	atBound := strings.Repeat("x", room-len("news"))
	if err := ca.Publish(ctx, "news", atBound+"x").Err(); err == nil ||
		err.Error() != fmt.Sprintf("ERR message too large: channel and message take %d bytes, at most %d (a message travels in one Postgres notification)", room+1, room) {
		t.Fatalf("PUBLISH past the bound: %v", err)
	}
	if err := ca.Publish(ctx, "bad\xff", "x").Err(); err == nil || !strings.Contains(err.Error(), "invalid channel") {
		t.Fatalf("PUBLISH on a channel that is not UTF-8: %v", err)
	}
	if err := ca.Publish(ctx, "news", atBound).Err(); err != nil {
		t.Fatal(err)
	}
	exec(t, db, `SELECT pgmirror_publish_channel('a:news', 'from sql')`)
	if got := receive(t, subA, 2); got[0] != "|news="+atBound || got[1] != "|news=from sql" {
		t.Fatalf("sidecar a: received %.80q", got)
	}
	if got := receive(t, subP, 2); got[0] != "*news|a:news="+atBound || got[1] != "*news|a:news=from sql" {
		t.Fatalf("sidecar without a namespace: received %.80q", got)
	}
	// b sees nothing of a's: its first message is its own.
	if err := cb.Publish(ctx, "mine", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, subB, 1); got[0] != "*|mine=1" {
		t.Fatalf("sidecar b: received %.80q first, want its own message", got)
	}

	tx := ca.TxPipeline()
	tx.Publish(ctx, "news", "in multi")
	if _, err := tx.Exec(ctx); err == nil {
		t.Fatal("PUBLISH was accepted inside MULTI")
	}
}
