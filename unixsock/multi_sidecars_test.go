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
)

// blockValue is block n's 4 KB value: its number, then padding.
func blockValue(n, i int) string {
	head := fmt.Sprintf("%08d:%d:", n, i)
	return head + strings.Repeat("x", 4096-len(head))
}

// TestExecAllOrNothingEverywhere: during 1,000 MULTI/EXEC blocks of 10 SETs
// of 4 KB values (each block's notification spans several payloads),
// neither an SQL reader of the table nor a client polling MGET of the 10
// keys on a second sidecar, nor one sending MULTI, 10 GETs, EXEC there (a
// block of reads, answered from the mirror), ever sees part of a block.
func TestExecAllOrNothingEverywhere(t *testing.T) {
	t.Parallel()
	blocks := 1000
	if testing.Short() {
		blocks = 100
	}
	dsn, db := testdb.New(t)
	a, b := startSidecar(t, dsn, config{}), startSidecar(t, dsn, config{})
	ctx := context.Background()
	keys := make([]string, 10)
	for i := range keys {
		keys[i] = fmt.Sprintf("blk:%d", i)
	}
	var done atomic.Bool
	var wg sync.WaitGroup
	var sqlReads, mgetReads, multiReads atomic.Int64
	fail := make(chan string, 3)
	check := func(who string, heads []string) bool {
		for _, h := range heads {
			if h != heads[0] {
				fail <- fmt.Sprintf("%s saw part of a block: %q", who, heads)
				return false
			}
		}
		return true
	}
	wg.Add(3)
	go func() { // MULTI, GET of each key, EXEC on the second sidecar
		defer wg.Done()
		rb := client(t, b.socket)
		for !done.Load() {
			cmds, err := rb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range keys {
					p.Get(ctx, k)
				}
				return nil
			})
			if err != nil && err != redis.Nil {
				fail <- err.Error()
				return
			}
			heads := make([]string, len(cmds))
			for i, c := range cmds {
				heads[i] = "nil"
				if s, err := c.(*redis.StringCmd).Result(); err == nil {
					heads[i] = s[:8]
				}
			}
			if !check("MULTI/GET", heads) {
				return
			}
			multiReads.Add(1)
		}
	}()
	go func() { // the SQL reader
		defer wg.Done()
		for !done.Load() {
			rows, err := db.Query(`SELECT convert_from(substr(value, 1, 8), 'UTF8') FROM cache_entries WHERE key LIKE 'blk:%'`)
			if err != nil {
				fail <- err.Error()
				return
			}
			var heads []string
			for rows.Next() {
				var h string
				_ = rows.Scan(&h)
				heads = append(heads, h)
			}
			rows.Close()
			if len(heads) != 0 && len(heads) != 10 || !check("SQL", heads) {
				if len(heads) != 10 {
					fail <- fmt.Sprintf("SQL saw %d of the 10 keys", len(heads))
				}
				return
			}
			sqlReads.Add(1)
		}
	}()
	go func() { // MGET on the second sidecar
		defer wg.Done()
		rb := client(t, b.socket)
		for !done.Load() {
			vs, err := rb.MGet(ctx, keys...).Result()
			if err != nil {
				fail <- err.Error()
				return
			}
			heads := make([]string, len(vs))
			for i, v := range vs {
				if s, ok := v.(string); ok {
					heads[i] = s[:8]
				} else {
					heads[i] = "nil"
				}
			}
			if !check("MGET", heads) {
				return
			}
			mgetReads.Add(1)
		}
	}()
	wa := client(t, a.socket)
	for n := 1; n <= blocks; n++ {
		_, err := wa.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				p.Set(ctx, k, blockValue(n, i), 0)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("block %d: %v", n, err)
		}
		select {
		case msg := <-fail:
			done.Store(true)
			wg.Wait()
			t.Fatalf("after block %d: %s", n, msg)
		default:
		}
	}
	// The second sidecar converges on the last block.
	want := fmt.Sprintf("%08d", blocks)
	rb := client(t, b.socket)
	testutil.Eventually(t, 30*time.Second, func() (bool, string) {
		v, err := rb.Get(ctx, keys[9]).Result()
		if len(v) > 8 {
			v = v[:8]
		}
		return err == nil && v == want, fmt.Sprintf("the second sidecar shows %q %v, want block %s", v, err, want)
	})
	done.Store(true)
	wg.Wait()
	select {
	case msg := <-fail:
		t.Fatal(msg)
	default:
	}
	t.Logf("%d blocks; %d SQL reads, %d MGETs, %d read blocks, none saw part of a block", blocks, sqlReads.Load(),
		mgetReads.Load(), multiReads.Load())
}
