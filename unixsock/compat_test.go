package unixsock_test

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
)

// step is one command of a case; "k" and "k2".."k9" in it are replaced by
// keys unique to the case. approx compares integer replies within 2 (TTLs
// in seconds) or 2000 (PTTLs in milliseconds).
type step struct {
	args   []string
	approx int64
}

func s(args ...string) step { return step{args: args} }
func approx(within int64, args ...string) step {
	return step{args: args, approx: within}
}

// compatCases are checked against a real Redis: both must give the same
// replies, errors included.
var compatCases = map[string][]step{
	"get set": {s("GET", "k"), s("SET", "k", "v"), s("GET", "k"), s("SET", "k", ""), s("GET", "k")},
	"set nx xx": {s("SET", "k", "a", "XX"), s("GET", "k"), s("SET", "k", "a", "NX"), s("SET", "k", "b", "NX"),
		s("GET", "k"), s("SET", "k", "c", "XX"), s("GET", "k")},
	"set get": {s("SET", "k", "a", "GET"), s("SET", "k", "b", "GET"), s("SET", "k", "c", "NX", "GET"), s("GET", "k"),
		s("SET", "k2", "x", "XX", "GET"), s("GET", "k2")},
	"set expiry": {s("SET", "k", "v", "EX", "100"), approx(2, "TTL", "k"), s("SET", "k", "v", "PX", "100000"),
		approx(2000, "PTTL", "k"), s("SET", "k", "w", "KEEPTTL"), approx(2, "TTL", "k"), s("GET", "k"),
		s("SET", "k", "v"), s("TTL", "k"), s("SET", "k", "v", "EXAT", "4102444800"),
		s("SET", "k", "v", "PXAT", "4102444800000"), s("GET", "k")},
	"set errors": {s("SET", "k", "v", "EX", "0"), s("SET", "k", "v", "EX", "-5"), s("SET", "k", "v", "EX", "abc"),
		s("SET", "k", "v", "NX", "XX"), s("SET", "k", "v", "EX", "10", "PX", "100"), s("SET", "k", "v", "BOGUS"),
		s("SET", "k", "v", "EX"), s("SET", "k", "v", "KEEPTTL", "EX", "10"), s("SET", "k"), s("GET", "k")},
	"setex psetex setnx": {s("SETEX", "k", "100", "v"), approx(2, "TTL", "k"), s("SETEX", "k", "0", "v"),
		s("SETEX", "k", "-1", "v"), s("SETEX", "k", "x", "v"), s("PSETEX", "k2", "100000", "v"), approx(2000, "PTTL", "k2"),
		s("SETNX", "k3", "a"), s("SETNX", "k3", "b"), s("GET", "k3")},
	"getdel getex": {s("GETDEL", "k"), s("SET", "k", "v"), s("GETDEL", "k"), s("GET", "k"),
		s("SET", "k", "v"), s("GETEX", "k", "EX", "100"), approx(2, "TTL", "k"), s("GETEX", "k", "PERSIST"), s("TTL", "k"),
		s("GETEX", "k"), s("GETEX", "missing"), s("GETEX", "k", "EX", "0"), s("GETEX", "k", "BOGUS"),
		s("GETEX", "k", "PX", "100000"), approx(2000, "PTTL", "k")},
	"mset mget msetnx": {s("MSET", "k", "1", "k2", "2"), s("MGET", "k", "k2", "k3"), s("MSET", "k", "1", "k2"),
		s("MSETNX", "k3", "3", "k4", "4"), s("MSETNX", "k4", "x", "k5", "5"), s("MGET", "k3", "k4", "k5")},
	"incr family": {s("INCR", "k"), s("INCR", "k"), s("INCRBY", "k", "10"), s("DECR", "k"), s("DECRBY", "k", "5"),
		s("GET", "k"), s("INCRBY", "k", "x"), s("SET", "k2", "abc"), s("INCR", "k2"), s("SET", "k2", "1.5"), s("INCR", "k2"),
		s("SET", "k3", "9223372036854775807"), s("INCR", "k3"), s("DECRBY", "k3", "-9223372036854775808"),
		s("SET", "k4", " 5"), s("INCR", "k4"), s("SET", "k5", "-7"), s("INCR", "k5"), s("SET", "k6", "", "EX", "100"), s("INCR", "k6")},
	// pgmirror adds in exact decimal arithmetic (numeric), Redis in long double, so sums
	// whose binary form is inexact differ in the 17th decimal (10.6 + 5000 is
	// "5010.60000000000000009" in Redis): the table uses sums both agree on.
	"incrbyfloat": {s("INCRBYFLOAT", "k", "1.5"), s("SET", "k2", "10.5"), s("INCRBYFLOAT", "k2", "0.1"),
		s("SET", "k5", "3"), s("INCRBYFLOAT", "k5", "2.5e2"), s("SET", "k3", "abc"), s("INCRBYFLOAT", "k3", "1"), s("INCRBYFLOAT", "k", "abc"),
		s("INCRBYFLOAT", "k", "inf"), s("GET", "k2"), s("SET", "k4", "3"), s("INCRBYFLOAT", "k4", "-3")},
	"append strlen": {s("APPEND", "k", "ab"), s("APPEND", "k", "cd"), s("GET", "k"), s("STRLEN", "k"), s("STRLEN", "k2")},
	"del exists": {s("MSET", "k", "1", "k2", "2"), s("EXISTS", "k", "k", "k2", "k3"), s("DEL", "k", "k", "k3"),
		s("EXISTS", "k"), s("UNLINK", "k2", "k"), s("EXISTS", "k2"), s("TYPE", "k2"), s("SET", "k2", "x"), s("TYPE", "k2")},
	"expire family": {s("EXPIRE", "k", "100"), s("SET", "k", "v"), s("TTL", "k"), s("EXPIRE", "k", "100"), approx(2, "TTL", "k"),
		s("EXPIRE", "k", "200", "NX"), s("EXPIRE", "k", "200", "XX"), approx(2, "TTL", "k"), s("EXPIRE", "k", "100", "GT"),
		s("EXPIRE", "k", "300", "GT"), s("EXPIRE", "k", "50", "LT"), approx(2, "TTL", "k"), s("PERSIST", "k"), s("PERSIST", "k"),
		s("TTL", "k"), s("EXPIRE", "k", "100", "GT"), s("EXPIRE", "k", "100", "LT"), s("PERSIST", "k"),
		s("EXPIRE", "k", "100", "XX", "LT"), s("EXPIRE", "k", "100", "NX", "XX"), s("EXPIRE", "k", "100", "GT", "LT"),
		s("EXPIRE", "k", "100", "BOGUS"), s("EXPIRE", "k", "abc"),
		s("PEXPIRE", "k", "100000"), approx(2000, "PTTL", "k"), s("EXPIREAT", "k", "4102444800"), s("PEXPIREAT", "k", "4102444800000"),
		s("EXPIRE", "k", "0"), s("EXISTS", "k"), s("SET", "k2", "v"), s("EXPIREAT", "k2", "1"), s("GET", "k2"),
		s("SET", "k3", "v"), s("PEXPIRE", "k3", "-5"), s("EXISTS", "k3")},
	// SELECT of another database than 0 is refused by pgmirror (one keyspace), unlike Redis.
	"connection": {s("PING"), s("PING", "hello"), s("ECHO", "x"), s("SELECT", "0"), s("SELECT", "x"),
		s("CLIENT", "SETNAME", "me"), s("CLIENT", "GETNAME")},
	"errors": {s("GET"), s("GET", "a", "b"), s("BOGUSCMD", "a", "b"), s("MGET"), s("SET", "k", "v", "EX", "10", "GET", "NX", "KEEPTTL")},
}

func TestCompatWithRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	pgm, red := client(t, sc.socket), client(t, redisSock)
	for name, steps := range compatCases {
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

// closeInts reports whether two rendered integer replies differ by at most d.
func closeInts(a, b string, d int64) bool {
	x, err1 := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(a, "int64("), ")"), 10, 64)
	y, err2 := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(b, "int64("), ")"), 10, 64)
	return err1 == nil && err2 == nil && x-y <= d && y-x <= d
}

// TestScanAndKeysMatchRedis compares the key sets SCAN (full iteration,
// with MATCH and COUNT) and KEYS return; the order is unspecified in both.
func TestScanAndKeysMatchRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	ctx := context.Background()
	for _, c := range []*redis.Client{client(t, sc.socket), client(t, redisSock)} {
		for i := 0; i < 300; i++ {
			key := "user:" + strconv.Itoa(i)
			if i%3 == 0 {
				key = "order:" + strconv.Itoa(i)
			}
			if err := c.Set(ctx, key, "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		c.Set(ctx, "weird[1]*?", "v", 0)
	}
	pgm, red := client(t, sc.socket), client(t, redisSock)
	for _, pattern := range []string{"*", "user:*", "order:1?", "user:[12]*", "user:[^1-8]*", "weird\\[1\\]\\*\\?", "nomatch*"} {
		for _, count := range []int64{1, 10, 1000} {
			want, got := scanAll(t, red, pattern, count), scanAll(t, pgm, pattern, count)
			if strings.Join(want, ",") != strings.Join(got, ",") {
				t.Errorf("SCAN MATCH %q COUNT %d: redis %d keys, pgmirror %d keys", pattern, count, len(want), len(got))
			}
		}
		want, _ := red.Keys(ctx, pattern).Result()
		got, err := pgm.Keys(ctx, pattern).Result()
		sort.Strings(want)
		sort.Strings(got)
		if err != nil || strings.Join(want, ",") != strings.Join(got, ",") {
			t.Errorf("KEYS %q: redis %d keys, pgmirror %d keys (%v)", pattern, len(want), len(got), err)
		}
	}
	if n, err := pgm.DBSize(ctx).Result(); err != nil || n != 301 {
		t.Errorf("DBSIZE = %d, %v; want 301", n, err)
	}
}

func scanAll(t *testing.T, c *redis.Client, pattern string, count int64) []string {
	t.Helper()
	seen := map[string]bool{}
	var cursor uint64
	deadline := time.Now().Add(10 * time.Second)
	for {
		keys, next, err := c.Scan(context.Background(), cursor, pattern, count).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			seen[k] = true
		}
		if next == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("SCAN did not finish")
		}
		cursor = next
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
