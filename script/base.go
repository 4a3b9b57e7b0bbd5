package script

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// errorObject is the value a failed PCall raised, an argument error worded
// as Lua's.
func errorObject(err error) lua.LValue {
	if aerr, ok := err.(*lua.ApiError); ok {
		if s, ok := aerr.Object.(lua.LString); ok {
			return lua.LString(luaArgError(string(s)))
		}
		return aerr.Object
	}
	return lua.LString(err.Error())
}

// gopherArgError matches gopher-lua's "bad argument #1 to f (...)".
var gopherArgError = regexp.MustCompile(`bad argument #(\d+) to ([^\s']+) \(`)

// luaArgError words gopher-lua's argument errors as Lua's luaL_argerror
// does: "bad argument #1 to 'f' (...)", '?' for an unnamed function.
func luaArgError(s string) string {
	if !strings.Contains(s, "bad argument #") {
		return s
	}
	return gopherArgError.ReplaceAllStringFunc(s, func(m string) string {
		sub := gopherArgError.FindStringSubmatch(m)
		name := sub[2]
		if name == "(anonymous)" {
			name = "?"
		}
		return "bad argument #" + sub[1] + " to '" + name + "' ("
	})
}

// stopping re-raises err when the run is being stopped (time limit, SCRIPT
// KILL, an aborting Caller), so no pcall can catch the stop.
func (v *vm) stopping(err error) {
	if v.run != nil && v.run.ctx.Err() != nil {
		v.L.Error(errorObject(err), 0)
	}
}

// pcall is Redis's pcall: an error table raised by redis.call (or by
// error{err=...}) comes back as its message, as before Redis 7.
func (v *vm) pcall(L *lua.LState) int {
	fn := L.CheckAny(1)
	if fn.Type() != lua.LTFunction && L.GetMetaField(fn, "__call").Type() != lua.LTFunction {
		L.Push(lua.LFalse)
		L.Push(lua.LString("attempt to call a " + fn.Type().String() + " value"))
		return 2
	}
	if err := L.PCall(L.GetTop()-1, lua.MultRet, nil); err != nil {
		v.stopping(err)
		obj := errorObject(err)
		if t, ok := obj.(*lua.LTable); ok {
			if msg, ok := t.RawGetString("err").(lua.LString); ok {
				obj = msg
			}
		}
		L.Push(lua.LFalse)
		L.Push(obj)
		return 2
	}
	L.Insert(lua.LTrue, 1)
	return L.GetTop()
}

// xpcall is Lua 5.1's xpcall(f, handler).
func (v *vm) xpcall(L *lua.LState) int {
	fn := L.CheckFunction(1)
	handler := L.CheckFunction(2)
	top := L.GetTop()
	L.Push(fn)
	if err := L.PCall(0, lua.MultRet, handler); err != nil {
		v.stopping(err)
		L.Push(lua.LFalse)
		L.Push(errorObject(err))
		return 2
	}
	L.Insert(lua.LTrue, top+1)
	return L.GetTop() - top
}

// loadstring compiles source text, bounded and rewritten as scripts are; it
// refuses precompiled chunks.
func (v *vm) loadstring(L *lua.LState) int {
	src := L.CheckString(1)
	return v.loadChunk(L, src, L.OptString(2, src))
}

// load is Lua 5.1's load(reader [, chunkname]).
func (v *vm) load(L *lua.LState) int {
	fn := L.CheckFunction(1)
	name := L.OptString(2, "=(load)")
	var b strings.Builder
	for {
		L.Push(fn)
		L.Call(0, 1)
		piece := L.Get(-1)
		L.Pop(1)
		if piece == lua.LNil {
			break
		}
		s, ok := piece.(lua.LString)
		if !ok {
			L.Push(lua.LNil)
			L.Push(lua.LString("reader function must return a string"))
			return 2
		}
		if len(s) == 0 {
			break
		}
		if b.Len()+len(s) > v.e.cfg.MaxScriptBytes {
			L.RaiseError("chunk larger than the script size limit of %d bytes", v.e.cfg.MaxScriptBytes)
		}
		b.WriteString(string(s))
	}
	return v.loadChunk(L, b.String(), name)
}

func (v *vm) loadChunk(L *lua.LState, src, name string) int {
	fail := func(msg string) int {
		L.Push(lua.LNil)
		L.Push(lua.LString(msg))
		return 2
	}
	if strings.HasPrefix(src, "\x1bLua") {
		return fail("loading precompiled chunks is not allowed")
	}
	if len(src) > v.e.cfg.MaxScriptBytes {
		return fail("chunk larger than the script size limit")
	}
	proto, err := compile([]byte(src), chunkID(name))
	if err != nil {
		return fail(err.Error())
	}
	L.Push(L.NewFunctionFromProto(proto))
	return 1
}

// chunkID names a chunk as Lua 5.1's luaO_chunkid does: "=name" and "@name"
// as name, source text as [string "first line..."].
func chunkID(name string) string {
	if strings.HasPrefix(name, "=") || strings.HasPrefix(name, "@") {
		return name[1:]
	}
	line, _, cut := strings.Cut(name, "\n")
	if len(line) > 40 {
		line, cut = line[:40], true
	}
	if cut {
		line += "..."
	}
	return `[string "` + line + `"]`
}

// collectGarbage answers as Lua 5.1 does without running a collection: a
// script must not make the whole process collect.
func collectGarbage(L *lua.LState) int {
	switch L.OptString(1, "collect") {
	case "count":
		L.Push(lua.LNumber(0))
	case "step":
		L.Push(lua.LFalse)
	case "collect", "stop", "restart", "setpause", "setstepmul":
		L.Push(lua.LNumber(0))
	default:
		L.ArgError(1, "invalid option '"+L.CheckString(1)+"'")
	}
	return 1
}

func gcInfo(L *lua.LState) int {
	L.Push(lua.LNumber(0))
	return 1
}

// tostring formats numbers as Lua 5.1 does (%.14g).
func (v *vm) tostring(L *lua.LState) int {
	val := L.CheckAny(1)
	if n, ok := val.(lua.LNumber); ok {
		L.Push(lua.LString(numberString(n)))
		return 1
	}
	L.Push(L.ToStringMeta(val))
	return 1
}

// numberString is Lua 5.1's number-to-string conversion (LUA_NUMBER_FMT %.14g).
func numberString(n lua.LNumber) string { return formatG(float64(n), 14) }

func (v *vm) rawget(L *lua.LState) int {
	t := v.unproxy(L.CheckTable(1))
	L.Push(t.RawGet(L.CheckAny(2)))
	return 1
}

func (v *vm) rawset(L *lua.LState) int {
	t := v.checkWritable(1)
	k := L.CheckAny(2)
	if k == lua.LNil {
		L.RaiseError("table index is nil")
	}
	t.RawSet(k, L.CheckAny(3))
	L.SetTop(1)
	return 1
}

func (v *vm) setmetatable(L *lua.LState) int {
	t := v.checkWritable(1)
	L.CheckTypes(2, lua.LTNil, lua.LTTable)
	if mt, ok := t.Metatable.(*lua.LTable); ok && mt.RawGetString("__metatable") != lua.LNil {
		L.RaiseError("cannot change a protected metatable")
	}
	t.Metatable = L.Get(2)
	L.SetTop(1)
	return 1
}

func (v *vm) next(L *lua.LState) int {
	t := v.unproxy(L.CheckTable(1))
	k, val := t.Next(L.Get(2))
	if k == lua.LNil {
		L.Push(lua.LNil)
		return 1
	}
	L.Push(k)
	L.Push(val)
	return 2
}

// pairs(t) returns next, t, nil; next sees through read-only proxies.
func (v *vm) pairs(L *lua.LState) int {
	t := L.CheckTable(1)
	L.Push(L.Get(lua.UpvalueIndex(1)))
	L.Push(t)
	L.Push(lua.LNil)
	return 3
}

func (v *vm) ipairs(L *lua.LState) int {
	t := v.unproxy(L.CheckTable(1))
	L.Push(L.Get(lua.UpvalueIndex(1)))
	L.Push(t)
	L.Push(lua.LNumber(0))
	return 3
}

func ipairsNext(L *lua.LState) int {
	t := L.CheckTable(1)
	i := L.CheckInt(2) + 1
	val := t.RawGetInt(i)
	if val == lua.LNil {
		return 0
	}
	L.Push(lua.LNumber(i))
	L.Push(val)
	return 2
}

// getmetatable hides the metatables of read-only proxies (Redis's library
// tables have none; _G's is read-only).
func (v *vm) getmetatable(L *lua.LState) int {
	obj := L.CheckAny(1)
	if t, ok := obj.(*lua.LTable); ok {
		if _, proxy := v.backing[t]; proxy {
			if t == v.env {
				L.Push(v.globalsMeta)
			} else {
				L.Push(lua.LNil)
			}
			return 1
		}
	}
	L.Push(L.GetMetatable(obj))
	return 1
}

// luaError is Lua 5.1's error(message [, level]): a string (or number)
// message gets the position of the function at level.
func (v *vm) luaError(L *lua.LState) int {
	obj := L.Get(1)
	level := L.OptInt(2, 1)
	if s, ok := stringOf(obj); ok && level > 0 {
		obj = lua.LString(where(L, level) + s)
	}
	L.Error(obj, 0)
	return 0
}

// where is luaL_where: "source:line: " of the function at level (1 is the
// caller of the running library function), "" for a Go function.
func where(L *lua.LState, level int) string {
	dbg, ok := L.GetStack(level)
	if !ok {
		return ""
	}
	if _, err := L.GetInfo("Sl", dbg, nil); err != nil || dbg.CurrentLine <= 0 {
		return ""
	}
	return fmt.Sprintf("%s:%d: ", dbg.Source, dbg.CurrentLine)
}

// luaToNumber is Lua 5.1's tonumber(e [, base]).
func luaToNumber(L *lua.LState) int {
	val := L.CheckAny(1)
	base := L.OptInt(2, 10)
	if base == 10 {
		switch x := val.(type) {
		case lua.LNumber:
			L.Push(x)
			return 1
		case lua.LString:
			if n, ok := luaStringToNumber(string(x)); ok {
				L.Push(lua.LNumber(n))
				return 1
			}
		}
		L.Push(lua.LNil)
		return 1
	}
	if base < 2 || base > 36 {
		L.ArgError(2, "base out of range")
	}
	s := strings.ToLower(strings.TrimSpace(L.CheckString(1)))
	if n, err := strconv.ParseUint(s, base, 64); err == nil && s != "" && s[0] != '+' {
		L.Push(lua.LNumber(n))
		return 1
	}
	L.Push(lua.LNil)
	return 1
}
