package pgstore_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

// BenchmarkWriteSet: one SET per iteration, from 1 or 50 concurrent callers
// (group commit), with the batches on the Writer's own pool (one round trip
// each) or sharing the sidecar's (a ping, then two round trips); reports
// the commands per statement and the round trips per batch. With
// commit=async (synchronous_commit off) a batch does not wait for the WAL
// flush, which leaves the round trips a larger share of its latency.
func BenchmarkWriteSet(b *testing.B) {
	for _, clients := range []int{1, 50} {
		for _, commit := range []string{"sync", "async"} {
			for _, pool := range []string{"own", "shared"} {
				name := fmt.Sprintf("clients=%d/commit=%s/pool=%s", clients, commit, pool)
				b.Run(name, func(b *testing.B) { benchWriteSet(b, clients, commit == "async", pool == "own") })
			}
		}
	}
}

func benchWriteSet(b *testing.B, clients int, async, own bool) {
	dsn, db := testdb.New(b)
	if async {
		dsn += " synchronous_commit=off"
		db = testdb.Open(b, dsn)
	}
	opts := pgstore.WriterOptions{}
	if own {
		opts.DSN = dsn
	}
	w := pgstore.NewWriter(db, newFakeApplier(), opts)
	if err := w.Open(); err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var n atomic.Int64
	b.SetParallelism(clients)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			op := mirror.WriteOp{Kind: mirror.WriteSet, Keys: []string{fmt.Sprintf("k%d", i%1000)}, Values: [][]byte{[]byte("value-of-some-bytes")}}
			if res, err := w.Write(context.Background(), op); err != nil || res.Err != nil {
				b.Fatal(err, res.Err)
			}
		}
	})
	st := w.Stats()
	b.ReportMetric(float64(st.Ops)/float64(st.Batches), "ops/batch")
	if own {
		b.ReportMetric(float64(st.RoundTrips)/float64(st.Batches), "trips/batch")
	}
}

// BenchmarkWriteLatency: one SET at a time, alternately through a Writer on
// its own pool and one sharing the sidecar's, so that both see the same
// load on a busy machine; reports each one's median and 90th percentile
// latency of a write (one batch).
func BenchmarkWriteLatency(b *testing.B) {
	for _, commit := range []string{"sync", "async"} {
		b.Run("commit="+commit, func(b *testing.B) {
			dsn, db := testdb.New(b)
			if commit == "async" {
				dsn += " synchronous_commit=off"
				db = testdb.Open(b, dsn)
			}
			writers := []*pgstore.Writer{
				pgstore.NewWriter(db, newFakeApplier(), pgstore.WriterOptions{DSN: dsn}),
				pgstore.NewWriter(db, newFakeApplier(), pgstore.WriterOptions{}),
			}
			took := make([][]time.Duration, len(writers))
			for _, w := range writers {
				if err := w.Open(); err != nil {
					b.Fatal(err)
				}
				defer w.Close()
			}
			b.ResetTimer()
			for i := range b.N {
				for j, w := range writers {
					op := mirror.WriteOp{Kind: mirror.WriteSet, Keys: []string{fmt.Sprintf("k%d-%d", j, i%1000)}, Values: [][]byte{[]byte("value-of-some-bytes")}}
					start := time.Now()
					if res, err := w.Write(context.Background(), op); err != nil || res.Err != nil {
						b.Fatal(err, res.Err)
					}
					took[j] = append(took[j], time.Since(start))
				}
			}
			for j, name := range []string{"own", "shared"} {
				slices.Sort(took[j])
				n := len(took[j])
				b.ReportMetric(float64(took[j][n/2].Microseconds()), name+"-p50-µs")
				b.ReportMetric(float64(took[j][n*9/10].Microseconds()), name+"-p90-µs")
			}
		})
	}
}
