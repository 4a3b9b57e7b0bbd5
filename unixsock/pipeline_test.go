package unixsock_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
)

// TestLargePipelines: the output bound (1 MiB waiting per client) does not
// get in the way of pipelines real clients send, which write every command
// before reading a reply: thousands of small replies adding up to more
// than the bound, and large values, each more than the bound.
func TestLargePipelines(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	ctx := context.Background()
	c := client(t, sc.socket)
	small := bytes.Repeat([]byte("s"), 200)
	big := bytes.Repeat([]byte("B"), 1<<20)
	if err := c.MSet(ctx, "small", small, "big", big).Err(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key   string
		n     int
		value []byte
	}{{"small", 5000, small}, {"big", 20, big}} {
		cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := 0; i < tc.n; i++ {
				p.Get(ctx, tc.key)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("pipeline of %d GET %s: %v", tc.n, tc.key, err)
		}
		for i, cmd := range cmds {
			if v, err := cmd.(*redis.StringCmd).Bytes(); err != nil || !bytes.Equal(v, tc.value) {
				t.Fatalf("reply %d of GET %s: %d bytes, %v", i, tc.key, len(v), err)
			}
		}
	}
	if st := sc.srv.Stats(); st.Commands < 5020 {
		t.Fatal(fmt.Sprint("commands counted: ", st.Commands))
	}
}
