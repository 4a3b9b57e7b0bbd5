package script

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// small is an engine with small bounds, so the tests reach them quickly.
func small() *Engine {
	return New(Config{
		Timeout: 5 * time.Second, MaxStringBytes: 1 << 20, MaxAllocBytes: 8 << 20,
		MaxTableEntries: 1000, MaxReplyBytes: 1 << 20, MaxCoroutines: 5, MaxCallDepth: 200,
		MaxStackSlots: 1 << 14, MaxScriptBytes: 4096,
	})
}

func wantError(t *testing.T, rep Reply, substr string) {
	t.Helper()
	if rep.Kind != Error || !strings.Contains(rep.Str, substr) {
		t.Errorf("got %.200s, want an error containing %q", render(rep), substr)
	}
}

// The time limit stops an infinite loop, a loop that catches errors with
// pcall, a busy string builder and a coroutine that never yields, each within
// a little more than the limit.
func TestTimeLimitStopsScripts(t *testing.T) {
	e := New(Config{Timeout: 300 * time.Millisecond})
	for _, src := range []string{
		"while true do end",
		"local i = 0 while true do i = i + 1 end",
		"while true do pcall(function() while true do end end) end",
		"while true do xpcall(function() while true do end end, function(e) return e end) end",
		"local function f() while true do end end while true do pcall(f) end",
		"local s = '' while true do s = s .. 'x' if #s > 1000 then s = '' end end",
		"local t = {} while true do t[#t + 1] = 'x' if #t > 500 then t = {} end end",
		"local co = coroutine.wrap(function() while true do end end) co()",
		"while true do redis.pcall('ping') end",
		"local ok = pcall(function() while true do end end) return ok",
	} {
		start := time.Now()
		rep := evalWith(t, e, newFake(), src, nil)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s ran %v", src, d)
		}
		wantError(t, rep, "Script timed out: it ran longer than the script time limit (300ms)")
	}
}

// Strings stay within MaxStringBytes however they are built, and a run
// within MaxAllocBytes in all.
func TestStringBounds(t *testing.T) {
	e := small()
	for _, tc := range []struct{ src, want string }{
		{"local s = 'x' for i = 1, 40 do s = s .. s end return #s", "string length overflow"},
		{"local s = 'xx' for i = 1, 40 do s = s .. s .. s end return #s", "string length overflow"},
		{"return #string.rep('x', 2^40)", "string length overflow"},
		{"return #string.rep('abcdefgh', 2^30)", "string length overflow"},
		{"return #('x'):rep(1048577)", "string length overflow"},
		{"local s = string.rep('x', 600000) return #(s .. s)", "string length overflow"},
		{"local s = string.rep('x', 600000) return #table.concat({s, s})", "string length overflow"},
		{"local s = string.rep('x', 1100) return #s:gsub('x', s)", "string length overflow"},
		{"local s = string.rep('x', 1100) return #s:gsub('', s)", "string length overflow"},
		{"return #string.format('%99999999d', 1)", "invalid format (width or precision too long)"},
		{"return #string.format('%.999f', 1)", "invalid format (width or precision too long)"},
		{"local s = string.rep('x', 100000) return #cjson.encode({s,s,s,s,s,s,s,s,s,s,s})", "string length overflow"},
		{"local t = {} for i = 1, 2000 do table.insert(t, i) end", "table overflow"},
		{"return #cjson.decode('[' .. string.rep('1,', 1500) .. '1]')", "table overflow"},
		{"local t = {} for i = 1, 10 do t[i] = coroutine.create(function() end) end", "too many coroutines"},
		{"local function f() return 1 + f() end return f()", "stack overflow"},
		{"local t = {} for i = 1, 20000 do t[i] = i end return #{unpack(t)}", "overflow"},
		{"local s = string.rep('x', 20000) return #{s:byte(1, -1)}", "overflow"},
		{"local s = string.rep('x', 500000) return {s, s, s}", "script reply larger than the limit"},
		{"cjson.encode_max_depth(2^30) local t = {} t[1] = t return cjson.encode(t)", "Cannot serialise, excessive nesting (7991)"},
		{"cjson.decode_max_depth(2^30) return cjson.decode(string.rep('[', 100000))", "Found too many nested data structures (7991)"},
	} {
		rep := evalWith(t, e, newFake(), tc.src, nil)
		wantError(t, rep, tc.want)
	}
	// Within the bounds, the same operations work.
	for _, src := range []string{
		"return #string.rep('x', 1048576)", "local s = string.rep('x', 500000) return #(s .. s)",
		"return #string.format('%99d|%.99f', 1, 1)", "local t = {} for i = 1, 1000 do table.insert(t, i) end return #t",
	} {
		if rep := evalWith(t, e, newFake(), src, nil); rep.Kind != Int {
			t.Errorf("%s: %s", src, render(rep))
		}
	}
}

// A run may make any amount of garbage, but not hold more than
// MaxAllocBytes.
func TestMemoryBound(t *testing.T) {
	e := New(Config{Timeout: 20 * time.Second, MaxStringBytes: 1 << 20, MaxAllocBytes: 8 << 20})
	for _, src := range []string{
		"local s = string.rep('x', 1000000) local t = {} for i = 1, 20 do t[i] = s:upper() end",
		"local s = string.rep('x', 500000) local t = {} for i = 1, 40 do t[i] = s .. i end",
		"local t = {} for i = 1, 20 do t[i] = string.rep('y', 1000000) end",
	} {
		wantError(t, evalWith(t, e, newFake(), src, nil), "not enough memory")
	}
	rep := evalWith(t, e, newFake(), "local s = '' for i = 1, 3000 do s = s .. string.rep('z', 10) end return #s", nil)
	if render(rep) != ":30000 " {
		t.Errorf("a string built by concatenation (45 MB of garbage): %.200s", render(rep))
	}
}

// A reply that nests deeper than Redis's Lua stack allows ends in Redis's error.
func TestCyclicReply(t *testing.T) {
	rep := evalWith(t, New(Config{}), newFake(), "local t = {} t[1] = t return t", nil)
	depth := 0
	for rep.Kind == Array && len(rep.Elems) == 1 {
		rep = rep.Elems[0]
		depth++
	}
	if depth != maxReplyDepth || rep.Kind != Error || rep.Str != "ERR reached lua stack limit" {
		t.Errorf("depth %d then %s", depth, render(rep))
	}
}

func TestScriptSizeBound(t *testing.T) {
	e := small()
	body := "return '" + strings.Repeat("x", 5000) + "'"
	rep, err := e.Eval(context.Background(), []byte(body), Request{Caller: newFake()})
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, rep, "ERR script of 5009 bytes is larger than the limit of 4096 bytes")
	if _, rep := e.Load([]byte(body)); rep.Kind != Error {
		t.Errorf("SCRIPT LOAD of a script over the bound: %s", render(rep))
	}
	rep = evalWith(t, e, newFake(), "local f, err = loadstring(string.rep(' ', 5000)) return err", nil)
	if !strings.Contains(rep.Str, "chunk larger than the script size limit") {
		t.Errorf("loadstring over the bound: %s", render(rep))
	}
}

// redis.log writes to the logger at Redis's levels, at most MaxLogLines
// lines a run.
func TestRedisLog(t *testing.T) {
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
	e := New(Config{MaxLogLines: 3, Logger: log})
	rep := evalWith(t, e, newFake(), "redis.log(redis.LOG_DEBUG, 'hidden') redis.log(redis.LOG_NOTICE, 'hello', 42) "+
		"for i = 1, 10 do redis.log(redis.LOG_WARNING, 'line', i) end return 1", nil)
	if rep.Kind != Int {
		t.Fatal(render(rep))
	}
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, "[INFO]  hello 42: script=") ||
		strings.Count(out, "[WARN]  line") != 1 || !strings.Contains(out, "dropped") {
		t.Errorf("log:\n%s", out)
	}
}
