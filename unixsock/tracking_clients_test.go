package unixsock_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
)

// rueidisClient is rueidis with its defaults (client-side caching on, the
// cluster probe) on a Unix socket.
func rueidisClient(t *testing.T, socket string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{socket},
		DialFn: func(_ string, d *net.Dialer, _ *tls.Config) (net.Conn, error) { return d.Dial("unix", socket) }})
	if err != nil {
		t.Fatalf("rueidis connects: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestRueidisClientSideCaching: rueidis connects with client-side caching
// on; its second DoCache of a key is a cache hit; an UPDATE and then a
// DELETE made with plain SQL, and a write through another sidecar, reach
// its cache within a second.
func TestRueidisClientSideCaching(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	// Inserted before the sidecars start, so that their first load holds
	// it: inserted after, the first GET could come before the notification.
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('profile:1', 'v1')`)
	sc := startSidecar(t, dsn, config{})
	sc2 := startSidecar(t, dsn, config{})
	c := rueidisClient(t, sc.socket)
	ctx := context.Background()
	get := func() (string, bool, error) {
		r := c.DoCache(ctx, c.B().Get().Key("profile:1").Cache(), time.Minute)
		v, err := r.ToString()
		if rueidis.IsRedisNil(err) {
			v, err = "(nil)", nil
		}
		return v, r.IsCacheHit(), err
	}
	if v, hit, err := get(); v != "v1" || hit || err != nil {
		t.Fatalf("first DoCache: %q hit=%v %v", v, hit, err)
	}
	if v, hit, err := get(); v != "v1" || !hit || err != nil {
		t.Fatalf("second DoCache: %q hit=%v %v; want a cache hit", v, hit, err)
	}
	reaches := func(what, want string, change func()) {
		t.Helper()
		change()
		start := time.Now()
		testutil.Eventually(t, time.Second, func() (bool, string) {
			v, _, err := get()
			return v == want && err == nil, fmt.Sprintf("DoCache after %s: %q, %v", what, v, err)
		})
		t.Logf("%s reached the cache in %v", what, time.Since(start))
		if v, hit, _ := get(); v != want || !hit {
			t.Fatalf("DoCache after %s was refreshed: %q hit=%v, want a hit", what, v, hit)
		}
	}
	reaches("an SQL UPDATE", "v2", func() { exec(t, db, `UPDATE cache_entries SET value = 'v2' WHERE key = 'profile:1'`) })
	reaches("an SQL DELETE", "(nil)", func() { exec(t, db, `DELETE FROM cache_entries WHERE key = 'profile:1'`) })
	reaches("a SET through another sidecar", "v3", func() {
		if err := client(t, sc2.socket).Set(ctx, "profile:1", "v3", 0).Err(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestGoRedisResp2Redirect: go-redis in RESP2 tracks with REDIRECT to a
// connection subscribed to __redis__:invalidate, which receives the key
// when plain SQL changes it.
func TestGoRedisResp2Redirect(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	ctx := context.Background()
	ids := make(chan int64, 1)
	subc := redis.NewClient(&redis.Options{Network: "unix", Addr: sc.socket, Protocol: 2,
		OnConnect: func(ctx context.Context, cn *redis.Conn) error {
			id, err := cn.ClientID(ctx).Result()
			ids <- id
			return err
		}})
	t.Cleanup(func() { subc.Close() })
	sub := subc.Subscribe(ctx, "__redis__:invalidate")
	t.Cleanup(func() { sub.Close() })
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	id := <-ids
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: sc.socket, Protocol: 2})
	t.Cleanup(func() { rdb.Close() })
	conn := rdb.Conn()
	t.Cleanup(func() { conn.Close() })
	if err := conn.Do(ctx, "CLIENT", "TRACKING", "on", "REDIRECT", id).Err(); err != nil {
		t.Fatal(err)
	}
	if err := conn.Get(ctx, "k").Err(); err != redis.Nil {
		t.Fatal(err)
	}
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('k', 'v')`)
	select {
	case m := <-sub.Channel():
		if m.Channel != "__redis__:invalidate" || len(m.PayloadSlice) != 1 || m.PayloadSlice[0] != "k" {
			t.Fatalf("message %+v, want the invalidation of k", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no invalidation within 5s")
	}
}
