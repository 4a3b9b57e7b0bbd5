package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// rowSource is a Source over an in-memory table that counts the value
// fetches the mirror makes.
type rowSource struct {
	mu      sync.Mutex
	rows    map[string]Row
	fetches atomic.Int64
}

func (s *rowSource) put(r Row) {
	s.mu.Lock()
	s.rows[r.Key] = r
	s.mu.Unlock()
}

func (s *rowSource) Snapshot(context.Context, func(Visibility) error, func(Row) error) error {
	return errors.New("not in this test")
}

func (s *rowSource) RangeSnapshot(context.Context, int, func(Visibility) error, func([]BucketSum) ([]int, error), func(Row) error) error {
	return errors.New("not in this test")
}

func (s *rowSource) Fetch(_ context.Context, keys []string) ([]Row, error) {
	s.fetches.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Row
	for _, k := range keys {
		if r, ok := s.rows[k]; ok {
			r.Value = bytes.Clone(r.Value)
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *rowSource) Sentinel(context.Context, string) error      { return errors.New("not in this test") }
func (s *rowSource) Now(context.Context) (int64, error)          { return 0, errors.New("not in this test") }
func (s *rowSource) EstimateRows(context.Context) (int64, error) { return -1, nil }
func (s *rowSource) NextXid(context.Context) (uint64, error) {
	return 0, errors.New("not in this test")
}
func (s *rowSource) Keyring(context.Context) (Keyring, error) { return Keyring{}, nil }
func (s *rowSource) apply(m *Mirror, xid uint64, key string, v []byte) { // commits and notifies
	s.put(Row{Key: key, Value: v, Version: int64(xid), Expires: NoExpiry})
	m.Apply(Batch{Xid: xid, Changes: []Change{{Op: OpSet, Key: key, Value: v, Version: int64(xid), Expires: NoExpiry}}})
}

// newWithSource returns a loaded mirror over src, without background work.
func newWithSource(t *testing.T, src Source, opts Options) *Mirror {
	t.Helper()
	m, err := New(src, opts)
	if err != nil {
		t.Fatal(err)
	}
	m.loaded, m.connected = true, true
	m.readyFlag.Store(true)
	t.Cleanup(func() { m.values.Close() })
	return m
}

func valueOf(i, n int) []byte {
	v := bytes.Repeat([]byte{byte('a' + i%26)}, n)
	copy(v, fmt.Sprint(i, ":"))
	return v
}

// TestSmallValuesReadableOnApply: a value up to InlineLimit is in the index
// when Apply returns: a read right after never queries Postgres, whatever
// the value cache's buffers and admission do, and the value cache holds
// none of them. A larger value goes to the value cache, which can evict it
// (and a read then fetches it).
func TestSmallValuesReadableOnApply(t *testing.T) {
	t.Parallel()
	src := &rowSource{rows: map[string]Row{}}
	m := newWithSource(t, src, Options{MaxMemory: 64 << 20})
	ctx := context.Background()
	for i := range 20000 {
		key := fmt.Sprint("k", i%500) // new keys, then new states of them
		v := valueOf(i, 1+i%DefaultInlineLimit)
		src.apply(m, uint64(i+1), key, v)
		got, ok, err := m.Get(ctx, key)
		if err != nil || !ok || !bytes.Equal(got, v) {
			t.Fatalf("%s after its change: %q (found %v, %v)", key, got, ok, err)
		}
	}
	st := m.Stats()
	if n := src.fetches.Load(); n != 0 || st.Fetches != 0 {
		t.Fatalf("%d fetches (stats %d) for reads right after changes of small values, want 0", n, st.Fetches)
	}
	if st.ValueBytes != 0 || st.InlineBytes == 0 {
		t.Fatalf("value cache holds %d bytes, index %d inline: small values belong in the index", st.ValueBytes, st.InlineBytes)
	}
	m.EvictValue("k1") // nothing to evict: no fetch follows
	if _, ok, _ := m.Get(ctx, "k1"); !ok || src.fetches.Load() != 0 {
		t.Fatalf("a small value was fetched after EvictValue")
	}

	big := valueOf(7, DefaultInlineLimit+1)
	src.apply(m, 1000000, "big", big)
	if got, ok, _ := m.Get(ctx, "big"); !ok || !bytes.Equal(got, big) {
		t.Fatal("large value not served")
	}
	st = m.Stats()
	if st.ValueBytes == 0 || src.fetches.Load() != 0 {
		t.Fatalf("large value: value cache %d bytes, %d fetches; want it cached, no fetch", st.ValueBytes, src.fetches.Load())
	}
	m.EvictValue("big")
	if got, ok, _ := m.Get(ctx, "big"); !ok || !bytes.Equal(got, big) || src.fetches.Load() != 1 {
		t.Fatalf("evicted large value: found %v, %d fetches; want it fetched once", ok, src.fetches.Load())
	}
}

// TestInlineWithinBudget: when the values outgrow the index's part of
// MaxMemory, new small values go to the value cache (which evicts) instead
// of the index; every value stays readable, and the accounting matches what
// the index holds.
func TestInlineWithinBudget(t *testing.T) {
	t.Parallel()
	src := &rowSource{rows: map[string]Row{}}
	const budget = 4 << 20
	m := newWithSource(t, src, Options{MaxMemory: budget})
	const n, size = 40000, 200 // 8 MB of values
	for i := range n {
		src.apply(m, uint64(i+1), fmt.Sprint("key:", i), valueOf(i, size))
	}
	var inlineAlloc, inlineBytes, spilled, entryBytes int64
	for i := range m.ix.shards {
		m.ix.shards[i].t.all(func(e *entry) bool {
			entryBytes += e.allocBytes()
			if e.inline() {
				inlineAlloc += e.allocBytes()
				inlineBytes += int64(e.size)
			} else {
				spilled++
			}
			return true
		})
	}
	st := m.Stats()
	t.Logf("%d in the value cache (%d moved there); index %d bytes (%d inline), value cache %d of %d",
		spilled, st.InlineEvicted, st.IndexBytes, st.InlineBytes, st.ValueBytes, st.ValueBudget)
	if spilled == 0 || inlineBytes == 0 {
		t.Fatalf("%d values inline, %d spilled: want both", n-spilled, spilled)
	}
	// Keys must stay, values may go: the index keeps to its share of the
	// budget (within a table's growth) by moving values to the value cache.
	if st.IndexBytes > m.inlineBudget+m.ix.tableBytes.Load()/2 || st.InlineEvicted == 0 {
		t.Fatalf("index %d bytes (%d inline entries' bytes, %d values moved out), over its share %d",
			st.IndexBytes, inlineAlloc, st.InlineEvicted, m.inlineBudget)
	}
	if st.InlineBytes != inlineBytes || st.IndexBytes != entryBytes+m.ix.tableBytes.Load() {
		t.Fatalf("stats: inline %d index %d; counted: inline %d entries %d + tables %d",
			st.InlineBytes, st.IndexBytes, inlineBytes, entryBytes, m.ix.tableBytes.Load())
	}
	if st.ValueBudget != max(budget-st.IndexBytes, minValueBudget) || st.ValueBytes > st.ValueBudget+valueCost(size) {
		t.Fatalf("value cache holds %d of a budget of %d; index %d", st.ValueBytes, st.ValueBudget, st.IndexBytes)
	}
	ctx := context.Background()
	for i := range n {
		key := fmt.Sprint("key:", i)
		if got, ok, err := m.Get(ctx, key); err != nil || !ok || !bytes.Equal(got, valueOf(i, size)) {
			t.Fatalf("%s: found %v, %v", key, ok, err)
		}
	}
	if src.fetches.Load() == 0 {
		t.Fatal("no value was fetched: the value cache held 8 MB in 1 MiB?")
	}
	// Deleting keys makes room: a new state of a spilled key goes inline.
	for i := range n / 2 {
		m.Apply(Batch{Xid: uint64(n + i + 1), Changes: []Change{{Op: OpDelete, Key: fmt.Sprint("key:", i), Version: int64(n + i + 1)}}})
	}
	last := fmt.Sprint("key:", n-1)
	src.apply(m, 10*n, last, valueOf(1, size))
	sh, h := m.ix.shard(last)
	if e := sh.get(last, h); e == nil || !e.inline() {
		t.Fatal("with room again, a new small value did not go into the index")
	}
}

// TestIndexAccounting: IndexBytes is what the index really occupies on the
// heap, within a few percent.
func TestIndexAccounting(t *testing.T) {
	// Not parallel: it measures the heap of the whole test process.
	m := newWithSource(t, &rowSource{rows: map[string]Row{}}, Options{MaxMemory: 1 << 30})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n = 200000
	changes := make([]Change, 0, 100)
	for i := range n {
		v := valueOf(i, 100)
		changes = append(changes, Change{Op: OpSet, Key: fmt.Sprintf("key:%012d", i), Value: v, Version: int64(i), Expires: NoExpiry})
		if len(changes) == cap(changes) {
			m.Apply(Batch{Xid: uint64(i), Changes: changes})
			changes = changes[:0]
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	st := m.Stats()
	t.Logf("%d keys: heap grew %d bytes, index accounts %d (%.1f bytes a key)", n, heap, st.IndexBytes, float64(st.IndexBytes)/n)
	if d := float64(heap-st.IndexBytes) / float64(heap); d > 0.05 || d < -0.05 {
		t.Fatalf("index accounts %d bytes, the heap grew %d (%.1f%% off)", st.IndexBytes, heap, 100*d)
	}
	runtime.KeepAlive(m)
}

// TestEchoLeavesNoTrace: the side table of awaited echoes empties once they
// arrive, and an inline entry carries an awaited echo like any other.
func TestEchoLeavesNoTrace(t *testing.T) {
	m := newLoaded(t)
	for i := range 100 {
		key := fmt.Sprint("k", i%10)
		tk := m.BeginWrite()
		xid := uint64(2*i + 1)
		c := []Change{set(key, fmt.Sprint("mine", i), int64(xid))}
		if i%3 == 0 {
			c = []Change{{Op: OpDelete, Key: key, Version: int64(xid)}}
		}
		m.ApplyWrite(tk, xid, c)
		m.Apply(Batch{Xid: xid + 1000, Changes: []Change{set(key, "older", 1)}}) // committed before ours: skipped
		want := "<absent>"
		if i%3 != 0 {
			want = fmt.Sprint("mine", i)
		}
		if got := m.state(t, key); got != want {
			t.Fatalf("%s before the echo: %q, want %q", key, got, want)
		}
		m.Apply(Batch{Xid: xid, Changes: c}) // the echo
	}
	for i := range m.ix.shards {
		if sh := &m.ix.shards[i]; len(sh.echo) != 0 {
			t.Fatalf("shard %d still awaits %d echoes", i, len(sh.echo))
		}
	}
	if st := m.Stats(); st.Tombstones != 0 {
		t.Fatalf("%d tombstones left", st.Tombstones)
	}
}

// BenchmarkApply measures applying one notification of one change of a
// 100-byte value (a new state of one of 1,000 keys), as the listener does,
// until readers are told.
func BenchmarkApply(b *testing.B) {
	m, err := New(nil, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.values.Close()
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("key:%012d", i)
	}
	v := bytes.Repeat([]byte("v"), 100)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		m.Apply(Batch{Xid: uint64(i), Changes: []Change{{Op: OpSet, Key: keys[i%len(keys)], Value: v, Version: int64(i), Expires: NoExpiry}}})
	}
}
