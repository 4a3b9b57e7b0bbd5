package unixsock_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/unixsock"
)

// TestFlushMatchesRedis: FLUSHDB and FLUSHALL answer as Redis does, with
// and without ASYNC|SYNC, and leave no key behind.
func TestFlushMatchesRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	pgm, red := client(t, sc.socket), client(t, redisSock)
	steps := [][]any{
		{"set", "fk1", "v"}, {"set", "fk2", "v", "ex", "100"}, {"flushdb"}, {"get", "fk1"}, {"dbsize"},
		{"set", "fk1", "v"}, {"flushdb", "async"}, {"exists", "fk1"},
		{"set", "fk1", "v"}, {"flushdb", "SYNC"}, {"get", "fk1"},
		{"set", "fk1", "v"}, {"flushall"}, {"dbsize"},
		{"set", "fk1", "v"}, {"flushall", "Async"}, {"dbsize"},
		{"set", "fk1", "v"}, {"flushall", "sync"}, {"keys", "*"},
		{"flushdb", "now"}, {"flushdb", "async", "sync"}, {"flushall", "lazy"}, {"flushall", "sync", "x"},
		{"flushdb"}, {"flushall"},
	}
	for i, st := range steps {
		want, got := do(red, st...), do(pgm, st...)
		if want != got {
			t.Errorf("step %d %q:\n redis    %s\n pgmirror %s", i, st, want, got)
		}
	}
}

// sortedKeys is KEYS * of c, sorted.
func sortedKeys(c *redis.Client) ([]string, error) {
	keys, err := c.Keys(context.Background(), "*").Result()
	slices.Sort(keys)
	return keys, err
}

// tableKeys is every key of cache_entries, sorted byte-wise.
func tableKeys(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT key FROM cache_entries ORDER BY key COLLATE "C"`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

// TestFlushDBNamespace is the acceptance test: FLUSHDB under
// --namespace deletes that namespace's keys in Postgres and nothing else
// (not a namespace its unescaped prefix would match as a LIKE pattern, not
// the entries a copy-mode watch maintains under it), every sidecar
// converges on the table, and the sidecars receive one flush record, not a
// delete per key.
func TestFlushDBNamespace(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `CREATE TABLE public.items (id int PRIMARY KEY, name text)`)
	exec(t, db, `INSERT INTO public.items VALUES (1, 'one'), (2, 'two')`)
	exec(t, db, `SELECT pgmirror_watch('public.items', 'id', 'a_%:item:')`)
	nsA, nsB := "a_%:", "ab%:" // "ab%:k" matches LIKE 'a_%:%'
	sa := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.Namespace = nsA }})
	sb := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.Namespace = nsB }})
	// This one applies only signed payloads: the flush record must be.
	sall := startSidecar(t, dsn, config{listener: func(l *listener.Listener) { l.Unsigned = listener.UnsignedReject }})
	raw := pq.NewListener(dsn, 10*time.Millisecond, time.Second, nil)
	t.Cleanup(func() { raw.Close() })
	if err := raw.Listen(listener.Channel); err != nil {
		t.Fatal(err)
	}
	ca, cb, call := client(t, sa.socket), client(t, sb.socket), client(t, sall.socket)
	ctx := context.Background()
	for i := range 50 {
		for _, c := range []*redis.Client{ca, cb} {
			if err := c.Set(ctx, fmt.Sprintf("k%d", i), "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := call.MSet(ctx, "axx:1", "v", "a_%x", "v", "a_%", "v").Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := ca.DBSize(ctx).Result(); err != nil || n != 52 {
		t.Fatalf("DBSIZE in %q before FLUSHDB: %d, %v; want 50 keys and 2 watch entries", nsA, n, err)
	}
	before := sall.m.Stats().Applied

	// Writes of the other sidecars race with the flush; they must not
	// change what it deletes, and every sidecar must agree with the table.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, c := range []*redis.Client{cb, call} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.Set(ctx, fmt.Sprintf("race%d", i%20), i, 0).Err(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	if got, err := ca.FlushDB(ctx).Result(); err != nil || got != "OK" {
		t.Fatalf("FLUSHDB: %q, %v", got, err)
	}
	// Read-your-writes: the flushing sidecar answers from its mirror at once.
	if keys, err := sortedKeys(ca); err != nil || !slices.Equal(keys, []string{"item:1", "item:2"}) {
		t.Fatalf("KEYS * in %q right after FLUSHDB: %q, %v; want the watch's entries", nsA, keys, err)
	}
	close(stop)
	wg.Wait()

	want := tableKeys(t, db)
	for _, k := range want {
		if strings.HasPrefix(k, nsA) && !strings.HasPrefix(k, nsA+"item:") {
			t.Errorf("key %q of the flushed namespace is still in the table", k)
		}
	}
	for _, k := range []string{nsB + "k0", nsB + "k49", "a_%:item:1", "a_%:item:2", "axx:1", "a_%x", "a_%"} {
		if !slices.Contains(want, k) {
			t.Errorf("key %q was deleted by FLUSHDB in namespace %q", k, nsA)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		got, err := sortedKeys(call)
		slices.Sort(want)
		return err == nil && slices.Equal(got, want), fmt.Sprintf("sidecar without namespace: %d keys, table %d (%v)", len(got), len(want), err)
	})
	inB := 0
	for _, k := range want {
		if strings.HasPrefix(k, nsB) {
			inB++
		}
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		n, err := cb.DBSize(ctx).Result()
		return err == nil && n == int64(inB), fmt.Sprintf("DBSIZE in %q: %d, %v; want %d", nsB, n, err, inB)
	})
	// One payload carries the flush: format 2, one record.
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		for {
			select {
			case n := <-raw.Notify:
				if n == nil || !strings.Contains(n.Extra, "\nP ") {
					continue
				}
				p, h, err := listener.DecodeFull(n.Extra)
				if err != nil || h.Format != 2 || h.Parts != 1 || len(p.Changes) != 1 || p.Changes[0].Op != mirror.OpFlush ||
					p.Changes[0].Key != nsA || !slices.Equal(p.Changes[0].Keep, []string{"a_%:item:"}) {
					t.Fatalf("flush payload %q: %+v %+v %v", n.Extra, p, h, err)
				}
				return true, ""
			default:
				return false, "no flush payload"
			}
		}
	})
	after := sall.m.Stats().Applied
	if after["flush"]-before["flush"] != 1 || after["delete"] != before["delete"] {
		t.Errorf("a sidecar applied %d flush records and %d deletes, want 1 and 0",
			after["flush"]-before["flush"], after["delete"]-before["delete"])
	}

	// FLUSHALL is FLUSHDB: the namespace's keys only.
	if err := cb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := cb.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("DBSIZE in %q after FLUSHALL: %d, %v", nsB, n, err)
	}
	if n, err := ca.DBSize(ctx).Result(); err != nil || n != 2 {
		t.Fatalf("DBSIZE in %q after FLUSHALL in %q: %d, %v", nsA, nsB, n, err)
	}
}

// TestFlushRefused: with NoFlush (--no-flush) FLUSHDB and FLUSHALL answer
// an error and delete nothing.
func TestFlushRefused(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.NoFlush = true }})
	c := client(t, sc.socket)
	if err := c.Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"flushdb", "flushall"} {
		want := "error: ERR " + strings.ToUpper(cmd) + " is refused by this sidecar (--no-flush)"
		if got := do(c, cmd, "sync"); got != want {
			t.Errorf("%s with NoFlush: %s, want %s", cmd, got, want)
		}
	}
	if keys := tableKeys(t, db); !slices.Equal(keys, []string{"k"}) {
		t.Errorf("table after refused flushes: %q", keys)
	}
}
