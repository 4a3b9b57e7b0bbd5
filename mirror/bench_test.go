package mirror_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/mirror"
)

// BenchmarkGetHit measures a read answered from the mirror (no query).
func BenchmarkGetHit(b *testing.B) {
	dsn, db := testdb.New(b)
	exec(b, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, convert_to(repeat('v', 100), 'UTF8') FROM generate_series(0, 9999) i`)
	s := start(b, dsn, mirror.Options{})
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, ok, err := s.m.Get(ctx, keys[i%len(keys)]); !ok || err != nil {
				b.Fatalf("miss on %s: %v", keys[i%len(keys)], err)
			}
			i++
		}
	})
	b.StopTimer()
	if st := s.m.Stats(); st.Fetches > 0 {
		b.Logf("%d fetches during the benchmark", st.Fetches)
	}
}

// BenchmarkWarmLoad1M measures a cold start over 1,000,000 rows of 100-byte
// values: time until ready, and the heap the mirror holds (the targets
// BENCHMARKS.md checks: under 5 s, and resident memory under twice the raw
// key and value bytes).
func BenchmarkWarmLoad1M(b *testing.B) {
	if testing.Short() {
		b.Skip("loads a million rows")
	}
	dsn, db := testdb.New(b)
	exec(b, db, `ALTER TABLE cache_entries DISABLE TRIGGER USER`)
	exec(b, db, `INSERT INTO cache_entries(key, value)
		SELECT 'key:' || i, convert_to(substr(repeat(md5(i::text), 4), 1, 100), 'UTF8') FROM generate_series(1, 1000000) i`)
	exec(b, db, `ALTER TABLE cache_entries ENABLE TRIGGER USER`)
	exec(b, db, `VACUUM ANALYZE cache_entries`)
	var raw int64
	if err := db.QueryRow(`SELECT sum(octet_length(key) + octet_length(value)) FROM cache_entries`).Scan(&raw); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		t0 := time.Now()
		s := start(b, dsn, mirror.Options{MaxMemory: 1 << 30})
		took := time.Since(t0)
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		heap := int64(after.HeapInuse) - int64(before.HeapInuse)
		st := s.m.Stats()
		b.ReportMetric(took.Seconds(), "s-to-ready")
		b.ReportMetric(float64(heap)/float64(raw), "heap/raw")
		b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
		b.Logf("%d entries ready in %v; heap %d MiB for %d MiB of keys and values (%.2fx); index %d MiB, values %d MiB, sets dropped %d",
			st.Entries, took.Round(time.Millisecond), heap>>20, raw>>20, float64(heap)/float64(raw), st.IndexBytes>>20, st.ValueBytes>>20, st.SetsDropped)
		b.StopTimer()
		s.stop()
		b.StartTimer()
	}
}
