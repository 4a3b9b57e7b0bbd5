package unixsock_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
)

// stringWriteSteps are GETSET, SETRANGE, SETBIT, BITOP, RENAME, RENAMENX and
// COPY calls whose replies, and the state they leave (read back with GET,
// TTL, EXISTS), must equal redis-server's.
var stringWriteSteps = [][]string{
	// GETSET: the old value; the expiry goes.
	{"getset", "w:a", "1"}, {"set", "w:a", "2", "ex", "100"}, {"getset", "w:a", "3"}, {"get", "w:a"}, {"ttl", "w:a"},
	{"getset", "w:a"}, {"getset", "w:a", "1", "2"},
	// SETRANGE: padding with zero bytes, the expiry kept, errors.
	{"setrange", "w:r", "0", "hello"}, {"setrange", "w:r", "8", "xy"}, {"get", "w:r"}, {"strlen", "w:r"},
	{"setrange", "w:r", "1", "EL"}, {"get", "w:r"}, {"setrange", "w:r", "3", ""}, {"setrange", "w:none", "5", ""},
	{"exists", "w:none"}, {"set", "w:r2", "abc", "ex", "100"}, {"setrange", "w:r2", "1", "Z"}, {"ttl", "w:r2"},
	{"get", "w:r2"}, {"setrange", "w:r", "-1", "x"}, {"setrange", "w:r", "x", "x"},
	{"setrange", "w:r", "536870911", "xx"}, {"setrange", "w:r", "1.5", "x"},
	// SETBIT: the old bit, growth, errors.
	{"setbit", "w:b", "7", "1"}, {"get", "w:b"}, {"setbit", "w:b", "7", "0"}, {"setbit", "w:b", "7", "1"},
	{"setbit", "w:b", "0", "1"}, {"get", "w:b"}, {"setbit", "w:b", "20", "0"}, {"strlen", "w:b"}, {"get", "w:b"},
	{"setbit", "w:b", "-1", "1"}, {"setbit", "w:b", "4294967296", "1"}, {"setbit", "w:b", "1", "2"},
	{"setbit", "w:b", "1", "x"}, {"setbit", "w:b", "x", "1"},
	// BITOP.
	{"set", "w:x", "\x0f\xf0abc"}, {"set", "w:y", "\xff\x00"},
	{"bitop", "and", "w:d", "w:x", "w:y"}, {"get", "w:d"}, {"bitop", "OR", "w:d", "w:x", "w:y"}, {"get", "w:d"},
	{"bitop", "xor", "w:d", "w:x", "w:y", "w:missing"}, {"get", "w:d"}, {"bitop", "not", "w:d", "w:x"}, {"get", "w:d"},
	{"set", "w:d", "v", "ex", "100"}, {"bitop", "and", "w:d", "w:x"}, {"ttl", "w:d"},
	{"bitop", "and", "w:d", "w:missing"}, {"exists", "w:d"}, {"bitop", "not", "w:d", "w:x", "w:y"},
	{"bitop", "nand", "w:d", "w:x"}, {"bitop", "and", "w:d"},
	// RENAME and RENAMENX: value and expiry move.
	{"set", "w:s", "v1", "ex", "100"}, {"rename", "w:s", "w:t"}, {"exists", "w:s"}, {"get", "w:t"}, {"ttl", "w:t"},
	{"rename", "w:s", "w:t"}, {"rename", "w:t", "w:t"}, {"get", "w:t"}, {"renamenx", "w:t", "w:t"},
	{"set", "w:u", "v2"}, {"renamenx", "w:t", "w:u"}, {"get", "w:u"}, {"renamenx", "w:t", "w:v"}, {"get", "w:v"},
	{"renamenx", "w:nope", "w:v"}, {"rename", "w:v", "w:u"}, {"get", "w:u"}, {"ttl", "w:u"}, {"exists", "w:v"},
	// COPY.
	{"copy", "w:u", "w:c"}, {"get", "w:c"}, {"ttl", "w:c"}, {"set", "w:u", "new"}, {"copy", "w:u", "w:c"},
	{"get", "w:c"}, {"copy", "w:u", "w:c", "replace"}, {"get", "w:c"}, {"copy", "w:u", "w:u"},
	{"copy", "w:nope", "w:c"}, {"copy", "w:u", "w:c", "DB", "0", "REPLACE"}, {"copy", "w:u", "w:c", "db", "x"},
	{"copy", "w:u", "w:c", "bogus"}, {"copy", "w:u", "w:c", "db"}, {"copy", "w:u"},
}

// TestStringWritesMatchRedis compares each step's reply with redis-server's.
func TestStringWritesMatchRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	pgm, red := client(t, sc.socket), client(t, redisSock)
	for i, st := range stringWriteSteps {
		args := make([]any, len(st))
		for j, a := range st {
			args[j] = a
		}
		want, got := do(red, args...), do(pgm, args...)
		if strings.HasPrefix(want, "error: ERR wrong number") && strings.HasPrefix(got, "error: ERR wrong number") {
			continue
		}
		if want != got {
			t.Errorf("step %d %q:\n redis    %s\n pgmirror %s", i, st, want, got)
		}
	}
}

// TestStringWritesReachOtherSidecars: what RENAME, COPY, SETRANGE, SETBIT
// and BITOP leave is in the table and on a second sidecar, with expiries.
func TestStringWritesReachOtherSidecars(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	s1, s2 := startSidecar(t, dsn, config{}), startSidecar(t, dsn, config{})
	c1, c2 := client(t, s1.socket), client(t, s2.socket)
	big := strings.Repeat("x", 100_000) // too large to travel inline
	for _, st := range [][]any{
		{"set", "src", "v", "ex", "1000"}, {"rename", "src", "dst"}, {"copy", "dst", "cp"},
		{"set", "bigsrc", big}, {"copy", "bigsrc", "bigcp"}, {"renamenx", "bigsrc", "bigdst"},
		{"setrange", "sr", "3", "ab"}, {"setbit", "sb", "9", "1"}, {"bitop", "or", "bo", "sr", "sb"},
	} {
		if err := c1.Do(context.Background(), st...).Err(); err != nil {
			t.Fatalf("%v: %v", st, err)
		}
	}
	want := map[string]string{"dst": "v", "cp": "v", "bigcp": big, "bigdst": big, "sr": "\x00\x00\x00ab",
		"sb": "\x00\x40", "bo": "\x00\x40\x00ab"}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM cache_entries`).Scan(&n); err != nil || n != len(want) {
		t.Fatalf("%d rows in the table (%v), want %d", n, err, len(want))
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		for k, v := range want {
			got, err := c2.Get(context.Background(), k).Result()
			if err != nil || got != v {
				return false, fmt.Sprintf("second sidecar: GET %s = %.20q, %v", k, got, err)
			}
		}
		ttl, err := c2.TTL(context.Background(), "cp").Result()
		return err == nil && ttl > 990*time.Second, fmt.Sprintf("TTL cp on the second sidecar: %v, %v", ttl, err)
	})
	if n, err := c2.Exists(context.Background(), "src", "bigsrc").Result(); err != nil || n != 0 {
		t.Errorf("renamed keys still on the second sidecar: %d, %v", n, err)
	}
}
