package script

import (
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"
	lua "github.com/yuin/gopher-lua"
)

// Redis's log levels (LL_DEBUG ... LL_WARNING).
const (
	logDebug = iota
	logVerbose
	logNotice
	logWarning
)

// redisModule builds the redis table as Redis 7.0 has it.
func (v *vm) redisModule() *lua.LTable {
	L := v.L
	t := L.NewTable()
	for name, fn := range map[string]lua.LGFunction{
		"call":               func(L *lua.LState) int { return v.redisCall(L, true) },
		"pcall":              func(L *lua.LState) int { return v.redisCall(L, false) },
		"sha1hex":            redisSha1hex,
		"error_reply":        redisErrorReply,
		"status_reply":       redisStatusReply,
		"log":                v.redisLog,
		"setresp":            v.redisSetresp,
		"set_repl":           redisSetRepl,
		"replicate_commands": func(L *lua.LState) int { L.Push(lua.LTrue); return 1 },
		"breakpoint":         func(L *lua.LState) int { L.Push(lua.LFalse); return 1 },
		"debug":              func(L *lua.LState) int { return 0 },
		"acl_check_cmd":      v.redisACLCheck,
	} {
		t.RawSetString(name, L.NewFunction(fn))
	}
	for name, n := range map[string]int{
		"LOG_DEBUG": logDebug, "LOG_VERBOSE": logVerbose, "LOG_NOTICE": logNotice, "LOG_WARNING": logWarning,
		"REPL_NONE": 0, "REPL_AOF": 1, "REPL_SLAVE": 2, "REPL_REPLICA": 2, "REPL_ALL": 3,
	} {
		t.RawSetString(name, lua.LNumber(n))
	}
	t.RawSetString("REDIS_VERSION", lua.LString(v.e.cfg.RedisVersion))
	t.RawSetString("REDIS_VERSION_NUM", lua.LNumber(versionNum(v.e.cfg.RedisVersion)))
	return t
}

// versionNum is REDIS_VERSION_NUM: 0x00MMmmpp.
func versionNum(version string) int {
	n := 0
	parts := strings.SplitN(version, ".", 3)
	for i := 0; i < 3; i++ {
		p := 0
		if i < len(parts) {
			p, _ = strconv.Atoi(parts[i])
		}
		n = n<<8 | (p & 0xff)
	}
	return n
}

// redisCall is redis.call (raise true) and redis.pcall.
func (v *vm) redisCall(L *lua.LState, raise bool) int {
	args, msg := commandArgs(L)
	L.SetTop(0)
	if msg != "" {
		return v.pushError(L, msg, raise)
	}
	r := v.run
	rep, err := r.req.Caller.Call(r.ctx, args)
	if err != nil {
		r.stop(err)
		L.RaiseError("script aborted: %v", err)
	}
	if rep.Kind == Error {
		return v.pushError(L, "-"+rep.Str, raise)
	}
	L.Push(v.toLua(L, rep, 0))
	return 1
}

// commandArgs converts redis.call's arguments as luaArgsToRedisArgv does:
// numbers with %.17g, strings as they are, anything else refused.
func commandArgs(L *lua.LState) ([][]byte, string) {
	n := L.GetTop()
	if n == 0 {
		return nil, msgNoArgs
	}
	args := make([][]byte, n)
	for i := 1; i <= n; i++ {
		switch x := L.Get(i).(type) {
		case lua.LString:
			args[i-1] = []byte(x)
		case lua.LNumber:
			args[i-1] = []byte(formatG(float64(x), 17))
		default:
			return nil, msgBadArgs
		}
	}
	return args, ""
}

// pushError pushes the error table of msg (luaPushErrorBuff) and raises it
// for redis.call, returns it for redis.pcall.
func (v *vm) pushError(L *lua.LState, msg string, raise bool) int {
	t := errorTable(L, msg)
	if raise {
		L.Error(t, 0)
	}
	L.Push(t)
	return 1
}

// errorTable is Redis's luaPushErrorBuff: "-CODE msg" keeps its code,
// "-msg" (no space) or "msg" gets ERR; a trailing newline is trimmed.
func errorTable(L *lua.LState, buf string) *lua.LTable {
	var code, msg string
	if rest, ok := strings.CutPrefix(buf, "-"); ok {
		if c, m, found := strings.Cut(rest, " "); found {
			code, msg = c, m
		} else {
			code, msg = "ERR", rest
		}
	} else {
		code, msg = "ERR", buf
	}
	msg = strings.Trim(msg, "\r\n")
	t := L.NewTable()
	t.RawSetString("err", lua.LString(code+" "+msg))
	return t
}

func redisSha1hex(L *lua.LState) int {
	if L.GetTop() != 1 {
		L.Error(errorTable(L, "wrong number of arguments"), 0)
	}
	s, _ := stringOf(L.Get(1))
	L.Push(lua.LString(SHA1Hex([]byte(s))))
	return 1
}

// redisErrorReply is redis.error_reply: a bad argument returns (does not
// raise) an error table, as Redis's does.
func redisErrorReply(L *lua.LState) int {
	s, ok := L.Get(1).(lua.LString)
	if L.GetTop() != 1 || !ok {
		L.Push(errorTable(L, msgWrongArgs))
		return 1
	}
	msg := string(s)
	if !strings.HasPrefix(msg, "-") {
		msg = "-" + msg
	}
	L.Push(errorTable(L, msg))
	return 1
}

func redisStatusReply(L *lua.LState) int {
	s, ok := L.Get(1).(lua.LString)
	if L.GetTop() != 1 || !ok {
		L.Push(errorTable(L, msgWrongArgs))
		return 1
	}
	t := L.NewTable()
	t.RawSetString("ok", s)
	L.Push(t)
	return 1
}

// redisLog is redis.log(level, ...) to the engine's logger, within
// Config.MaxLogLines lines a run.
func (v *vm) redisLog(L *lua.LState) int {
	n := L.GetTop()
	if n < 2 {
		L.Error(errorTable(L, "redis.log() requires two arguments or more."), 0)
	}
	lv, ok := L.Get(1).(lua.LNumber)
	if !ok {
		L.Error(errorTable(L, "First argument must be a number (log level)."), 0)
	}
	level := int(lv)
	if level < logDebug || level > logWarning {
		L.Error(errorTable(L, "Invalid debug level."), 0)
	}
	r := v.run
	if r.logLines++; r.logLines > v.e.cfg.MaxLogLines {
		if r.logLines == v.e.cfg.MaxLogLines+1 {
			v.e.log.Warn("script log lines past the limit of a run are dropped", "script", r.script.SHA, "limit", v.e.cfg.MaxLogLines)
		}
		return 0
	}
	parts := make([]string, 0, n-1)
	for i := 2; i <= n; i++ {
		if s, ok := stringOf(L.Get(i)); ok {
			parts = append(parts, s)
		}
	}
	msg := truncate(strings.Join(parts, " "), maxLogBytes)
	v.e.log.Log(hclogLevel(level), msg, "script", r.script.SHA)
	return 0
}

// maxLogBytes bounds one redis.log line.
const maxLogBytes = 4096

func hclogLevel(level int) hclog.Level {
	switch level {
	case logDebug:
		return hclog.Debug
	case logVerbose:
		return hclog.Debug
	case logNotice:
		return hclog.Info
	}
	return hclog.Warn
}

// redisSetresp is redis.setresp(2|3): with 3, nulls the Caller answers
// reach the script as nil instead of false, and booleans the script returns
// are RESP3 booleans.
func (v *vm) redisSetresp(L *lua.LState) int {
	if L.GetTop() != 1 {
		L.Error(errorTable(L, "redis.setresp() requires one argument."), 0)
	}
	resp := int(lua.LVAsNumber(L.Get(1)))
	if resp != 2 && resp != 3 {
		L.Error(errorTable(L, "RESP version must be 2 or 3."), 0)
	}
	v.run.resp = resp
	return 0
}

// redisSetRepl is redis.set_repl: replication is not pgmirror's business,
// so it only checks its argument as Redis does.
func redisSetRepl(L *lua.LState) int {
	if L.GetTop() != 1 {
		L.Error(errorTable(L, "redis.set_repl() requires two arguments."), 0)
	}
	if flags := int(lua.LVAsNumber(L.Get(1))); flags&^3 != 0 {
		L.Error(errorTable(L, "Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE."), 0)
	}
	return 0
}

// redisACLCheck is redis.acl_check_cmd: pgmirror has no ACLs, so every
// command is allowed; the arguments are checked as Redis checks them.
func (v *vm) redisACLCheck(L *lua.LState) int {
	if _, msg := commandArgs(L); msg != "" {
		L.Error(errorTable(L, msg), 0)
	}
	L.Push(lua.LTrue)
	return 1
}
