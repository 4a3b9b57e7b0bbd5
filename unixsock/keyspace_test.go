package unixsock_test

import (
	"context"
	"fmt"
	"testing"

	"pgmirror/internal/testdb"
	"pgmirror/unixsock"
)

// objectCases compare OBJECT with Redis 7.0 (its default policy, no LFU).
var objectCases = map[string][]step{
	"object": {s("OBJECT", "ENCODING", "k"), s("OBJECT", "FREQ", "k"), s("OBJECT", "IDLETIME", "k"),
		s("OBJECT", "REFCOUNT", "k"), s("SET", "k", "123"), s("OBJECT", "ENCODING", "k"), s("OBJECT", "REFCOUNT", "k"),
		s("SET", "k", "12345"), s("OBJECT", "ENCODING", "k"), s("OBJECT", "REFCOUNT", "k"), s("SET", "k", "-0"),
		s("OBJECT", "ENCODING", "k"), s("SET", "k", "01"), s("OBJECT", "ENCODING", "k"), s("SET", "k", "-9223372036854775808"),
		s("OBJECT", "ENCODING", "k"), s("SET", "k", "9223372036854775808"), s("OBJECT", "ENCODING", "k"),
		s("SET", "k", "an embedded string of forty-four bytes, ok!!"), s("OBJECT", "ENCODING", "k"),
		s("SET", "k", "a raw string of forty-five bytes, one too many"), s("OBJECT", "ENCODING", "k"),
		s("OBJECT", "FREQ", "k"), s("OBJECT", "BOGUS", "k"), s("OBJECT", "ENCODING"), s("OBJECT", "ENCODING", "k", "x")},
}

func TestObjectMatchesRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	pgm := client(t, sc.socket)
	compareCases(t, pgm, client(t, redisSock), objectCases)
	// IDLETIME of a key just set: 0 in both (TestObjectIdleTime: later).
	pgm.Set(context.Background(), "idle", "v", 0)
	if got := do(pgm, "OBJECT", "IDLETIME", "idle"); got != "int64(0)" && got != "int64(1)" {
		t.Errorf("OBJECT IDLETIME = %s, want 0", got)
	}
}

// TestRandomKey: nil on an empty keyspace (as Redis), a key of the
// client's namespace otherwise, never one outside it; over many calls,
// several different keys.
func TestRandomKey(t *testing.T) {
	t.Parallel()
	red := client(t, startRedis(t))
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.Namespace = "ns:" }})
	pgm := client(t, sc.socket)
	ctx := context.Background()
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('other:1', 'v'), ('other:2', 'v')`)
	if want, got := do(red, "RANDOMKEY"), do(pgm, "RANDOMKEY"); want != "nil" || got != want {
		t.Fatalf("RANDOMKEY with no key of the namespace: %s, Redis %s", got, want)
	}
	keys := map[string]bool{}
	for i := 0; i < 50; i++ {
		k := fmt.Sprintf("key:%d", i)
		keys[k] = true
		if err := pgm.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		k, err := pgm.RandomKey(ctx).Result()
		if err != nil || !keys[k] {
			t.Fatalf("RANDOMKEY = %q, %v: not a key of the namespace", k, err)
		}
		seen[k] = true
	}
	if len(seen) < 10 {
		t.Errorf("200 RANDOMKEYs gave %d different keys of 50", len(seen))
	}
}
