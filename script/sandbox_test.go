package script

import (
	"strings"
	"testing"
)

// Everything a script could use to reach outside the sandbox is absent.
func TestSandboxEscapesRefused(t *testing.T) {
	e := New(Config{})
	for _, src := range []string{
		"return os.execute('true')", "return io.open('/etc/passwd')", "return loadfile('/etc/passwd')",
		"return dofile('/etc/passwd')", "return require('os')", "return package.loaded", "return debug.getregistry()",
		"return getfenv(0)", "return setfenv(1, {})", "return newproxy(true)", "return module('x')", "print('x')",
		"return channel", "return _GOPHER_LUA_VERSION", "return _printregs()",
		"return string.dump(function() end)", "return loadstring(string.char(27) .. 'LuaQ')()",
	} {
		if rep := evalWith(t, e, newFake(), src, nil); rep.Kind != Error {
			t.Errorf("%s answered %s", src, render(rep))
		}
	}
	// loadstring of precompiled code returns nil and a message, as Lua does
	// when loading fails.
	rep := evalWith(t, e, newFake(), "local f, err = loadstring('\\27LuaQ') return {tostring(f), err}", nil)
	if got := render(rep); !strings.Contains(got, "nil") || !strings.Contains(got, "precompiled") {
		t.Errorf("loadstring of bytecode: %s", got)
	}
}

// Globals and every table reachable from them are read-only, as in Redis 7.0.
func TestGlobalsProtected(t *testing.T) {
	e := New(Config{})
	for _, tc := range []struct{ src, want string }{
		{"x = 1", "-ERR user_script:1: Attempt to modify a readonly table script: "},
		{"function f() end", "-ERR user_script:1: Attempt to modify a readonly table script: "},
		{"return undefined_var", "-ERR user_script:1: Script attempted to access nonexistent global variable 'undefined_var' script: "},
		{"string.rep = nil", "-ERR user_script:1: Attempt to modify a readonly table"},
		{"redis.call = function() return 1 end", "-ERR user_script:1: Attempt to modify a readonly table"},
		{"cjson.null = 1", "-ERR user_script:1: Attempt to modify a readonly table"},
		{"_G.KEYS = {}", "-ERR user_script:1: Attempt to modify a readonly table"},
		{"rawset(_G, 'x', 1)", "-ERR Attempt to modify a readonly table script: "},
		{"rawset(string, 'x', 1)", "-ERR Attempt to modify a readonly table script: "},
		{"setmetatable(_G, nil)", "-ERR Attempt to modify a readonly table script: "},
		{"setmetatable(math, {})", "-ERR Attempt to modify a readonly table script: "},
		{"table.insert(redis, 1)", "-ERR Attempt to modify a readonly table script: "},
		{"getmetatable('').__index = {}", "-ERR user_script:1: Attempt to modify a readonly table"},
		{"getmetatable('').__index.rep = nil", "-ERR user_script:1: Attempt to modify a readonly table"},
		{"getmetatable(_G).__index = nil", "-ERR user_script:1: Attempt to modify a readonly table"},
		{"return rawget(_G, 'undefined_var')", "$-1 "},
		{"return rawget(_G, 'redis') == redis", ":1 "},
		{"local n = 0 for k, v in pairs(_G) do n = n + 1 end return n > 20", ":1 "},
		{"local t = {} t.x = 1 rawset(t, 'y', 2) return t.x + t.y", ":3 "},
		{"KEYS[1] = 'changed' return KEYS[1]", "$7 changed "},
	} {
		if got := render(evalWith(t, e, newFake(), tc.src, []string{"k"})); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: got %q, want prefix %q", tc.src, got, tc.want)
		}
	}
}

// A run cannot leave anything behind for the next run on the same Lua state:
// every attempt either fails or is gone.
func TestRunsDoNotLeakIntoEachOther(t *testing.T) {
	e := New(Config{MaxIdleStates: 1})
	f := newFake()
	for _, src := range []string{
		"string.rep = function() return 'hijacked' end",
		"rawset(string, 'rep', function() return 'hijacked' end)",
		"getmetatable('').__index = {rep = function() return 'hijacked' end}",
		"redis.call = function() return 'hijacked' end",
		"_G.hijacked = true",
		"rawset(_G, 'hijacked', true)",
		"setmetatable(_G, {__index = function() return 'hijacked' end})",
		"cjson.encode_number_precision(1)",
		"math.randomseed(1)",
		"redis.setresp(3)",
		"KEYS[1] = 'hijacked'",
		"table.insert(KEYS, 'hijacked')",
		"local co = coroutine.create(function() coroutine.yield() end) coroutine.resume(co)",
	} {
		evalWith(t, e, f, src, []string{"k"})
		for _, check := range []struct{ src, want string }{
			{"return ('x'):rep(2)", "$2 xx "},
			{"return string.rep('x', 2)", "$2 xx "},
			{"return redis.call('ping')", "+PONG "},
			{"return rawget(_G, 'hijacked')", "$-1 "},
			{"return cjson.encode(1/3)", "$16 0.33333333333333 "},
			{"return math.random(1000)", ":397 "},
			{"return type(redis.call('get', 'nokey'))", "$7 boolean "},
			{"return KEYS", "*1 $1 k "},
		} {
			if got := render(evalWith(t, e, f, check.src, []string{"k"})); got != check.want {
				t.Errorf("after %q, %q answers %q, want %q", src, check.src, got, check.want)
			}
		}
	}
	if n := len(e.idle); n != 1 {
		t.Fatalf("%d idle states, want the one reused", n)
	}
}
