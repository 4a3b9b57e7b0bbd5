package pgstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"pgmirror/internal/testdb"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

// BenchmarkWriteSet: one SET per iteration, from 1 or 50 concurrent callers
// (group commit); reports the commands per statement.
func BenchmarkWriteSet(b *testing.B) {
	for _, clients := range []int{1, 50} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			_, db := testdb.New(b)
			w := pgstore.NewWriter(db, newFakeApplier(), pgstore.WriterOptions{})
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
		})
	}
}
