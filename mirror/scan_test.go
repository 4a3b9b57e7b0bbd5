package mirror

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// applyKeys sets (or, with del, deletes) keys in the mirror as the stream would.
func applyKeys(m *Mirror, xid uint64, del bool, keys ...string) {
	b := Batch{Xid: xid}
	for _, k := range keys {
		if del {
			b.Changes = append(b.Changes, Change{Op: OpDelete, Key: k, Version: int64(xid)})
		} else {
			b.Changes = append(b.Changes, set(k, "v", int64(xid)))
		}
	}
	m.Apply(b)
}

// scanAll runs a whole SCAN iteration with count, calling between(i)
// before each call after the first; it returns how often each key came.
func scanAll(t *testing.T, m *Mirror, count int, between func(call int)) map[string]int {
	t.Helper()
	seen := map[string]int{}
	cursor := uint64(0)
	for call := 0; ; call++ {
		if call > 0 && between != nil {
			between(call)
		}
		next, keys := m.Scan(cursor, count, nil)
		for _, k := range keys {
			seen[k]++
		}
		if next == 0 {
			return seen
		}
		if call > 10_000_000 {
			t.Fatal("SCAN does not end")
		}
		cursor = next
	}
}

// TestScanStableIndexReturnsEachKeyOnce: without changes, one iteration
// returns every key exactly once, whatever COUNT.
func TestScanStableIndexReturnsEachKeyOnce(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 7, 100, 5000} {
		m := newLoaded(t)
		var keys []string
		for i := range n {
			keys = append(keys, fmt.Sprint("key:", i))
		}
		applyKeys(m, 1, false, keys...)
		for _, count := range []int{1, 3, 10, 1000} {
			seen := scanAll(t, m, count, nil)
			if len(seen) != n {
				t.Fatalf("n=%d count=%d: %d distinct keys returned", n, count, len(seen))
			}
			for k, c := range seen {
				if c != 1 {
					t.Fatalf("n=%d count=%d: %s returned %d times", n, count, k, c)
				}
			}
		}
	}
}

// TestScanGuaranteeUnderChurn: keys present for the whole iteration are
// returned while, between the calls, other keys are inserted and deleted
// in waves that make every shard's table grow and shrink several times.
func TestScanGuaranteeUnderChurn(t *testing.T) {
	t.Parallel()
	m := newLoaded(t)
	const stable = 1000
	var keys []string
	for i := range stable {
		keys = append(keys, fmt.Sprint("stable:", i))
	}
	applyKeys(m, 1, false, keys...)
	r := rand.New(rand.NewPCG(3, 4))
	xid := uint64(2)
	var live []string
	grew, shrank, calls := 0, 0, 0
	growing := true
	lastSlots := len(m.ix.shards[0].t.slots)
	seen := scanAll(t, m, 10, func(int) {
		xid++
		calls++
		// Waves: insert up to 10,000 churn keys, then delete them all.
		if growing {
			var add []string
			for range 1000 {
				k := fmt.Sprint("churn:", r.Uint64())
				add = append(add, k)
				live = append(live, k)
			}
			applyKeys(m, xid, false, add...)
			growing = len(live) < 10_000
		} else {
			cut := max(len(live)-2000, 0)
			applyKeys(m, xid, true, live[cut:]...)
			live = live[:cut]
			growing = len(live) == 0
		}
		switch s := len(m.ix.shards[0].t.slots); {
		case s > lastSlots:
			grew++
		case s < lastSlots:
			shrank++
		}
		lastSlots = len(m.ix.shards[0].t.slots)
	})
	for _, k := range keys {
		if seen[k] == 0 {
			t.Fatalf("%s, present throughout, was never returned", k)
		}
	}
	if grew < 3 || shrank < 3 {
		t.Fatalf("shard 0 grew %d and shrank %d times during the iteration; the test needs more churn", grew, shrank)
	}
	t.Logf("shard 0 grew %d and shrank %d times during the %d calls of the iteration; %d distinct keys returned",
		grew, shrank, calls+1, len(seen))
}

// TestScanConcurrentWriters: the same guarantee with writers running beside
// the iteration (for the race detector too).
func TestScanConcurrentWriters(t *testing.T) {
	t.Parallel()
	m := newLoaded(t)
	const stable = 2000
	var keys []string
	for i := range stable {
		keys = append(keys, fmt.Sprint("stable:", i))
	}
	applyKeys(m, 1, false, keys...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 9))
			xid := uint64(1000 * (w + 1))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var ks []string
				for range 100 {
					ks = append(ks, fmt.Sprint("w", w, ":", r.IntN(20000)))
				}
				xid++
				applyKeys(m, xid, i%3 == 2, ks...)
			}
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	for rounds := 0; rounds < 3 || time.Now().Before(deadline) && rounds < 50; rounds++ {
		seen := scanAll(t, m, 10, nil)
		for _, k := range keys {
			if seen[k] == 0 {
				close(stop)
				wg.Wait()
				t.Fatalf("round %d: %s, present throughout, was never returned", rounds, k)
			}
		}
	}
	close(stop)
	wg.Wait()
}

// TestTableScanAgainstMap checks table.scan on random tables and cursors:
// a call returns exactly the entries whose position lies in [from, next).
func TestTableScanAgainstMap(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5, 6))
	for round := range 200 {
		var ix index
		sh := &ix.shards[0]
		sh.echo = map[string]echoMark{}
		sh.t.bytes = &ix.tableBytes
		n := r.IntN(3000)
		pos := map[string]uint64{}
		for i := range n {
			k := fmt.Sprint(round, "/", i)
			h := keyHash(k)
			sh.put(&ix, h, newEntry(k, 1, NoExpiry, 0, 0, 0))
			pos[k] = scanPos(h)
		}
		for range 20 {
			from := r.Uint64() & scanPosMask
			if r.IntN(4) == 0 {
				from = 0
			}
			budget := 1 + r.IntN(50)
			got, next, done := sh.t.scan(from, budget, nil)
			inGot := map[string]bool{}
			for _, e := range got {
				if inGot[e.key()] {
					t.Fatalf("round %d: %s twice in one call", round, e.key())
				}
				inGot[e.key()] = true
			}
			for k, p := range pos {
				want := p >= from && (done || p < next)
				if want != inGot[k] {
					t.Fatalf("round %d (n=%d, from=%d, next=%d, done=%v): key at %d returned=%v",
						round, n, from, next, done, p, inGot[k])
				}
			}
			if !done && next <= from {
				t.Fatalf("no progress: from %d, next %d", from, next)
			}
		}
	}
}

// loadKeys returns a loaded mirror holding n keys.
func loadKeys(tb testing.TB, n int) *Mirror {
	tb.Helper()
	m, err := New(nil, Options{MaxMemory: 1 << 30})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.values.Close() })
	m.loaded, m.connected = true, true
	m.readyFlag.Store(true)
	keys := make([]string, 0, 10000)
	for i := range n {
		keys = append(keys, fmt.Sprint("key:", i))
		if len(keys) == cap(keys) || i == n-1 {
			applyKeys(m, uint64(i+1), false, keys...)
			keys = keys[:0]
		}
	}
	return m
}

// spreadCursors returns up to 200 cursors of one iteration, spread over the
// whole key space.
func spreadCursors(m *Mirror, n int) []uint64 {
	var cursors []uint64
	for c := uint64(0); len(cursors) < 200; {
		cursors = append(cursors, c)
		for range max(n/2000, 1) {
			if c, _ = m.Scan(c, 10, nil); c == 0 {
				return cursors
			}
		}
	}
	return cursors
}

// TestScanCostIndependentOfSize: a SCAN call of COUNT
// 10 does work in proportion to COUNT, not to the index: the memory it
// allocates (a proxy for the entries it touches, and free of timing noise)
// stays small with 300,000 keys, where walking a whole shard allocates a
// slice of every key of the shard.
func TestScanCostIndependentOfSize(t *testing.T) {
	// Not parallel: it counts the bytes the whole test process allocates.
	const n = 300_000
	m := loadKeys(t, n)
	cursors := spreadCursors(m, n)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	returned := 0
	for _, c := range cursors {
		_, ks := m.Scan(c, 10, nil)
		returned += len(ks)
	}
	runtime.ReadMemStats(&after)
	perCall := (after.TotalAlloc - before.TotalAlloc) / uint64(len(cursors))
	t.Logf("%d keys: %d bytes allocated and %.1f keys returned per SCAN COUNT 10 (%d calls)",
		n, perCall, float64(returned)/float64(len(cursors)), len(cursors))
	if perCall > 4096 {
		t.Fatalf("a SCAN COUNT 10 call allocates %d bytes with %d keys: it walks more than COUNT entries", perCall, n)
	}
	if returned < 5*len(cursors) {
		t.Fatalf("%d keys returned by %d calls of COUNT 10", returned, len(cursors))
	}
}

// BenchmarkScan measures one SCAN call of COUNT 10 in the middle of an
// index of 10k and of 1M keys: the cost must not grow with the index.
func BenchmarkScan(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprint("keys=", n), func(b *testing.B) {
			m := loadKeys(b, n)
			cursors := spreadCursors(m, n)
			b.ResetTimer()
			returned := 0
			for i := 0; i < b.N; i++ {
				_, ks := m.Scan(cursors[i%len(cursors)], 10, nil)
				returned += len(ks)
			}
			b.ReportMetric(float64(returned)/float64(b.N), "keys/call")
		})
	}
}

// TestScanCursorsFitInt64: every cursor of a whole iteration is below 2^63,
// since clients parse cursors as signed 64-bit integers (phpredis 5 loops
// for ever on a larger one), and the iteration still returns every key.
func TestScanCursorsFitInt64(t *testing.T) {
	m := newLoaded(t)
	var keys []string
	for i := range 3000 {
		keys = append(keys, fmt.Sprint("key:", i))
	}
	applyKeys(m, 1, false, keys...)
	for _, count := range []int{1, 10, 100} {
		seen := map[string]bool{}
		maxCursor := uint64(0)
		for cursor, calls := uint64(0), 0; ; calls++ {
			next, ks := m.Scan(cursor, count, nil)
			for _, k := range ks {
				seen[k] = true
			}
			if next >= 1<<63 {
				t.Fatalf("COUNT %d: cursor %d is not below 2^63", count, next)
			}
			if next == 0 {
				break
			}
			if next <= cursor || calls > 100_000 {
				t.Fatalf("COUNT %d: cursor %d after %d does not advance", count, next, cursor)
			}
			cursor, maxCursor = next, max(maxCursor, next)
		}
		if len(seen) != len(keys) {
			t.Errorf("COUNT %d: %d keys of %d", count, len(seen), len(keys))
		}
		if maxCursor < 1<<62 {
			t.Errorf("COUNT %d: the largest cursor %d is below 2^62: the last shards were not reached", count, maxCursor)
		}
	}
}
