package unixsock_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
)

// connDo runs a command on one pinned connection and renders the reply.
func connDo(cn *redis.Conn, args ...any) string {
	v, err := cn.Do(context.Background(), args...).Result()
	switch {
	case err == redis.Nil:
		return "nil"
	case err != nil:
		return "error: " + err.Error()
	}
	return render(v)
}

// TestClientNoTouch: under CLIENT NO-TOUCH ON (Redis 7.2) a client's reads
// (GET, MGET, GETRANGE, GETBIT, OBJECT, reads in a script) are not
// accesses: the access-time flush is not told of them. TOUCH still is,
// and OFF restores the default.
func TestClientNoTouch(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	pgm := client(t, sc.socket)
	ctx := context.Background()
	if err := pgm.MSet(ctx, "nt1", "value", "nt2", "v").Err(); err != nil {
		t.Fatal(err)
	}
	cn := pgm.Conn()
	defer cn.Close()
	if got := connDo(cn, "CLIENT", "NO-TOUCH", "ON"); got != `"OK"` {
		t.Fatalf("CLIENT NO-TOUCH ON = %s", got)
	}
	sc.m.TakeAccessed()
	for _, cmd := range [][]any{{"GET", "nt1"}, {"MGET", "nt1", "nt2"}, {"GETRANGE", "nt1", "0", "2"},
		{"GETBIT", "nt1", "3"}, {"BITCOUNT", "nt1"}, {"STRLEN", "nt1"}, {"OBJECT", "ENCODING", "nt1"},
		{"EVAL", "return redis.call('GET', KEYS[1])", "1", "nt2"}} {
		if got := connDo(cn, cmd...); len(got) > 6 && got[:6] == "error:" {
			t.Fatalf("%q: %s", cmd, got)
		}
	}
	if got := sc.m.TakeAccessed(); len(got) != 0 {
		t.Fatalf("reads under NO-TOUCH marked %q accessed", got)
	}
	if got := connDo(cn, "TOUCH", "nt1"); got != "int64(1)" {
		t.Fatalf("TOUCH = %s", got)
	}
	if got := sc.m.TakeAccessed(); !slices.Equal(got, []string{"nt1"}) {
		t.Fatalf("TOUCH under NO-TOUCH: accessed %q, want [nt1]", got)
	}
	if got := connDo(cn, "CLIENT", "NO-TOUCH", "OFF"); got != `"OK"` {
		t.Fatalf("CLIENT NO-TOUCH OFF = %s", got)
	}
	connDo(cn, "GET", "nt2")
	if got := sc.m.TakeAccessed(); !slices.Equal(got, []string{"nt2"}) {
		t.Fatalf("GET after NO-TOUCH OFF: accessed %q, want [nt2]", got)
	}
}

// TestObjectIdleTime: OBJECT IDLETIME is the seconds since this sidecar
// last read the key: it grows while the only reads come from a NO-TOUCH
// client (and OBJECT itself, which is no access), and TOUCH or a plain GET
// set it back to 0.
func TestObjectIdleTime(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	pgm := client(t, sc.socket)
	ctx := context.Background()
	if err := pgm.Set(ctx, "idle", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	idle := func() int64 {
		n, err := pgm.ObjectIdleTime(ctx, "idle").Result()
		if err != nil {
			t.Fatalf("OBJECT IDLETIME: %v", err)
		}
		return int64(n / time.Second)
	}
	if n := idle(); n > 1 {
		t.Fatalf("OBJECT IDLETIME just after SET = %d, want 0 or 1", n)
	}
	cn := pgm.Conn()
	defer cn.Close()
	connDo(cn, "CLIENT", "NO-TOUCH", "ON")
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		connDo(cn, "GET", "idle")
		n := idle()
		return n >= 2, fmt.Sprintf("idle time %d under NO-TOUCH reads", n)
	})
	connDo(cn, "TOUCH", "idle")
	if n := idle(); n > 1 {
		t.Fatalf("OBJECT IDLETIME after TOUCH = %d, want 0 or 1", n)
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		n := idle()
		return n >= 2, fmt.Sprintf("idle time %d", n)
	})
	pgm.Get(ctx, "idle")
	if n := idle(); n > 1 {
		t.Fatalf("OBJECT IDLETIME after GET = %d, want 0 or 1", n)
	}
	if got := do(pgm, "OBJECT", "IDLETIME", "missing"); got != "nil" {
		t.Errorf("OBJECT IDLETIME of a missing key = %s, want nil", got)
	}
}
