package script

import (
	"context"
	"testing"
)

// client is a Redis client of the fake store that runs scripts as redis-py
// does (register_script: EVALSHA, EVAL on NOSCRIPT).
type client struct {
	t *testing.T
	e *Engine
	f *fakeCaller
}

func (c client) script(src string, keys []string, args ...string) Reply {
	c.t.Helper()
	req := Request{Caller: c.f}
	for _, k := range keys {
		req.Keys = append(req.Keys, []byte(k))
	}
	for _, a := range args {
		req.Args = append(req.Args, []byte(a))
	}
	rep, err := c.e.EvalSHA(context.Background(), SHA1Hex([]byte(src)), req)
	if err == nil && rep.Kind == Error && rep.Str == MsgNoScript {
		rep, err = c.e.Eval(context.Background(), []byte(src), req)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return rep
}

func (c client) cmd(args ...string) Reply {
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	rep, _ := c.f.Call(context.Background(), b)
	return rep
}

func expect(t *testing.T, what string, got Reply, want string) {
	t.Helper()
	if render(got) != want {
		t.Errorf("%s: got %q, want %q", what, render(got), want)
	}
}

// redis-py's Lock: acquire with SET NX PX, release and extend by token.
func TestRedisPyLock(t *testing.T) {
	f := newFake()
	e := New(Config{})
	a, b := client{t, e, f}, client{t, e, f}
	lock := []string{"lock:job"}
	expect(t, "A acquires", a.cmd("SET", "lock:job", "tokA", "NX", "PX", "10000"), "+OK ")
	expect(t, "B cannot acquire", b.cmd("SET", "lock:job", "tokB", "NX", "PX", "10000"), "$-1 ")
	expect(t, "B cannot release A's lock", b.script(redisPyRelease, lock, "tokB"), ":0 ")
	expect(t, "the lock is still A's", a.cmd("GET", "lock:job"), "$4 tokA ")
	expect(t, "B cannot extend A's lock", b.script(redisPyExtend, lock, "tokB", "5000", "0"), ":0 ")
	expect(t, "A extends its lock", a.script(redisPyExtend, lock, "tokA", "5000", "0"), ":1 ")
	if ttl := a.cmd("PTTL", "lock:job").Int; ttl <= 10000 || ttl > 15000 {
		t.Errorf("extended ttl %d", ttl)
	}
	expect(t, "A replaces its ttl", a.script(redisPyExtend, lock, "tokA", "3000", "1"), ":1 ")
	if ttl := a.cmd("PTTL", "lock:job").Int; ttl <= 0 || ttl > 3000 {
		t.Errorf("replaced ttl %d", ttl)
	}
	expect(t, "A reacquires", a.script(redisPyReacquire, lock, "tokA", "20000"), ":1 ")
	expect(t, "A releases", a.script(redisPyRelease, lock, "tokA"), ":1 ")
	expect(t, "the lock is gone", a.cmd("GET", "lock:job"), "$-1 ")
	expect(t, "releasing again", a.script(redisPyRelease, lock, "tokA"), ":0 ")
	expect(t, "B acquires now", b.cmd("SET", "lock:job", "tokB", "NX", "PX", "10000"), "+OK ")
	a.cmd("SET", "nottl", "tok")
	expect(t, "extend of a lock without ttl", a.script(redisPyExtend, []string{"nottl"}, "tok", "5000", "0"), ":0 ")
}

// redsync's compare-and-delete and touch.
func TestRedsyncScripts(t *testing.T) {
	f := newFake()
	e := New(Config{})
	c := client{t, e, f}
	lock := []string{"mutex"}
	c.cmd("SET", "mutex", "v1", "NX", "PX", "8000")
	expect(t, "delete with another value", c.script(redsyncDelete, lock, "v2"), ":0 ")
	expect(t, "touch with another value", c.script(redsyncTouch, lock, "v2", "9000"), ":0 ")
	expect(t, "touch", c.script(redsyncTouch, lock, "v1", "9000"), "+OK ")
	expect(t, "delete", c.script(redsyncDelete, lock, "v1"), ":1 ")
	expect(t, "delete of an expired lock", c.script(redsyncDeleteExpired, lock, "v1"), ":-1 ")
	c.cmd("SET", "mutex", "v3")
	expect(t, "delete (new form) with another value", c.script(redsyncDeleteExpired, lock, "v1"), ":0 ")
	expect(t, "delete (new form)", c.script(redsyncDeleteExpired, lock, "v3"), ":1 ")
	if len(e.Exists(SHA1Hex([]byte(redsyncDelete)))) != 1 || !e.Exists(SHA1Hex([]byte(redsyncDelete)))[0] {
		t.Error("the script was not cached for EVALSHA")
	}
}
