package mirror

import (
	"bytes"
	"context"
	"slices"
	"testing"
)

// TestGetMultiNow: the event loop's MGET answers from what the mirror
// holds, counting hits and misses; when a value must be fetched again, or
// the values pass maxBytes, it is not done and counts nothing (the caller
// asks GetMulti, which counts them once).
func TestGetMultiNow(t *testing.T) {
	t.Parallel()
	src := &rowSource{rows: map[string]Row{}}
	m := newWithSource(t, src, Options{MaxMemory: 64 << 20})
	ctx := context.Background()
	small, big := valueOf(1, 10), valueOf(2, DefaultInlineLimit+1)
	src.apply(m, 1, "small", small)
	src.apply(m, 2, "big", big)
	if got, ok, _ := m.Get(ctx, "big"); !ok || !bytes.Equal(got, big) {
		t.Fatal("large value not served")
	}
	st := m.Stats()

	vs, done, err := m.GetMultiNow(ctx, []string{"small", "nokey", "big"}, 1<<20, nil)
	if err != nil || !done || len(vs) != 3 || !bytes.Equal(vs[0], small) || vs[1] != nil || !bytes.Equal(vs[2], big) {
		t.Fatalf("held values: %q, done %v, %v", vs, done, err)
	}
	after := m.Stats()
	if after.Hits-st.Hits != 2 || after.Misses-st.Misses != 1 {
		t.Fatalf("counted %d hits and %d misses; want 2 and 1", after.Hits-st.Hits, after.Misses-st.Misses)
	}

	clear(vs) // as the caller does after answering
	// Values past maxBytes first, while big is held; then big evicted.
	for _, c := range []struct {
		name     string
		evict    bool
		maxBytes int
	}{{"values past maxBytes", false, len(small) + len(big) - 1}, {"a value to fetch again", true, 1 << 20}} {
		if c.evict {
			m.EvictValue("big")
		}
		st := m.Stats()
		vs, done, err := m.GetMultiNow(ctx, []string{"small", "big"}, c.maxBytes, vs[:0])
		if err != nil || done || len(vs) != 0 {
			t.Fatalf("%s: %q, done %v, %v; want not done and nothing", c.name, vs, done, err)
		}
		if slices.ContainsFunc(vs[:cap(vs)], func(v []byte) bool { return v != nil }) {
			t.Fatalf("%s: the scratch still holds values: %q", c.name, vs[:cap(vs)])
		}
		if after := m.Stats(); after.Hits != st.Hits || after.Misses != st.Misses || src.fetches.Load() != 0 {
			t.Fatalf("%s: counted %d hits, %d misses, %d fetches; want none", c.name,
				after.Hits-st.Hits, after.Misses-st.Misses, src.fetches.Load())
		}
	}
}
