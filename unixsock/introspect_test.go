package unixsock_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
)

// getKeysCases are full commands: COMMAND GETKEYS and GETKEYSANDFLAGS of
// each must answer as Redis's: one per command with keys, and the errors.
var getKeysCases = [][]string{
	{"get", "a"}, {"GET", "a"}, {"mget", "a", "b", "c"}, {"exists", "a", "b"}, {"ttl", "a"}, {"pttl", "a"},
	{"strlen", "a"}, {"type", "a"}, {"set", "a", "v"}, {"set", "a", "v", "NX"}, {"set", "a", "v", "get"},
	{"set", "a", "v", "EX", "10", "GET"}, {"setex", "a", "1", "v"}, {"psetex", "a", "1", "v"}, {"setnx", "a", "v"},
	{"getdel", "a"}, {"getex", "a", "persist"}, {"mset", "a", "1", "b", "2"}, {"mset", "a", "1", "b"},
	{"msetnx", "a", "1", "b", "2"}, {"incr", "a"}, {"decr", "a"}, {"incrby", "a", "1"}, {"decrby", "a", "1"},
	{"incrbyfloat", "a", "1"}, {"append", "a", "b"}, {"del", "a", "b"}, {"unlink", "a"}, {"expire", "a", "1"},
	{"pexpire", "a", "1"}, {"expireat", "a", "1"}, {"pexpireat", "a", "1"}, {"persist", "a"}, {"touch", "a", "b"},
	{"expiretime", "a"}, {"pexpiretime", "a"}, {"getrange", "a", "0", "1"}, {"substr", "a", "0", "1"},
	{"getset", "a", "b"}, {"setrange", "a", "0", "b"}, {"setbit", "a", "0", "1"}, {"getbit", "a", "0"},
	{"bitcount", "a"}, {"bitpos", "a", "1"}, {"bitop", "and", "d", "a", "b"}, {"rename", "a", "b"},
	{"renamenx", "a", "b"}, {"copy", "a", "b"}, {"copy", "a", "b", "replace"}, {"watch", "a", "b"},
	{"object", "encoding", "a"}, {"object", "idletime", "a"}, {"OBJECT", "FREQ", "a"}, {"object", "refcount", "a"},
	{"eval", "return 1", "2", "a", "b", "c"}, {"evalsha", "x", "1", "a"}, {"eval_ro", "x", "1", "a"},
	{"evalsha_ro", "x", "1", "a"}, {"eval", "x", "0"}, {"eval", "x", "1"}, {"eval", "x", "abc"}, {"eval", "x", "-1"},
	// Errors.
	{"get", "a", "b"}, {"set", "a"}, {"mset", "a"}, {"nosuch", "a"}, {"ping", "x"}, {"scan", "0"},
	{"client", "list"}, {"client", "nosuch"}, {"config", "get", "x"}, {"object", "help"}, {"object", "nosuch", "a"},
	{"object", "encoding"}, {"object", "encoding", "a", "b"}, {"command", "getkeys"}, {"script", "load", "x"},
	{"bitop", "and", "d"}, {"eval", "x"},
}

// TestGetKeysMatchesRedis compares COMMAND GETKEYS and GETKEYSANDFLAGS
// with Redis for every command pgmirror has keys for, and the errors.
func TestGetKeysMatchesRedis(t *testing.T) {
	t.Parallel()
	red := client(t, startRedis(t))
	dsn, _ := testdb.New(t)
	pgm := client(t, startSidecar(t, dsn, config{}).socket)
	for _, sub := range []string{"GETKEYS", "GETKEYSANDFLAGS"} {
		for _, full := range append(getKeysCases, nil, []string{"get"}) {
			args := []any{"COMMAND", sub}
			for _, a := range full {
				args = append(args, a)
			}
			if want, got := do(red, args...), do(pgm, args...); got != want {
				t.Errorf("%q:\n redis    %s\n pgmirror %s", args, want, got)
			}
		}
	}
}

// TestHelpMatchesRedis: COMMAND HELP and OBJECT HELP are Redis's; CLIENT,
// CONFIG and SCRIPT HELP are Redis's for the subcommands pgmirror answers
// (in its order), with Redis 7.2's SETINFO and NO-TOUCH; HELP with an
// argument is an arity error.
func TestHelpMatchesRedis(t *testing.T) {
	t.Parallel()
	red := client(t, startRedis(t))
	dsn, _ := testdb.New(t)
	pgm := client(t, startSidecar(t, dsn, config{}).socket)
	for _, cmd := range []string{"COMMAND", "OBJECT", "CLIENT", "CONFIG", "SCRIPT"} {
		for _, args := range [][]any{{cmd, "HELP"}, {cmd, "help", "x"}} {
			want, got := do(red, args...), do(pgm, args...)
			if cmd == "COMMAND" || cmd == "OBJECT" || len(args) == 3 {
				if got != want {
					t.Errorf("%q:\n redis    %s\n pgmirror %s", args, want, got)
				}
				continue
			}
			if !inOrder(helpLines(t, pgm, cmd), helpLines(t, red, cmd)) {
				t.Errorf("%s HELP not Redis's lines in Redis's order:\n redis    %s\n pgmirror %s", cmd, want, got)
			}
		}
	}
}

// helpLines returns a HELP reply's lines but for Redis 7.2's SETINFO and
// NO-TOUCH (the Redis the tests run is 7.0).
func helpLines(t *testing.T, c *redis.Client, cmd string) []string {
	v, err := c.Do(context.Background(), cmd, "HELP").StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	skip := false
	for _, l := range v {
		if !strings.HasPrefix(l, " ") {
			skip = strings.HasPrefix(l, "SETINFO") || strings.HasPrefix(l, "NO-TOUCH")
		}
		if !skip {
			out = append(out, l)
		}
	}
	return out
}

// inOrder reports whether sub is a subsequence of all.
func inOrder(sub, all []string) bool {
	i := 0
	for _, l := range all {
		if i < len(sub) && sub[i] == l {
			i++
		}
	}
	return i == len(sub) && len(sub) > 0
}

// TestCommandListMatchesRedis: COMMAND LIST, with and without FILTERBY,
// names what Redis names among the commands and subcommands pgmirror has,
// and nothing else but its own.
func TestCommandListMatchesRedis(t *testing.T) {
	t.Parallel()
	red := client(t, startRedis(t))
	dsn, _ := testdb.New(t)
	pgm := client(t, startSidecar(t, dsn, config{}).socket)
	ctx := context.Background()
	all, err := pgm.Do(ctx, "COMMAND", "LIST").StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]bool{}
	for _, n := range all {
		ours[n] = true
	}
	own := map[string]bool{"pgmirror.resync": true, "client|setinfo": true, "client|no-touch": true} // not in Redis 7.0
	for _, filter := range [][]any{nil, {"FILTERBY", "PATTERN", "get*"}, {"FILTERBY", "pattern", "OBJECT|*"},
		{"FILTERBY", "ACLCAT", "keyspace"}, {"FILTERBY", "ACLCAT", "read"}, {"FILTERBY", "ACLCAT", "write"},
		{"FILTERBY", "ACLCAT", "string"}, {"FILTERBY", "ACLCAT", "connection"}, {"FILTERBY", "ACLCAT", "dangerous"},
		{"FILTERBY", "ACLCAT", "fast"}, {"FILTERBY", "ACLCAT", "nosuch"}, {"FILTERBY", "MODULE", "x"}} {
		args := append([]any{"COMMAND", "LIST"}, filter...)
		want, err1 := red.Do(ctx, args...).StringSlice()
		got, err2 := pgm.Do(ctx, args...).StringSlice()
		if err1 != nil || err2 != nil {
			t.Fatalf("%q: redis %v, pgmirror %v", args, err1, err2)
		}
		for _, n := range got {
			if !slices.Contains(want, n) && !own[n] {
				t.Errorf("%q: pgmirror lists %q, Redis does not", args, n)
			}
		}
		for _, n := range want {
			if ours[n] && !slices.Contains(got, n) {
				t.Errorf("%q: Redis lists %q, pgmirror does not", args, n)
			}
		}
	}
	for _, args := range [][]any{{"COMMAND", "LIST", "x"}, {"COMMAND", "LIST", "FILTERBY", "x", "y"},
		{"COMMAND", "LIST", "FILTERBY", "PATTERN"}, {"COMMAND", "COUNT", "x"}, {"COMMAND", "NOSUCH"}} {
		if want, got := do(red, args...), do(pgm, args...); got != want {
			t.Errorf("%q:\n redis    %s\n pgmirror %s", args, want, got)
		}
	}
}

// TestCommandInfoACLCategories: COMMAND INFO reports Redis's ACL
// categories for every command pgmirror has.
func TestCommandInfoACLCategories(t *testing.T) {
	t.Parallel()
	red := client(t, startRedis(t))
	dsn, _ := testdb.New(t)
	pgm := client(t, startSidecar(t, dsn, config{}).socket)
	ctx := context.Background()
	ours, err := pgm.Command(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := red.Command(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for name, o := range ours {
		if r := theirs[name]; r != nil && !slices.Equal(o.ACLFlags, r.ACLFlags) {
			t.Errorf("%s: ACL categories %q, Redis %q", name, o.ACLFlags, r.ACLFlags)
		}
	}
}

// TestCommandInfoSubcommands: COMMAND INFO of a container lists the
// subcommands pgmirror answers, and COMMAND INFO container|sub reports
// Redis's arity, flags, key positions and ACL categories for each.
func TestCommandInfoSubcommands(t *testing.T) {
	t.Parallel()
	red := client(t, startRedis(t))
	dsn, _ := testdb.New(t)
	pgm := client(t, startSidecar(t, dsn, config{}).socket)
	ctx := context.Background()
	list, err := pgm.Do(ctx, "COMMAND", "LIST", "FILTERBY", "PATTERN", "*|*").StringSlice()
	if err != nil || len(list) < 20 {
		t.Fatalf("COMMAND LIST of subcommands: %q, %v", list, err)
	}
	for _, name := range list {
		if name == "client|setinfo" || name == "client|no-touch" {
			continue // Redis 7.2's
		}
		w, err1 := red.Do(ctx, "COMMAND", "INFO", name).Slice()
		g, err2 := pgm.Do(ctx, "COMMAND", "INFO", name).Slice()
		if err1 != nil || err2 != nil || len(w) != 1 || len(g) != 1 || w[0] == nil || g[0] == nil {
			t.Errorf("COMMAND INFO %s: redis %v %v, pgmirror %v %v", name, w, err1, g, err2)
			continue
		}
		// Up to the ACL categories: pgmirror reports no tips or key specs.
		if want, got := render(w[0].([]any)[:7]), render(g[0].([]any)[:7]); want != got {
			t.Errorf("COMMAND INFO %s:\n redis    %s\n pgmirror %s", name, want, got)
		}
	}
	v, err := pgm.Do(ctx, "COMMAND", "INFO", "client").Slice()
	if err != nil || len(v) != 1 {
		t.Fatalf("COMMAND INFO client: %v, %v", v, err)
	}
	if subs, _ := v[0].([]any)[9].([]any); len(subs) != 10 {
		t.Errorf("COMMAND INFO client: %d subcommands, want 10", len(subs))
	}
	if got := do(pgm, "COMMAND", "INFO", "client|pause"); got != "[nil]" {
		t.Errorf("COMMAND INFO client|pause = %s, want [nil]", got)
	}
}
