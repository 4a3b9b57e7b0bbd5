package unixsock_test

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/unixsock"
)

// Scripts used by the cases; shaGet is SCRIPT LOAD's answer for getScript.
const (
	getScript   = "return redis.call('GET', KEYS[1])"
	shaGet      = "d3c21d0c2b9ca22f82737626a27bcaf5d288f99f"
	shapeScript = "return {1, 2.9, 'x', false, {ok='fine'}, {'a', {'b'}}, true, nil, 5}"
	roScript    = "#!lua flags=no-writes\nreturn redis.call('GET', KEYS[1])"
)

// scriptCases are checked against a real Redis, as compatCases: scripts
// that only read, EVALSHA, the _RO forms, SCRIPT, and the errors of each.
// (Syntax errors are worded by gopher-lua: see TestScriptUndeclaredKey.)
var scriptCases = map[string][]step{
	"script load exists flush": {s("SCRIPT", "EXISTS", "0000000000000000000000000000000000000000"),
		s("SCRIPT", "LOAD", "return 1"), s("SCRIPT", "EXISTS", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "x"),
		s("SCRIPT", "EXISTS", "E0E1F9FABFC9D4800C877A703B823AC0578FF8DB"),
		s("EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"), s("SCRIPT", "FLUSH"),
		s("EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"), s("SCRIPT", "FLUSH", "ASYNC"),
		s("SCRIPT", "FLUSH", "SYNC"), s("SCRIPT", "FLUSH", "BOGUS"), s("SCRIPT", "FLUSH", "SYNC", "X"),
		s("SCRIPT", "KILL"), s("SCRIPT", "BOGUS"), s("SCRIPT", "LOAD"), s("SCRIPT", "EXISTS"),
		s("SCRIPT", "KILL", "x")},
	"eval reads": {s("SET", "k", "v"), s("EVAL", getScript, "1", "k"), s("EVAL", getScript, "1", "k2"),
		s("EVAL", "return redis.call('MGET', KEYS[1], KEYS[2])", "2", "k", "k2"),
		s("EVAL", "return redis.call('EXISTS', KEYS[1], KEYS[2])", "2", "k", "k2"),
		s("EVAL", "return redis.call('STRLEN', KEYS[1])", "1", "k"),
		s("EVAL", "return redis.call('TTL', KEYS[1])", "1", "k"),
		s("EVAL", "return {KEYS[1], ARGV[1], ARGV[2], #ARGV}", "1", "k", "a", "b"),
		s("EVAL", "return redis.call('PING')", "0"), s("EVAL", "return redis.call('ECHO', ARGV[1])", "0", "hi"),
		s("EVAL", "return redis.pcall('GET', KEYS[1], 'x')", "1", "k"),
		s("SET", "k3", strings.Repeat("v", 100<<10)), s("EVAL", "return #redis.call('GET', KEYS[1])", "1", "k3"),
		s("EVAL", "return redis.call('MGET', KEYS[1], KEYS[1])", "1", "k3")},
	"eval conversions": {s("EVAL", shapeScript, "0"), s("EVAL", "return {err='My Error'}", "0"),
		s("EVAL", "return redis.error_reply('bad')", "0"), s("EVAL", "return redis.status_reply('FINE')", "0"),
		s("EVAL", "return redis.sha1hex('')", "0"), s("EVAL", "return cjson.encode({1,2})", "0"),
		s("EVAL", "return bit.band(7, 3)", "0"), s("EVAL", "return 3.99", "0"), s("EVAL", "return", "0")},
	"evalsha": {s("SET", "k", "v"), s("SCRIPT", "LOAD", getScript), s("EVALSHA", shaGet, "1", "k"),
		s("EVALSHA", strings.ToUpper(shaGet), "1", "k"), s("EVALSHA", "abc", "0"),
		s("EVALSHA_RO", shaGet, "1", "k"), s("EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0")},
	"eval_ro": {s("SET", "k", "v"), s("EVAL_RO", getScript, "1", "k"), s("EVAL_RO", roScript, "1", "k"),
		s("EVAL", roScript, "1", "k"), s("EVAL_RO", "#!lua\nreturn 1", "0"),
		s("EVAL_RO", "return redis.call('SET', KEYS[1], 'x')", "1", "k"),
		s("EVAL", "#!lua flags=no-writes\nreturn redis.call('DEL', KEYS[1])", "1", "k"),
		s("EVAL_RO", "return redis.pcall('INCR', KEYS[1])", "1", "k"), s("GET", "k")},
	"eval errors": {s("EVAL", "return 1"), s("EVAL", "return 1", "x"), s("EVAL", "return 1", "2", "k"),
		s("EVAL", "return 1", "-1"), s("EVAL", "error('boom')", "0"),
		s("EVAL", "return redis.call('NOSUCH')", "0"), s("EVAL", "return redis.call('GET')", "0"),
		s("EVAL", "return redis.call('SUBSCRIBE', 'c')", "0"), s("EVAL", "return redis.call('EVAL', 'return 1', '0')", "0"),
		s("EVAL", "return redis.call('SCRIPT', 'FLUSH')", "0"), s("EVAL", "return redis.pcall('NOSUCH')", "0"),
		s("EVAL", "x = 1", "0"), s("EVAL", "return os.time()", "0"), s("EVALSHA", "x"), s("EVAL_RO", "return 1")},
}

func TestScriptsCompatWithRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	runCases(t, scriptCases, client(t, sc.socket), client(t, redisSock))
}

// runCases runs each case's steps on pgmirror and Redis and compares.
func runCases(t *testing.T, cases map[string][]step, pgm, red *redis.Client) {
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
				if want != got {
					t.Errorf("step %d %q:\n redis    %s\n pgmirror %s", i, st.args, want, got)
				}
			}
		})
	}
}

// TestScriptUndeclaredKey: a command on a key the script did not declare
// is refused, in redis.call (the script fails) and redis.pcall (returned).
func TestScriptUndeclaredKey(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	c := client(t, sc.socket)
	got := do(c, "EVAL", "return redis.call('GET', 'other')", "1", "k")
	if !strings.Contains(got, "Script attempted to access key 'other', which it did not declare in KEYS") {
		t.Errorf("EVAL of an undeclared key: %s", got)
	}
	got = do(c, "EVAL", "return redis.pcall('MGET', KEYS[1], 'other')", "1", "k")
	if !strings.Contains(got, "did not declare in KEYS") || !strings.HasPrefix(got, "error: ERR Script attempted") {
		t.Errorf("pcall of an undeclared key: %s", got)
	}
	if got := do(c, "EVAL", "return redis.call('GET', KEYS[1])", "1", "k"); got != "nil" {
		t.Errorf("declared key: %s", got)
	}
	for _, cmd := range [][]any{{"EVAL", "return +", "0"}, {"SCRIPT", "LOAD", "return +"}} {
		if got := do(c, cmd...); !strings.HasPrefix(got, "error: ERR Error compiling script (new function): user_script:1: ") {
			t.Errorf("%q: %s", cmd, got)
		}
	}
}

// TestScriptTimeLimitAndKill: a script that runs past --script-timeout
// answers an error; SCRIPT KILL stops a read-only one at once.
func TestScriptTimeLimitAndKill(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.ScriptTimeout = 300 * time.Millisecond }})
	c := client(t, sc.socket)
	start := time.Now()
	got := do(c, "EVAL", "while true do end", "0")
	if !strings.Contains(got, "Script timed out") || time.Since(start) > 5*time.Second {
		t.Errorf("endless script: %s after %v", got, time.Since(start))
	}

	sc2 := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.ScriptTimeout = time.Minute }})
	c2 := client(t, sc2.socket)
	if got := do(c2, "SCRIPT", "KILL"); got != "error: NOTBUSY No scripts in execution right now." {
		t.Errorf("SCRIPT KILL with nothing running: %s", got)
	}
	done := make(chan string, 1)
	go func() { done <- do(c2, "EVAL", "while true do redis.call('GET', KEYS[1]) end", "1", "k") }()
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		got := do(c2, "SCRIPT", "KILL")
		return got == `"OK"`, "SCRIPT KILL answered " + got
	})
	select {
	case got := <-done:
		if !strings.Contains(got, "Script killed by user with SCRIPT KILL") {
			t.Errorf("killed script answered %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the killed script did not answer")
	}
}

// releaseScript is redis-py's Lock release (LUA_RELEASE_SCRIPT), the
// compare-and-delete redsync uses too.
const releaseScript = `
local token = redis.call('get', KEYS[1])
if not token or token ~= ARGV[1] then
    return 0
end
redis.call('del', KEYS[1])
return 1
`

// writeScriptCases are scripts that write, compared with Redis: they run
// again inside a transaction, read their own writes, and keep the writes
// made before an error, as Redis does.
var writeScriptCases = map[string][]step{
	"eval writes": {s("EVAL", "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])", "1", "k", "v1"),
		s("GET", "k"), s("EVAL", "return redis.call('INCRBY', KEYS[1], 5)", "1", "k2"),
		s("EVAL", "return {redis.call('INCR', KEYS[1]), redis.call('GET', KEYS[1]), redis.call('EXISTS', KEYS[1])}", "1", "k2"),
		s("EVAL", "return redis.call('SET', KEYS[1], 'x', 'NX')", "1", "k"),
		s("EVAL", "return redis.call('SET', KEYS[1], 'y', 'GET')", "1", "k"),
		s("EVAL", "redis.call('MSET', KEYS[1], 'a', KEYS[2], 'b'); return redis.call('MGET', KEYS[1], KEYS[2], KEYS[3])", "3", "k3", "k4", "k5"),
		s("EVAL", "return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])", "3", "k3", "k4", "k5"), s("MGET", "k3", "k4"),
		s("EVAL", "redis.call('SET', KEYS[1], 'v', 'EX', 100); return redis.call('TTL', KEYS[1])", "1", "k6"),
		s("EVAL", "redis.call('PERSIST', KEYS[1]); return redis.call('TTL', KEYS[1])", "1", "k6"),
		s("EVAL", "redis.call('APPEND', KEYS[1], 'zz'); return redis.call('STRLEN', KEYS[1])", "1", "k6")},
	"eval write errors": {s("SET", "k", "abc"),
		s("EVAL", "redis.call('SET', KEYS[2], 'kept'); return redis.call('INCR', KEYS[1])", "2", "k", "k2"), s("GET", "k2"),
		s("EVAL", "local r = redis.pcall('INCR', KEYS[1]); redis.call('SET', KEYS[2], 'after'); return r", "2", "k", "k2"),
		s("GET", "k2"), s("EVAL", "redis.call('SET', KEYS[1], 'x'); error('boom')", "1", "k3"), s("GET", "k3"),
		s("EVAL", "return redis.call('SET', KEYS[1], 'v', 'EX', 0)", "1", "k4"), s("EXISTS", "k4")},
	"lock release": {s("SET", "k", "token1", "NX", "PX", "100000"), s("SET", "k", "token2", "NX", "PX", "100000"),
		s("EVAL", releaseScript, "1", "k", "token2"), s("GET", "k"), s("EVAL", releaseScript, "1", "k", "token1"),
		s("GET", "k"), s("EVAL", releaseScript, "1", "k", "token1")},
}

func TestWriteScriptsCompatWithRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	runCases(t, writeScriptCases, client(t, sc.socket), client(t, redisSock))
}
