package unixsock

import (
	"runtime"
	"strconv"
	"testing"
)

// TestTrackingTableMemory: what one tracked key costs beyond its name
// (reported), bounded
// loosely so that a change that doubles it is seen.
func TestTrackingTableMemory(t *testing.T) {
	// Not parallel: it measures the heap of the whole test process.
	s := &Server{Mirror: fakeMirror{}, TrackingTableMaxKeys: 1 << 30}
	c := &client{s: s, id: 1}
	tc := s.trk.enable(c, trackOpts{})
	const n = 200000
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "user:profile:" + strconv.Itoa(i) // 17-19 bytes, as a typical key
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range keys {
		s.trk.remember(s, tc, keys[i:i+1], false)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per tracked key beyond its name (no expiry)", per)
	if s.trk.stats().Keys != n {
		t.Fatalf("tracked %d keys, want %d", s.trk.stats().Keys, n)
	}
	if per > 400 {
		t.Fatalf("%.0f bytes per tracked key, want at most 400", per)
	}
	runtime.KeepAlive(keys)
}
