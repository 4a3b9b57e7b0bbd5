package script

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// runAsync starts src and returns a channel with its reply and error.
func runAsync(e *Engine, c Caller, src string) chan [2]any {
	done := make(chan [2]any, 1)
	go func() {
		rep, err := e.Eval(context.Background(), []byte(src), Request{Caller: c})
		done <- [2]any{rep, err}
	}()
	return done
}

func waitRunning(t *testing.T, e *Engine, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.Running() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d runs in progress, want %d", e.Running(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestKillNotBusy(t *testing.T) {
	if rep := New(Config{}).Kill(); rep.Kind != Error || rep.Str != "NOTBUSY No scripts in execution right now." {
		t.Errorf("Kill with nothing running: %s", render(rep))
	}
}

// SCRIPT KILL stops a run that has not written, whatever pcall it is in.
func TestKillStopsReadOnlyScript(t *testing.T) {
	e := New(Config{Timeout: 10 * time.Second})
	for _, src := range []string{
		"while true do end",
		"while true do pcall(function() while true do end end) end",
		"local i = 0 while true do i = i + 1 redis.call('get', 'k') end",
	} {
		done := runAsync(e, newFake(), src)
		waitRunning(t, e, 1)
		start := time.Now()
		if rep := e.Kill(); rep.Kind != Status || rep.Str != "OK" {
			t.Fatalf("Kill: %s", render(rep))
		}
		res := <-done
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s stopped %v after SCRIPT KILL", src, d)
		}
		rep, err := res[0].(Reply), res[1]
		if err != nil || !strings.HasPrefix(rep.Str, "ERR Script killed by user with SCRIPT KILL...") {
			t.Errorf("%s: %s, %v", src, render(rep), err)
		}
		waitRunning(t, e, 0)
	}
}

// A run that has written cannot be killed; it ends at the time limit.
func TestKillRefusesScriptThatWrote(t *testing.T) {
	e := New(Config{Timeout: 500 * time.Millisecond})
	f := newFake()
	done := runAsync(e, f, "redis.call('set', 'k', 'v') while true do end")
	waitRunning(t, e, 1)
	for !f.Wrote() {
		time.Sleep(time.Millisecond)
	}
	if rep := e.Kill(); rep.Kind != Error || !strings.HasPrefix(rep.Str, "UNKILLABLE Sorry the script already executed write commands") {
		t.Errorf("Kill of a script that wrote: %s", render(rep))
	}
	res := <-done
	if rep := res[0].(Reply); !strings.Contains(rep.Str, "Script timed out") {
		t.Errorf("the script ended with %s", render(rep))
	}
}

// abortCaller aborts the run at its first write, as a server that starts a
// script again inside a transaction does.
type abortCaller struct{ *fakeCaller }

var errRestart = errors.New("restart in a transaction")

func (c abortCaller) Call(ctx context.Context, args [][]byte) (Reply, error) {
	if strings.EqualFold(string(args[0]), "set") {
		return Reply{}, errRestart
	}
	return c.fakeCaller.Call(ctx, args)
}

// A Caller's error ends the run at once: no pcall catches it, Run returns it.
func TestCallerAbort(t *testing.T) {
	e := New(Config{MaxIdleStates: 1})
	for _, src := range []string{
		"redis.call('set', 'k', 'v') return 1",
		"redis.pcall('set', 'k', 'v') return 1",
		"pcall(redis.call, 'set', 'k', 'v') return 1",
		"local ok = pcall(function() redis.call('set', 'k', 'v') end) while true do end",
		"local co = coroutine.wrap(function() redis.call('set', 'k', 'v') end) pcall(co) return 2",
		"xpcall(function() redis.call('set', 'k', 'v') end, function(e) return e end) return 3",
	} {
		start := time.Now()
		rep, err := e.Eval(context.Background(), []byte(src), Request{Caller: abortCaller{newFake()}})
		if !errors.Is(err, errRestart) {
			t.Errorf("%s: %s, %v; want the Caller's error", src, render(rep), err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("%s: aborted after %v", src, d)
		}
	}
	// The engine still runs scripts afterwards.
	if rep := evalWith(t, e, newFake(), "return redis.call('ping')", nil); render(rep) != "+PONG " {
		t.Errorf("after aborts: %s", render(rep))
	}
}

// A run whose context ends stops and returns the context's error.
func TestContextCancel(t *testing.T) {
	e := New(Config{Timeout: 10 * time.Second})
	ctx, cancel := context.WithCancelCause(context.Background())
	cause := errors.New("server shutting down")
	go func() {
		waitRunning(t, e, 1)
		cancel(cause)
	}()
	_, err := e.Eval(ctx, []byte("while true do end"), Request{Caller: newFake()})
	if !errors.Is(err, cause) {
		t.Errorf("got %v, want the context's cause", err)
	}
}

// Shebang flags: no-writes makes a run read-only; EVAL_RO refuses a script
// that may write; bad shebangs answer Redis's errors.
func TestShebang(t *testing.T) {
	e := New(Config{})
	s, rep := e.Script([]byte("#!lua flags=no-writes,allow-oom\nreturn redis.call('get', KEYS[1])"))
	if s == nil || !s.Flags.Shebang || !s.Flags.NoWrites || !s.Flags.AllowOOM || !s.ReadOnly(false) {
		t.Fatalf("flags: %+v %s", s, render(rep))
	}
	if s, _ := e.Script([]byte("return 1")); s.ReadOnly(false) || !s.ReadOnly(true) {
		t.Error("a script without shebang is read-only only under EVAL_RO")
	}
	rep, _ = e.Eval(context.Background(), []byte("#!lua\nerror('line two')"), Request{Caller: newFake()})
	if !strings.Contains(rep.Str, "user_script:2: line two") {
		t.Errorf("line numbers after a shebang: %s", render(rep))
	}
	rep, _ = e.Eval(context.Background(), []byte("#!lua\nreturn 1"), Request{Caller: newFake(), ReadOnly: true})
	if rep.Str != MsgWriteFlagRO {
		t.Errorf("EVAL_RO of a script with write flag: %s", render(rep))
	}
	for body, want := range map[string]string{
		"#!lua":                        "ERR Invalid script shebang",
		"#!python\nreturn 1":           "ERR Unexpected engine in script shebang: #!python",
		"#!lua flags=no-writes,bad\n1": "ERR Unexpected flag in script shebang: bad",
		"#!lua name=x\nreturn 1":       "ERR Unknown lua shebang option: name=x",
	} {
		if _, rep := e.Load([]byte(body)); rep.Str != want {
			t.Errorf("%q: %s, want %s", body, render(rep), want)
		}
	}
	f := newFake()
	f.readOnly = true
	rep, _ = e.Eval(context.Background(), []byte("return redis.call('set', 'k', 'v')"), Request{Caller: f, ReadOnly: true})
	if !strings.HasPrefix(rep.Str, "ERR Write commands are not allowed from read-only scripts. script: ") {
		t.Errorf("write in a read-only run: %s", render(rep))
	}
}

// A run given a deadline stops there, with the time limit's reply.
func TestRequestDeadline(t *testing.T) {
	e := New(Config{Timeout: 10 * time.Second})
	start := time.Now()
	rep, err := e.Eval(context.Background(), []byte("while true do end"),
		Request{Caller: newFake(), Deadline: start.Add(200 * time.Millisecond)})
	if err != nil || !strings.Contains(rep.Str, "Script timed out") || time.Since(start) > 2*time.Second {
		t.Errorf("%s %v after %v", render(rep), err, time.Since(start))
	}
}
