package script

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Caller runs the Redis commands of one script run. The server implements
// it: it knows the command table, the keys the run declared (KeySet) and
// whether the run is read-only (Script.ReadOnly).
type Caller interface {
	// Call runs one command of redis.call or redis.pcall. Its reply, an
	// error reply included, goes back to the script: redis.call raises an
	// error reply, redis.pcall returns it as {err=...}. A Caller refuses a
	// command as Redis's script client does, with the Msg* texts of this
	// package and UndeclaredKeyError. A non-nil error aborts the run at once:
	// no pcall in the script can catch it, and Run returns it (a server that
	// wants to start the run again inside a transaction at its first write
	// returns a sentinel error there).
	Call(ctx context.Context, args [][]byte) (Reply, error)
	// Wrote reports whether a command of this run has written: SCRIPT KILL
	// does not stop such a run (UNKILLABLE).
	Wrote() bool
}

// noCaller answers every command as unknown: a Request without a Caller.
type noCaller struct{}

func (noCaller) Call(context.Context, [][]byte) (Reply, error) {
	return ErrorReply(MsgUnknownCommand), nil
}
func (noCaller) Wrote() bool { return false }

// Request is one EVAL or EVALSHA (or EVAL_RO, EVALSHA_RO).
type Request struct {
	Keys     [][]byte // KEYS
	Args     [][]byte // ARGV
	ReadOnly bool     // EVAL_RO / EVALSHA_RO
	Caller   Caller
	// Deadline, when set, is when the run stops at the time limit, instead
	// of Config.Timeout after it starts: a server that runs a script again
	// inside a transaction gives the second run the first one's deadline.
	Deadline time.Time
}

var (
	errKilled  = errors.New("script killed by SCRIPT KILL")
	errTimeout = errors.New("script time limit reached")
)

// ReadOnly reports whether a run of s may not write: a _RO command, or a
// script whose shebang declares no-writes. The server's Caller then answers
// write commands with MsgWriteInReadOnly.
func (s *Script) ReadOnly(roCommand bool) bool {
	return roCommand || (s.Flags.Shebang && s.Flags.NoWrites)
}

// run is one execution of a script.
type run struct {
	script *Script
	req    Request
	ctx    context.Context
	cancel context.CancelCauseFunc

	resp       int // 2, or 3 after redis.setresp(3)
	rand       rand48
	cjson      cjsonConfig
	alloc      int64 // bytes the run made (strings, table entries)
	checked    int64 // alloc at the last memory check
	baseline   int64 // live heap at the first memory check, -1 before it
	before     int64 // alloc at the first memory check
	coroutines int
	logLines   int
}

func (r *run) stop(cause error) { r.cancel(cause) }

// Eval is EVAL: Script then Run.
func (e *Engine) Eval(ctx context.Context, body []byte, req Request) (Reply, error) {
	s, rep := e.Script(body)
	if s == nil {
		return rep, nil
	}
	return e.Run(ctx, s, req)
}

// EvalSHA is EVALSHA: NOSCRIPT for a sha the cache does not hold.
func (e *Engine) EvalSHA(ctx context.Context, sha string, req Request) (Reply, error) {
	s, ok := e.Lookup(sha)
	if !ok {
		return ErrorReply(MsgNoScript), nil
	}
	return e.Run(ctx, s, req)
}

// Run runs s within the time limit and answers its reply: the script's
// return value converted as Redis converts it, or an error reply (a Lua
// error, the time limit, SCRIPT KILL). The error is non-nil only when the
// Caller aborted the run or ctx ended: it is that error (context.Cause).
func (e *Engine) Run(ctx context.Context, s *Script, req Request) (Reply, error) {
	if req.ReadOnly && s.Flags.Shebang && !s.Flags.NoWrites {
		return ErrorReply(MsgWriteFlagRO), nil
	}
	if req.Caller == nil {
		req.Caller = noCaller{}
	}
	base, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	deadline := req.Deadline
	if deadline.IsZero() {
		deadline = time.Now().Add(e.cfg.Timeout)
	}
	tctx, tcancel := context.WithDeadlineCause(base, deadline, errTimeout)
	defer tcancel()
	r := &run{script: s, req: req, ctx: tctx, cancel: cancel, resp: 2, cjson: defaultCjson(), baseline: -1}
	r.rand.reset()
	e.register(r)
	defer e.unregister(r)
	v := e.getVM()
	rep, ok, broken := v.safeExec(r)
	if !broken && ok && v.L.GetTop() == 0 && tctx.Err() == nil {
		e.putVM(v)
	} else {
		v.L.Close()
	}
	if ok {
		return rep, nil
	}
	switch cause := context.Cause(tctx); {
	case cause == nil:
		return rep, nil
	case errors.Is(cause, errTimeout):
		return timeoutError(s.SHA, e.cfg.Timeout), nil
	case errors.Is(cause, errKilled):
		return ErrorReply(MsgKilled + " script: " + s.SHA), nil
	default:
		return Reply{}, cause
	}
}

// safeExec is exec, and an error reply if gopher-lua panics past its own
// PCall: it does when an error leaves no room on the value stack to call the
// error handler (a script that fills the stack). The state is then broken.
func (v *vm) safeExec(r *run) (rep Reply, ok, broken bool) {
	defer func() {
		if p := recover(); p != nil {
			msg := fmt.Sprint(p)
			if aerr, isAPI := p.(*lua.ApiError); isAPI {
				msg, _ = stringOf(aerr.Object)
			}
			if strings.Contains(msg, "registry overflow") || strings.Contains(msg, "callstack overflow") {
				msg = "stack overflow"
			}
			rep, ok, broken = ErrorReply(errorText(fmt.Sprintf("ERR Error running script %s, %.100s", r.script.SHA, msg))), false, true
		}
	}()
	rep, ok = v.exec(r)
	return rep, ok, false
}

// exec runs r on v and converts its outcome; ok is false when the script
// raised an error.
func (v *vm) exec(r *run) (Reply, bool) {
	L := v.L
	v.run = r
	defer func() { v.run = nil }()
	L.Env = v.env
	v.globals.RawSetString("KEYS", stringsTable(L, r.req.Keys))
	v.globals.RawSetString("ARGV", stringsTable(L, r.req.Args))
	defer v.globals.RawSetString("ARGV", lua.LNil)
	defer v.globals.RawSetString("KEYS", lua.LNil)
	L.SetContext(r.ctx)
	defer L.RemoveContext()
	L.Push(L.NewFunctionFromProto(r.script.proto))
	if err := L.PCall(0, 1, v.handler); err != nil {
		return v.errorReply(errorObject(err)), false
	}
	val := L.Get(-1)
	L.Pop(1)
	b := replyBuilder{resp: r.resp, maxBytes: v.e.cfg.MaxReplyBytes}
	rep := b.toReply(val, 0)
	if b.over {
		return tooLarge(v.e.cfg.MaxReplyBytes), true
	}
	return rep, true
}

func stringsTable(L *lua.LState, list [][]byte) *lua.LTable {
	t := L.CreateTable(len(list), 0)
	for i, s := range list {
		t.RawSetInt(i+1, lua.LString(s))
	}
	return t
}

// errorHandler is Redis's __redis__err__handler: it makes the error a table
// {err=...} ("ERR " before a string error) and adds the source and line of
// the Lua function that raised it (of its caller when a library function
// raised it).
func (v *vm) errorHandler(L *lua.LState) int {
	errv := L.Get(1)
	t, ok := errv.(*lua.LTable)
	if _, proxy := v.backing[t]; !ok || proxy {
		t = L.NewTable()
		s, isStr := stringOf(errv)
		if !isStr {
			s = lua.LVAsString(L.ToStringMeta(errv))
		}
		t.RawSetString("err", lua.LString("ERR "+luaArgError(s)))
	}
	if source, line, found := errorPosition(L); found {
		t.RawSetString("source", lua.LString(source))
		t.RawSetString("line", lua.LNumber(line))
	}
	L.Push(t)
	return 1
}

// errorPosition finds the frame that raised the error being handled: the
// first below the handler, or the one below that when the first is a Go
// (library) function.
func errorPosition(L *lua.LState) (string, int, bool) {
	for level := 1; level <= 2; level++ {
		dbg, ok := L.GetStack(level)
		if !ok {
			return "", 0, false
		}
		if _, err := L.GetInfo("Sl", dbg, nil); err != nil {
			return "", 0, false
		}
		if dbg.What == "G" {
			continue
		}
		source := dbg.Source
		if source == chunkName {
			source = "@" + chunkName
		}
		return source, dbg.CurrentLine, true
	}
	return "", 0, false
}

// errorReply is the reply for an error the handler shaped, as
// luaCallFunction writes it: "<err> script: <sha>, on <source>:<line>."
func (v *vm) errorReply(obj lua.LValue) Reply {
	t, ok := obj.(*lua.LTable)
	if !ok {
		msg, isStr := stringOf(obj)
		if !isStr {
			msg = "execution failure"
		}
		if msg == "lua callstack overflow" { // no frame was left for the error handler
			msg = "stack overflow"
		}
		return ErrorReply(errorText(fmt.Sprintf("ERR Error running script %s, %.100s", v.run.script.SHA, msg)))
	}
	msg, ok := stringOf(t.RawGetString("err"))
	if !ok {
		msg = "ERR the script raised an error object without an 'err' field"
	}
	source, sok := stringOf(t.RawGetString("source"))
	line, lok := stringOf(t.RawGetString("line"))
	if sok && lok {
		msg += fmt.Sprintf(" script: %s, on %s:%s.", v.run.script.SHA, source, line)
	}
	return ErrorReply(errorText(msg))
}
