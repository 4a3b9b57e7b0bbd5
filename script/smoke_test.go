package script

import "testing"

func TestSmoke(t *testing.T) {
	e := New(Config{})
	f := newFake()
	for _, src := range []string{
		"return 1", "return 'a' .. 'b' .. 1", "return {1,2,3.9,'a',false,nil,5}", "x = 1", "return y",
		"return redis.call('set', KEYS[1], ARGV[1])", "return redis.call('get', KEYS[1])",
		"return redis.call('incr', KEYS[1])", "return redis.pcall('incr', KEYS[1])", "error('hi')", "error({err='MY hi'})",
		"return string.rep('x', 3)", "return math.random(100)", "return tostring(1/3)", "return cjson.encode({1,2,{a=1}})",
		"return bit.band(0xff, 0x0f)", "string.foo = 1", "return rawset(_G, 'x', 1)", "return getmetatable('').__index.rep('ab', 2)",
		"getmetatable('').__index = {}", "return string.format('%5.2f|%d|%s|%q', 3.14159, 42, 'x', 'a\\nb')",
		"return ('abc'):gsub('%w', '%0%0')", "local t = {} for w in string.gmatch('one two', '%a+') do t[#t+1] = w end return t",
		"return pcall(redis.call, 'incr', KEYS[1])", "return {pcall(error, {err='x'})}",
	} {
		t.Logf("%-60s -> %s", src, render(evalWith(t, e, f, src, []string{"k"}, "v")))
	}
}
