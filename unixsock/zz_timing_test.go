package unixsock_test

import (
	"context"
	"testing"
	"time"

	"pgmirror/internal/testdb"
)

func TestTimingBig(t *testing.T) {
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	ctx := context.Background()
	c := client(t, sc.socket)
	big := make([]byte, 10<<20)
	for i := 0; i < 3; i++ {
		start := time.Now()
		if err := c.Set(ctx, "big", big, 0).Err(); err != nil {
			t.Fatal(err)
		}
		mid := time.Now()
		if _, err := c.Get(ctx, "big").Bytes(); err != nil {
			t.Fatal(err)
		}
		t.Logf("SET %v GET %v", mid.Sub(start), time.Since(mid))
	}
}
