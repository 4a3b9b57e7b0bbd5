package unixsock_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/listener"
	"pgmirror/unixsock"
)

func TestTwoSidecarsSeeEachOther(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	a, b := startSidecar(t, dsn, config{}), startSidecar(t, dsn, config{})
	ca, cb := client(t, a.socket), client(t, b.socket)
	ctx := context.Background()
	if err := ca.Set(ctx, "shared", "from-a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		v, err := cb.Get(ctx, "shared").Result()
		return v == "from-a", fmt.Sprintf("B: %q %v", v, err)
	})
	if n, err := cb.Del(ctx, "shared").Result(); err != nil || n != 1 {
		t.Fatalf("DEL on B: %d %v", n, err)
	}
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		err := ca.Get(ctx, "shared").Err()
		return err == redis.Nil, "A: " + errString(err)
	})
}

// TestReadYourWritesWithListenerPaused holds every notification back: reads
// after writes must still see the writes, and an older write's notification
// delivered late must not overwrite a newer local write.
func TestReadYourWritesWithListenerPaused(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	var paused atomic.Bool
	gate := make(chan struct{})
	sc := startSidecar(t, dsn, config{listener: func(l *listener.Listener) {
		l.BeforeApply = func() {
			if paused.Load() {
				<-gate
			}
		}
	}})
	c := client(t, sc.socket)
	ctx := context.Background()
	if _, err := db.Exec(`INSERT INTO cache_entries(key, value) VALUES ('k', 'older')`); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		v, _ := c.Get(ctx, "k").Result()
		return v == "older", "initial value not mirrored"
	})
	paused.Store(true)
	// A plain-SQL write commits first; its notification is held back.
	if _, err := db.Exec(`UPDATE cache_entries SET value = 'stale' WHERE key = 'k'`); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		v := fmt.Sprint("v", i)
		if err := c.Set(ctx, "k", v, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if got, err := c.Get(ctx, "k").Result(); err != nil || got != v {
			t.Fatalf("pair %d: GET after SET = %q, %v; want %q", i, got, err, v)
		}
	}
	paused.Store(false)
	close(gate)
	// Let every held notification (the stale one and the echoes) arrive.
	if _, err := db.Exec(`INSERT INTO cache_entries(key, value) VALUES ('marker', 'm')`); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		err := c.Get(ctx, "marker").Err()
		return err == nil, "marker not mirrored"
	})
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v999" {
		t.Fatalf("after the held notifications arrived: %q, %v; want v999", got, err)
	}
}

// TestGroupCommitFailsAlone has 50 clients write at once; among them
// commands that must fail (a non-number INCR, an over-limit APPEND) fail
// alone.
func TestGroupCommitFailsAlone(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{maxValue: 1 << 16})
	c := client(t, sc.socket)
	ctx := context.Background()
	c.Set(ctx, "word", "abc", 0)
	c.Set(ctx, "long", bytes.Repeat([]byte("x"), 1<<16-10), 0)
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				var err error
				switch {
				case i == 7 && j == 10:
					err = c.Incr(ctx, "word").Err()
					if err == nil || !strings.Contains(err.Error(), "not an integer") {
						err = fmt.Errorf("INCR on a word: %v", err)
					} else {
						err = nil
					}
				case i == 9 && j == 10:
					err = c.Append(ctx, "long", strings.Repeat("y", 20)).Err()
					if err == nil || !strings.Contains(err.Error(), "maximum allowed size") {
						err = fmt.Errorf("APPEND over the limit: %v", err)
					} else {
						err = nil
					}
				default:
					err = c.Set(ctx, fmt.Sprintf("g%d-%d", i, j), "v", 0).Err()
				}
				if err != nil && errs[i] == nil {
					errs[i] = err
				}
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM cache_entries WHERE key LIKE 'g%'`).Scan(&n)
	if n != 50*20-2 {
		t.Fatalf("%d rows written, want %d", n, 50*20-2)
	}
}

// TestOppositeOrdersNeverDeadlock writes overlapping key sets in opposite
// orders from two sidecars at once.
func TestOppositeOrdersNeverDeadlock(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	a, b := startSidecar(t, dsn, config{}), startSidecar(t, dsn, config{})
	ctx := context.Background()
	keys := []string{"d1", "d2", "d3", "d4", "d5"}
	var wg sync.WaitGroup
	var failures atomic.Int64
	var firstErr atomic.Value
	for side, sc := range []*sidecar{a, b} {
		c := client(t, sc.socket)
		for g := 0; g < 10; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 30; i++ {
					args := []any{}
					for j := range keys {
						k := keys[j]
						if side == 1 {
							k = keys[len(keys)-1-j]
						}
						args = append(args, k, fmt.Sprint(side, g, i))
					}
					if err := c.MSet(ctx, args...).Err(); err != nil {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
					if err := c.Del(ctx, keys[i%len(keys)], keys[len(keys)-1-i%len(keys)]).Err(); err != nil {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				}
			}()
		}
	}
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d writes failed, first: %v", failures.Load(), firstErr.Load())
	}
}

func TestPostgresDown(t *testing.T) {
	t.Parallel()
	srv := pgtest.New(t)
	dsn := srv.CreateDB(t)
	testdb.Migrate(t, dsn)
	sc := startSidecar(t, dsn, config{})
	c := client(t, sc.socket)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET with Postgres down: %q %v", v, err)
	}
	start := time.Now()
	err := c.Set(ctx, "k", "w", 0).Err()
	if took := time.Since(start); err == nil || !strings.HasPrefix(err.Error(), "ERR") || took > 5*time.Second {
		t.Fatalf("SET with Postgres down: %v after %v; want -ERR within 5s", err, took)
	}
	if v, _ := c.Get(ctx, "k").Result(); v != "v" {
		t.Fatalf("a failed SET changed the mirror: %q", v)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() (bool, string) {
		err := c.Set(ctx, "k", "after", 0).Err()
		return err == nil, "SET after restart: " + errString(err)
	})
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "after" {
		t.Fatalf("GET after restart: %q %v", v, err)
	}
}

func TestNamespaceIsolates(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	a := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.Namespace = "app1:" }})
	b := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.Namespace = "app2:" }})
	ca, cb := client(t, a.socket), client(t, b.socket)
	ctx := context.Background()
	ca.Set(ctx, "k", "one", 0)
	cb.Set(ctx, "k", "two", 0)
	if v, _ := ca.Get(ctx, "k").Result(); v != "one" {
		t.Fatalf("app1 reads %q", v)
	}
	var stored string
	db.QueryRow(`SELECT value FROM cache_entries WHERE key = 'app2:k'`).Scan(&stored)
	if stored != "two" {
		t.Fatalf("app2:k in the table = %q", stored)
	}
	keys, _ := ca.Keys(ctx, "*").Result()
	if len(keys) != 1 || keys[0] != "k" {
		t.Fatalf("KEYS * in app1 = %q, want [k]", keys)
	}
	if n, _ := cb.DBSize(ctx).Result(); n != 1 {
		t.Fatalf("DBSIZE in app2 = %d", n)
	}
}
