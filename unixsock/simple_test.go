package unixsock_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
)

// simpleCases are the commands of simple.go (and the other commands added
// with them), compared with a real Redis as compatCases are.
var simpleCases = map[string][]step{
	"wait": {s("WAIT", "0", "0"), s("WAIT", "0", "100"), s("WAIT", "x", "0"), s("WAIT", "0", "x"),
		s("WAIT", "0", "-1"), s("WAIT", "0")},
	"touch": {s("TOUCH", "k"), s("SET", "k", "v"), s("TOUCH", "k", "k", "k2"), s("SET", "k2", "v", "PX", "1"),
		s("TOUCH"), s("GET", "k")},
	"expiretime": {s("EXPIRETIME", "k"), s("PEXPIRETIME", "k"), s("SET", "k", "v"), s("EXPIRETIME", "k"),
		s("PEXPIRETIME", "k"), s("SET", "k", "v", "EXAT", "4102444800"), s("EXPIRETIME", "k"), s("PEXPIRETIME", "k"),
		s("SET", "k", "v", "PXAT", "4102444800123"), s("PEXPIRETIME", "k"), s("EXPIRETIME", "k"),
		s("PERSIST", "k"), s("EXPIRETIME", "k"), s("EXPIRETIME"), s("EXPIRETIME", "k", "k2")},
	"getrange": {s("SET", "k", "Hello World"), s("GETRANGE", "k", "0", "4"), s("GETRANGE", "k", "-5", "-1"),
		s("GETRANGE", "k", "0", "-1"), s("GETRANGE", "k", "5", "3"), s("GETRANGE", "k", "-100", "100"),
		s("GETRANGE", "k", "0", "-100"), s("GETRANGE", "k", "-1", "-5"), s("GETRANGE", "k", "20", "30"),
		s("GETRANGE", "k", "10", "10"), s("GETRANGE", "k", "-9223372036854775808", "9223372036854775807"),
		s("GETRANGE", "k2", "0", "-1"), s("GETRANGE", "k", "a", "1"), s("GETRANGE", "k", "0", "1.5"),
		s("SUBSTR", "k", "0", "2"), s("SUBSTR", "k", "-3", "-2"), s("SET", "k3", ""), s("GETRANGE", "k3", "0", "-1"),
		s("GETRANGE", "k3", "0", "0"), s("GETRANGE", "k", "0")},
}

func TestSimpleCommandsMatchRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	compareCases(t, client(t, sc.socket), client(t, redisSock), simpleCases)
}

// compareCases runs each case's steps on Redis and on pgmirror and
// compares the replies, as TestCompatWithRedis does.
func compareCases(t *testing.T, pgm, red *redis.Client, cases map[string][]step) {
	for name, steps := range cases {
		t.Run(name, func(t *testing.T) {
			prefix := strings.ReplaceAll(name, " ", "_") + ":"
			for i, st := range steps {
				args := make([]any, len(st.args))
				for j, a := range st.args {
					if j > 0 && (a == "k" || len(a) == 2 && a[0] == 'k' && a[1] >= '2' && a[1] <= '9') {
						a = prefix + a
					}
					args[j] = a
				}
				want, got := do(red, args...), do(pgm, args...)
				if st.approx > 0 && closeInts(want, got, st.approx) {
					continue
				}
				if want != got {
					t.Errorf("step %d %q:\n redis    %s\n pgmirror %s", i, st.args, want, got)
				}
			}
		})
	}
}

// TestTimeIsDatabaseClock: TIME answers as Redis does (two strings:
// seconds, microseconds), reading the database's clock as the mirror
// tracks it.
func TestTimeIsDatabaseClock(t *testing.T) {
	t.Parallel()
	red := client(t, startRedis(t))
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	pgm := client(t, sc.socket)
	ctx := context.Background()
	if err := sc.m.MeasureClock(ctx); err != nil {
		t.Fatal(err)
	}
	dbNow := func() int64 {
		var us int64
		if err := db.QueryRow(`SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint`).Scan(&us); err != nil {
			t.Fatal(err)
		}
		return us
	}
	// The shape is checked against Redis, the value against Postgres.
	for _, c := range []*redis.Client{red, pgm} {
		v, err := c.Do(ctx, "TIME").Slice()
		if err != nil || len(v) != 2 {
			t.Fatalf("TIME = %v, %v", v, err)
		}
		for _, e := range v {
			if _, ok := e.(string); !ok {
				t.Fatalf("TIME element %T, want a bulk string", e)
			}
		}
	}
	before := dbNow()
	v, err := pgm.Do(ctx, "TIME").Slice()
	after := dbNow()
	if err != nil {
		t.Fatal(err)
	}
	sec, _ := strconv.ParseInt(v[0].(string), 10, 64)
	usec, _ := strconv.ParseInt(v[1].(string), 10, 64)
	got := sec*1e6 + usec
	slack := (100 * time.Millisecond).Microseconds()
	if usec < 0 || usec >= 1e6 || got < before-slack || got > after+slack {
		t.Errorf("TIME = %d.%06d; Postgres's clock read %d..%d", sec, usec, before, after)
	}
}

// TestTouchCountsAsAccess: TOUCH marks the keys read, so the access-time
// flush records them, as a GET does.
func TestTouchCountsAsAccess(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	c := client(t, sc.socket)
	ctx := context.Background()
	if err := c.MSet(ctx, "t1", "v", "t2", "v").Err(); err != nil {
		t.Fatal(err)
	}
	sc.m.TakeAccessed()
	if n, err := c.Touch(ctx, "t1", "missing").Result(); err != nil || n != 1 {
		t.Fatalf("TOUCH = %d, %v; want 1", n, err)
	}
	if got := sc.m.TakeAccessed(); !slices.Equal(got, []string{"t1"}) {
		t.Errorf("accessed after TOUCH t1 missing: %q, want [t1]", got)
	}
}

// TestDataTypeCommandsHint: the commands of hashes, lists, sets, sorted
// sets and streams answer Redis's unknown-command error (as a Redis
// without them would word it) followed by a hint; other unknown commands
// get Redis's error alone.
func TestDataTypeCommandsHint(t *testing.T) {
	t.Parallel()
	red := client(t, startRedis(t))
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	pgm := client(t, sc.socket)
	for cmd, typ := range map[string]string{"HSET": "hash", "lpush": "list", "SAdd": "set", "ZADD": "sorted set",
		"GEOADD": "sorted set", "XADD": "stream", "BLPOP": "list", "HGETALL": "hash"} {
		// Redis's wording for a name it does not know, with the same arguments.
		want := do(red, cmd+"_unknown", "k", "f", "v")
		want = strings.Replace(want, cmd+"_unknown", cmd, 1) +
			"(pgmirror stores strings only; " + typ + " commands are not supported)"
		if got := do(pgm, cmd, "k", "f", "v"); got != want {
			t.Errorf("%s:\n got  %s\n want %s", cmd, got, want)
		}
	}
	if got, want := do(pgm, "HSETX", "k"), do(red, "HSETX", "k"); got != want {
		t.Errorf("HSETX: %s, Redis %s", got, want)
	}
}
