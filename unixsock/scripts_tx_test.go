package unixsock_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/unixsock"
)

// TestScriptTimeLimitLeavesNoWrite: a script that wrote and then runs past
// --script-timeout is rolled back: neither Postgres nor any sidecar sees its
// writes, and a write that waited for its keys meanwhile succeeds after it.
func TestScriptTimeLimitLeavesNoWrite(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	short := func(s *unixsock.Server) { s.ScriptTimeout = 500 * time.Millisecond }
	a, b := startSidecar(t, dsn, config{server: short}), startSidecar(t, dsn, config{server: short})
	ca, cb := client(t, a.socket), client(t, b.socket)
	if got := do(ca, "SET", "counter", "5"); got != `"OK"` {
		t.Fatal(got)
	}
	body := "redis.call('SET', KEYS[1], 'x'); redis.call('INCR', KEYS[2]); while true do end"
	done := make(chan string, 1)
	go func() { done <- do(ca, "EVAL", body, "2", "fresh", "counter") }()
	// Once the script runs in its transaction it holds its keys' locks; a
	// SET of one of them on the other sidecar then waits for the script.
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		var n int
		err := db.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted`).Scan(&n)
		return err == nil && n >= 2, fmt.Sprintf("%d advisory locks held (%v)", n, err)
	})
	if got := do(cb, "SET", "fresh", "later"); got != `"OK"` {
		t.Errorf("SET waiting on the script's keys: %s", got)
	}
	if got := <-done; !strings.Contains(got, "Script timed out") {
		t.Fatalf("script past the time limit answered %s", got)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM cache_entries WHERE key = 'fresh' AND value = 'x'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("the script's SET is in Postgres: %d rows (%v)", n, err)
	}
	var v string
	if err := db.QueryRow(`SELECT convert_from(value, 'UTF8') FROM cache_entries WHERE key = 'counter'`).Scan(&v); err != nil || v != "5" {
		t.Errorf("counter in Postgres %q (%v), want 5: the script's INCR was kept", v, err)
	}
	for name, c := range map[string]*redis.Client{"a": ca, "b": cb} {
		testutil.Eventually(t, 10*time.Second, func() (bool, string) {
			got := do(c, "MGET", "fresh", "counter")
			return got == `["later" "5"]`, fmt.Sprintf("sidecar %s: MGET %s", name, got)
		})
	}
}

// TestScriptLockAcrossSidecars runs redis-py's Lock protocol (SET NX PX to
// acquire, its compare-and-delete script to release, by EVALSHA after
// SCRIPT LOAD) through two sidecars: a second holder is excluded, and a
// release frees only the holder's own token.
func TestScriptLockAcrossSidecars(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	a, b := startSidecar(t, dsn, config{}), startSidecar(t, dsn, config{})
	ca, cb := client(t, a.socket), client(t, b.socket)
	ctx := context.Background()
	sha := ca.ScriptLoad(ctx, releaseScript).Val()
	if got := cb.ScriptLoad(ctx, releaseScript).Val(); got != sha || sha == "" {
		t.Fatalf("SCRIPT LOAD: %q and %q", sha, got)
	}
	release := func(c *redis.Client, token string) string { return do(c, "EVALSHA", sha, "1", "lock", token) }
	if got := do(ca, "SET", "lock", "tokA", "NX", "PX", "30000"); got != `"OK"` {
		t.Fatalf("A acquires: %s", got)
	}
	if got := do(cb, "SET", "lock", "tokB", "NX", "PX", "30000"); got != "nil" {
		t.Errorf("B acquires a held lock: %s", got)
	}
	if got := release(cb, "tokB"); got != "int64(0)" {
		t.Errorf("B releases A's lock: %s", got)
	}
	if got := do(ca, "GET", "lock"); got != `"tokA"` {
		t.Errorf("after B's release, the lock holds %s", got)
	}
	if got := release(ca, "tokA"); got != "int64(1)" {
		t.Errorf("A releases its own lock: %s", got)
	}
	if got := do(cb, "SET", "lock", "tokB", "NX", "PX", "30000"); got != `"OK"` {
		t.Errorf("B acquires the freed lock: %s", got)
	}
	if got := release(ca, "tokA"); got != "int64(0)" {
		t.Errorf("A releases B's lock with its old token: %s", got)
	}
	if got := release(cb, "tokB"); got != "int64(1)" {
		t.Errorf("B releases its own lock: %s", got)
	}
	lockContention(t, sha, ca, cb)
}

// lockContention has workers on both sidecars take the lock in turn: never
// two holders at once, and every release finds its own token.
func lockContention(t *testing.T, sha string, clients ...*redis.Client) {
	const workers, rounds = 6, 15
	var holders, taken atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		c := clients[w%len(clients)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				token := fmt.Sprintf("w%d-r%d", w, r)
				deadline := time.Now().Add(30 * time.Second)
				for do(c, "SET", "lock2", token, "NX", "PX", "20000") != `"OK"` {
					if time.Now().After(deadline) {
						t.Errorf("worker %d: lock not acquired in 30s", w)
						return
					}
					time.Sleep(time.Millisecond) // retry pace, as redis-py's blocking_timeout loop
				}
				if n := holders.Add(1); n != 1 {
					t.Errorf("worker %d: %d holders at once", w, n)
				}
				taken.Add(1)
				holders.Add(-1)
				if got := do(c, "EVALSHA", sha, "1", "lock2", token); got != "int64(1)" {
					t.Errorf("worker %d: releasing its own lock answered %s", w, got)
				}
			}
		}()
	}
	wg.Wait()
	if taken.Load() != workers*rounds {
		t.Errorf("%d acquisitions, want %d", taken.Load(), workers*rounds)
	}
}

// TestScriptInMulti: EVAL queued in a block of reads runs as on its own
// (writing in its own transaction); in a block that writes it answers an
// error alone, and the block's other commands apply.
func TestScriptInMulti(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	c := client(t, startSidecar(t, dsn, config{}).socket)
	ctx := context.Background()
	cmds, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Eval(ctx, "return redis.call('SET', KEYS[1], 'from-script')", []string{"m1"})
		p.Get(ctx, "m1")
		return nil
	})
	if err != nil || cmds[0].(*redis.Cmd).Val() != "OK" {
		t.Errorf("EVAL in a block of reads: %v %v", cmds, err)
	}
	cmds, _ = c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "m2", "v", 0)
		p.Eval(ctx, "return 1", []string{"m2"})
		return nil
	})
	if len(cmds) != 2 || cmds[0].Err() != nil || !strings.Contains(fmt.Sprint(cmds[1].Err()), "not supported in a MULTI block that writes") {
		t.Errorf("EVAL in a block that writes: %v", cmds)
	}
	if got := do(c, "MGET", "m1", "m2"); got != `["from-script" "v"]` {
		t.Errorf("after the blocks: %s", got)
	}
}

// TestScriptWritesAppliedAtOnce: a script's writes to several keys of 4 KB
// values commit as one unit: a client polling MGET on another sidecar sees
// all of them or none, never part of a run.
func TestScriptWritesAppliedAtOnce(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	a, b := startSidecar(t, dsn, config{}), startSidecar(t, dsn, config{})
	ca, cb := client(t, a.socket), client(t, b.socket)
	keys := []any{"p1", "p2", "p3", "p4", "p5"}
	body := "for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1] .. string.rep('x', 4096)) end return #KEYS"
	const runs = 100
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range runs {
			args := append(append([]any{"EVAL", body, len(keys)}, keys...), fmt.Sprint(i))
			if got := do(ca, args...); got != "int64(5)" {
				t.Errorf("run %d answered %s", i, got)
				return
			}
		}
	}()
	last, seen := "", 0
	for polling := true; polling; {
		select {
		case <-done:
			polling = false
		default:
		}
		vals, err := cb.MGet(context.Background(), "p1", "p2", "p3", "p4", "p5").Result()
		if err != nil {
			t.Fatal(err)
		}
		if vals[0] != vals[1] || vals[0] != vals[2] || vals[0] != vals[3] || vals[0] != vals[4] {
			t.Fatalf("MGET on the other sidecar saw part of a script's writes: %.12q", vals)
		}
		if s, _ := vals[0].(string); s != last {
			last, seen = s, seen+1
		}
	}
	t.Logf("%d distinct states seen on the other sidecar", seen)
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		v := do(cb, "GET", "p5")
		return strings.HasPrefix(v, fmt.Sprintf(`"%dxxx`, runs-1)), "p5 on the other sidecar: " + v[:min(len(v), 12)]
	})
}

// TestScriptWriteBounds: a script that writes declares at most 4096 keys,
// and runs at most 1024 write commands of 64 MiB (lowered here); past that
// the command answers an error the script can catch, and what it wrote
// before stays.
//
// Not parallel: it lowers the package's bounds, which every script of a
// test running beside it would meet.
func TestScriptWriteBounds(t *testing.T) {
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.ScriptTimeout = 4 * time.Second }})
	c := client(t, sc.socket)
	args := []any{"EVAL", "return redis.call('SET', KEYS[1], 'v')", 4097}
	for i := range 4097 {
		args = append(args, fmt.Sprint("many", i))
	}
	if got := do(c, args...); !strings.Contains(got, "may declare at most 4096 keys") {
		t.Errorf("EVAL writing with 4097 keys: %s", got)
	}
	if got := do(c, "EXISTS", "many0"); got != "int64(0)" {
		t.Errorf("refused script wrote: %s", got)
	}
	restore := unixsock.SetScriptWriteBounds(20, 1000)
	defer restore()
	body := `for i = 1, 30 do
		local r = redis.pcall('SET', KEYS[1], i)
		if type(r) == 'table' and r.err then return {i, r.err} end
	end`
	got := do(c, "EVAL", body, "1", "w")
	if !strings.HasPrefix(got, `[int64(21) "ERR a pgmirror script may run at most 20 write commands`) {
		t.Errorf("30 writes: %s", got)
	}
	if got := do(c, "GET", "w"); got != `"20"` {
		t.Errorf("after the bound, GET answered %s, want the last write before it", got)
	}
	unixsock.SetScriptWriteBounds(20, 100)
	big := strings.Repeat("b", 90)
	if got := do(c, "EVAL", "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('SET', KEYS[1], ARGV[1])", "1", "w", big); !strings.Contains(got, "at most 20 write commands of 100 bytes") {
		t.Errorf("two SETs of 90 bytes under a bound of 100: %s", got)
	}
}
