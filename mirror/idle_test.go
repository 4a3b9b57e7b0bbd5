package mirror

import (
	"context"
	"slices"
	"testing"
)

// TestStampAgeThroughSweeps: an access stamp swept every ageInterval
// decodes to the true age, to the second while fine, within a coarse unit
// over it after, never going back, and saturates instead of wrapping.
func TestStampAgeThroughSweeps(t *testing.T) {
	for _, at := range []int64{1_765_000_000, 1_765_000_037, 1_765_001_999, 0} {
		stamp := fineStamp(at)
		sweep := int64(ageInterval.Seconds())
		last := int64(-1)
		for now := at; now < at+200_000; now++ {
			if (now-at)%sweep == sweep-1 {
				stamp = agedStamp(stamp, now)
			}
			got, age := stampAge(stamp, now), now-at
			switch {
			case got < last && age < coarseLimit<<coarseShift:
				t.Fatalf("access at %d: age %d at %d after %d", at, got, now, last)
			case age < fineLimit && got != age:
				t.Fatalf("access at %d: age %d at %d, want %d", at, got, now, age)
			case age < coarseLimit<<coarseShift && (got < age || got >= age+1<<coarseShift):
				t.Fatalf("access at %d: age %d at %d, want about %d", at, got, now, age)
			case age >= coarseLimit<<coarseShift && got < coarseLimit<<coarseShift-2<<coarseShift:
				t.Fatalf("access at %d: age %d at %d, want it saturated near %d", at, got, now, coarseLimit<<coarseShift)
			}
			last = got
		}
	}
}

// TestWithoutTouch: reads under WithoutTouch are not accesses (neither the
// access-time flush's mark nor the idle time); Touch and plain reads are.
func TestWithoutTouch(t *testing.T) {
	src := &rowSource{rows: map[string]Row{}}
	m := newWithSource(t, src, Options{MaxMemory: 64 << 20})
	ctx, quiet := context.Background(), WithoutTouch(context.Background())
	src.apply(m, 1, "k", []byte("v"))
	src.apply(m, 2, "other", []byte("v"))
	age := func(secs int64) { // sets k's last access secs ago
		sh, h := m.ix.shard("k")
		e := sh.get("k", h)
		old := e.meta.Load()
		e.meta.Store(old&^stampMask | fineStamp(m.clock.dbNow()/1e6-secs))
	}
	idle := func() int64 {
		n, found, err := m.IdleTime("k")
		if err != nil || !found {
			t.Fatalf("IdleTime: %v, %v", found, err)
		}
		return n
	}
	m.TakeAccessed()
	age(100)
	if _, _, err := m.Get(quiet, "k"); err != nil {
		t.Fatal(err)
	}
	if err := m.GetMulti(quiet, []string{"k", "other"}, 1<<20, func([]byte) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.StrLen(quiet, "k"); err != nil {
		t.Fatal(err)
	}
	if got := m.TakeAccessed(); len(got) != 0 {
		t.Fatalf("reads without touch marked %q accessed", got)
	}
	if n := idle(); n < 100 || n > 101 {
		t.Fatalf("idle %d after reads without touch, want 100", n)
	}
	if _, err := m.Touch("k"); err != nil {
		t.Fatal(err)
	}
	if n := idle(); n != 0 {
		t.Fatalf("idle %d after Touch, want 0", n)
	}
	age(50)
	if err := m.GetMulti(ctx, []string{"k"}, 1<<20, func([]byte) {}); err != nil {
		t.Fatal(err)
	}
	if n := idle(); n != 0 {
		t.Fatalf("idle %d after GetMulti, want 0", n)
	}
	age(50)
	if _, _, err := m.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if n := idle(); n != 0 {
		t.Fatalf("idle %d after Get, want 0", n)
	}
	if got := m.TakeAccessed(); !slices.Equal(got, []string{"k"}) {
		t.Fatalf("accessed %q, want [k]", got)
	}
	if _, err := m.StrLen(ctx, "k"); err != nil { // as in Redis, STRLEN is an access
		t.Fatal(err)
	}
	if got := m.TakeAccessed(); !slices.Equal(got, []string{"k"}) {
		t.Fatalf("STRLEN: accessed %q, want [k]", got)
	}
	age(70)
	src.apply(m, 3, "k", []byte("w")) // a new state is an access, as SET in Redis
	if n := idle(); n != 0 {
		t.Fatalf("idle %d after a new state, want 0", n)
	}
	if _, found, err := m.IdleTime("missing"); found || err != nil {
		t.Fatalf("IdleTime(missing): found %v, %v", found, err)
	}
}
