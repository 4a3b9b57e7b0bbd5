package unixsock_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
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
			t.Fatalf("received %d of %d messages within 10s", len(got), n)
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
	t.Parallel()
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
	info, err := cb.Info(ctx, "stats").Result()
	if err != nil || !strings.Contains(info, "pubsub_channels:1\r\n") || !strings.Contains(info, "pubsub_patterns:1\r\n") {
		t.Errorf("INFO stats of sidecar B: %v\n%s", err, info)
	}
}

// TestPublishLimitsAndNamespace: a message whose channel and bytes pass
// the bound of one notification is refused with an error naming the bound
// (less the namespace), and one at the bound is delivered; a channel that
// is not valid UTF-8 is refused; under --namespace a channel is prefixed
// like a key, so a sidecar of another namespace never delivers it and one
// without a namespace sees the prefixed name.
func TestPublishLimitsAndNamespace(t *testing.T) {
	t.Parallel()
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

}

// TestPublishInTransactions: PUBLISH in a MULTI block that writes, and in a
// script that writes, is sent when the transaction commits, after its
// writes: a subscriber on another sidecar that reads the key on receiving
// the message finds the new value. A block EXEC aborts (a watched key
// changed) sends nothing; a script that publishes before its first write
// (which makes it run again inside a transaction) sends the message once.
func TestPublishInTransactions(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	a, b := startSidecar(t, dsn, config{}), startSidecar(t, dsn, config{})
	ctx := context.Background()
	ca, cb := client(t, a.socket), client(t, b.socket)
	sub := subscribeOrFail(t, cb, false, "news")
	for i := 0; i < 20; i++ {
		v := fmt.Sprint("v", i)
		cmds, err := ca.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "k", v, 0)
			p.Publish(ctx, "news", v)
			return nil
		})
		if err != nil || cmds[1].(*redis.IntCmd).Val() != 0 {
			t.Fatalf("MULTI SET PUBLISH EXEC: %v, %v", cmds, err)
		}
		if got := receive(t, sub, 1); got[0] != "|news="+v {
			t.Fatalf("received %q, want %q", got, v)
		}
		if got, err := cb.Get(ctx, "k").Result(); err != nil || got != v {
			t.Fatalf("on receiving %q, sidecar b reads k = %q, %v: the message came before the write", v, got, err)
		}
	}
	// A block aborted by WATCH publishes nothing.
	watcher := client(t, a.socket)
	err := watcher.Watch(ctx, func(tx *redis.Tx) error {
		if err := ca.Set(ctx, "k", "changed", 0).Err(); err != nil {
			return err
		}
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "k", "aborted", 0)
			p.Publish(ctx, "news", "aborted")
			return nil
		})
		return err
	}, "k")
	if err != redis.TxFailedErr {
		t.Fatalf("WATCH block: %v, want the transaction to fail", err)
	}
	// A script that publishes, then writes: one message, after the write.
	src := `redis.call('PUBLISH', 'news', 'from a script'); redis.call('SET', KEYS[1], 'scripted'); return 1`
	if err := ca.Eval(ctx, src, []string{"k"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := ca.Eval(ctx, `return redis.call('PUBLISH', 'news', 'read-only script')`, nil).Err(); err != nil {
		t.Fatal(err)
	}
	got := receive(t, sub, 2)
	if strings.Join(got, " ") != "|news=from a script |news=read-only script" {
		t.Fatalf("received %q", got)
	}
	if v, err := cb.Get(ctx, "k").Result(); err != nil || v != "scripted" {
		t.Fatalf("after the script's message, sidecar b reads k = %q, %v", v, err)
	}
}

// TestSlowChannelSubscriberIsCut: a subscriber of an application channel
// that stops reading is disconnected at the bound keyspace subscribers
// have (--subscriber-buffer), while a subscriber of the channel on another
// sidecar (default bounds) gets every message.
func TestSlowChannelSubscriberIsCut(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.SubscriberBuffer = 64 }})
	other := startSidecar(t, dsn, config{})
	slow := dialResp(t, sc.socket)
	slow.send("SUBSCRIBE", "bulk")
	if got := slow.read(); !strings.Contains(got, "subscribe") {
		t.Fatalf("confirmation %q", got)
	}
	fast := subscribeOrFail(t, client(t, other.socket), false, "bulk")
	// 300 messages of 2 KB: past the slow one's 64 messages, within the
	// 1 MiB of output any subscriber may have waiting.
	exec(t, db, `SELECT pgmirror_publish_channel('bulk', i || repeat('x', 2000)) FROM generate_series(1, 300) i`)
	got := receive(t, fast, 300)
	if !strings.HasPrefix(got[299], "|bulk=300x") {
		t.Fatalf("the reading subscriber's last message: %.20q", got[299])
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		n := sc.srv.Stats().SubscribersDropped
		return n == 1, fmt.Sprintf("%d subscribers dropped, want 1 (the one that does not read)", n)
	})
}

// TestPublishOrderPerConnection: ten connections, on two sidecars, each
// pipeline 100 PUBLISHes to one channel at once; a subscriber on each
// sidecar receives all 1000, and each connection's in the order it sent
// them.
func TestPublishOrderPerConnection(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	a, b := startSidecar(t, dsn, config{}), startSidecar(t, dsn, config{})
	ctx := context.Background()
	subs := []*redis.PubSub{subscribeOrFail(t, client(t, a.socket), false, "ord"),
		subscribeOrFail(t, client(t, b.socket), false, "ord")}
	const conns, each = 10, 100
	errs := make(chan error, conns)
	start := time.Now()
	for p := 0; p < conns; p++ {
		sock := a.socket
		if p%2 == 1 {
			sock = b.socket
		}
		c := client(t, sock)
		go func() {
			_, err := c.Pipelined(ctx, func(pl redis.Pipeliner) error {
				for i := 0; i < each; i++ {
					pl.Publish(ctx, "ord", fmt.Sprintf("%d:%d", p, i))
				}
				return nil
			})
			errs <- err
		}()
	}
	for p := 0; p < conns; p++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d PUBLISHes on %d pipelined connections committed in %v", conns*each, conns, time.Since(start))
	for s, ps := range subs {
		next := make([]int, conns)
		for _, m := range receive(t, ps, conns*each) {
			var p, i int
			if _, err := fmt.Sscanf(strings.TrimPrefix(m, "|ord="), "%d:%d", &p, &i); err != nil {
				t.Fatalf("message %q: %v", m, err)
			}
			if i != next[p] {
				t.Fatalf("subscriber %d: connection %d's message %d arrived when %d was due", s, p, i, next[p])
			}
			next[p]++
		}
	}
}
