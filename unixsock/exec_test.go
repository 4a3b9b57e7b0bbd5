package unixsock_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/pgstore"
	"pgmirror/unixsock"
)

// replies renders a block's replies (values, or errors) for comparison.
func replies(cmds []redis.Cmder) string {
	out := ""
	for _, c := range cmds {
		if err := c.Err(); err != nil && err != redis.Nil {
			out += fmt.Sprintf("[err %v]", err)
			continue
		}
		switch c := c.(type) {
		case *redis.StringCmd:
			out += fmt.Sprintf("[%q]", c.Val())
		case *redis.SliceCmd:
			out += fmt.Sprintf("%q", c.Val())
		case *redis.StatusCmd:
			out += fmt.Sprintf("[%s]", c.Val())
		default:
			out += fmt.Sprintf("[%v]", c)
		}
	}
	return out
}

// The reads of a block that writes run the loaders of keys the mirror
// lacks, as GET and MGET outside a block do.
func TestBlockReadsRunLoaders(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	if _, err := db.Exec(`INSERT INTO cache_loaders(prefix, query) VALUES ('l:', 'SELECT ''v:'' || $1::text')`); err != nil {
		t.Fatal(err)
	}
	sc := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true})
	ctx := context.Background()
	cmds, err := sc.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Get(ctx, "l:a")
		p.Set(ctx, "other", "1", 0)
		p.MGet(ctx, "l:b", "l:a", "none")
		return nil
	})
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	if got, want := replies(cmds), `["v:a"][OK]["v:b" "v:a" <nil>]`; got != want {
		t.Fatalf("block replies %s, want %s", got, want)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM cache_entries WHERE key IN ('l:a', 'l:b')`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows the loaders stored: %d %v, want 2", n, err)
	}
}

// spoiledMirror reports a change applied during every run of a block of
// reads, as a mirror that applies changes without pause would.
type spoiledMirror struct {
	unixsock.Mirror
	seq atomic.Uint64
}

func (m *spoiledMirror) ViewSeq() uint64 { return m.seq.Add(2) }

// A block of reads that changes keep spoiling on the mirror is read in
// Postgres, on one state, and answers the same.
func TestSpoiledReadBlockReadsPostgres(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	var w *pgstore.Writer
	sc := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true, Server: func(s *unixsock.Server) {
		w = s.Writer.(*pgstore.Writer)
		s.Mirror = &spoiledMirror{Mirror: s.Mirror}
	}})
	ctx := context.Background()
	if err := sc.Client.MSet(ctx, "a", "1", "b", "2").Err(); err != nil {
		t.Fatal(err)
	}
	before := w.Stats().Batches
	cmds, err := sc.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Get(ctx, "a")
		p.MGet(ctx, "b", "c")
		p.Ping(ctx)
		return nil
	})
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	if got, want := replies(cmds), `["1"]["2" <nil>][PONG]`; got != want {
		t.Fatalf("block replies %s, want %s", got, want)
	}
	if after := w.Stats().Batches; after != before+1 {
		t.Fatalf("batches %d -> %d: the block was not read in Postgres", before, after)
	}
}
