package mirror

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingLoader computes "lazy:<i>" keys, counting how many run at once;
// each waits until the test lets it finish (release[i] closed).
type countingLoader struct {
	mu       sync.Mutex
	running  int
	most     int
	release  []chan struct{}
	computed int
}

func (l *countingLoader) Covers(key string) bool { return strings.HasPrefix(key, "lazy:") }

func (l *countingLoader) Load(ctx context.Context, _ WriteApplier, key string) ([]byte, bool, error) {
	l.mu.Lock()
	l.running++
	l.most = max(l.most, l.running)
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.running--
		l.computed++
		l.mu.Unlock()
	}()
	var i int
	fmt.Sscanf(key, "lazy:%d", &i)
	select {
	case <-l.release[i]:
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	return []byte("v:" + key), true, nil
}

// TestGetMultiBoundsWhatItHolds: GetMulti hands values on in key order, and
// reads concurrently only while the reads in flight, each counted at the
// largest value it may return, fit in one such value plus MGetSlack: with
// 1 KiB values up to mgetParallel at once, with 16 MiB values one at a time,
// so an MGET of many large uncached values holds about one of them.
func TestGetMultiBoundsWhatItHolds(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		valueBound int64
		most       int
	}{
		{1 << 10, mgetParallel},
		{16 << 20, 1},
		{MGetSlack / 2, 3}, // 3 x 4 MiB in flight fit in 4 MiB + MGetSlack; a fourth does not
	} {
		t.Run(fmt.Sprint(tt.valueBound), func(t *testing.T) {
			ld := &countingLoader{}
			for range 20 {
				ld.release = append(ld.release, make(chan struct{}))
			}
			m := newWithSource(t, nil, Options{Loader: ld})
			m.Apply(Batch{Xid: 1, Changes: []Change{set("hit", "h", 1)}})
			keys := []string{"hit", "missing"}
			want := []string{"h", "<nil>"}
			for i := range 20 {
				keys = append(keys, fmt.Sprint("lazy:", i))
				want = append(want, fmt.Sprint("v:lazy:", i))
			}
			// Let the loads finish one at a time in key order, each once
			// every read that may start has started.
			go func() {
				for i := range 20 {
					for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
						ld.mu.Lock()
						settled := ld.running == min(tt.most, 20-ld.computed)
						ld.mu.Unlock()
						if settled {
							break
						}
					}
					close(ld.release[i])
				}
			}()
			var got []string
			err := m.GetMulti(context.Background(), keys, tt.valueBound, func(v []byte) {
				if v == nil {
					got = append(got, "<nil>")
				} else {
					got = append(got, string(v))
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("GetMulti handed on %v, want %v", got, want)
			}
			if ld.most != tt.most {
				t.Fatalf("at most %d loads at once with values of up to %d bytes, want %d", ld.most, tt.valueBound, tt.most)
			}
		})
	}
}
