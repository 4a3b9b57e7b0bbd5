package script

import (
	lua "github.com/yuin/gopher-lua"
)

// vm is one Lua state set up as Redis sets up its scripting state. A vm runs
// one script at a time; the engine keeps idle vms in a pool. Every table
// reachable from the globals is replaced by a read-only proxy before any
// script runs, so no run can change what a later run on the same vm sees.
type vm struct {
	e       *Engine
	L       *lua.LState
	globals *lua.LTable                 // the globals themselves, behind env
	env     *lua.LTable                 // the read-only proxy scripts see as _G
	backing map[*lua.LTable]*lua.LTable // read-only proxy -> the table behind it
	handler *lua.LFunction              // error handler of a run (Redis's __redis__err__handler)
	// globalsMeta is what getmetatable(_G) returns: a read-only view of the
	// metatable that makes reading an undefined global an error.
	globalsMeta *lua.LTable
	null        *lua.LUserData // cjson.null
	run         *run           // the run in progress, nil between runs
}

// newVM builds a state: Redis's libraries and globals, then protection.
func newVM(e *Engine) *vm {
	L := lua.NewState(lua.Options{
		SkipOpenLibs:        true,
		CallStackSize:       e.cfg.MaxCallDepth,
		RegistrySize:        1024,
		RegistryGrowStep:    1024,
		RegistryMaxSize:     e.cfg.MaxStackSlots,
		MinimizeStackMemory: true,
	})
	v := &vm{e: e, L: L, globals: L.G.Global, backing: map[*lua.LTable]*lua.LTable{}}
	for _, open := range []lua.LGFunction{lua.OpenBase, lua.OpenTable, lua.OpenString, lua.OpenMath, lua.OpenCoroutine} {
		L.Push(L.NewFunction(open))
		L.Call(0, 0)
	}
	v.setupBase()
	v.setupString()
	v.setupTable()
	v.setupMath()
	v.setupCoroutine()
	v.globals.RawSetString("cjson", v.cjsonModule())
	v.globals.RawSetString("bit", v.bitModule())
	v.globals.RawSetString("redis", v.redisModule())
	v.globals.RawSetString(concatName, L.NewFunction(v.concat))
	v.handler = L.NewFunction(v.errorHandler)
	v.protectGlobals()
	return v
}

// Globals Redis 7.0 does not give scripts (7.0.15 removed getfenv, setfenv
// and newproxy), and gopher-lua's own extras.
var removedGlobals = []string{
	"dofile", "loadfile", "print", "_printregs", "module", "require", "getfenv", "setfenv",
	"newproxy", "_GOPHER_LUA_VERSION", "channel", "package", "os", "io", "debug",
}

func (v *vm) setupBase() {
	g, L := v.globals, v.L
	for _, name := range removedGlobals {
		g.RawSetString(name, lua.LNil)
	}
	set := func(name string, fn lua.LGFunction) { g.RawSetString(name, L.NewFunction(fn)) }
	set("pcall", v.pcall)
	set("xpcall", v.xpcall)
	set("loadstring", v.loadstring)
	set("load", v.load)
	set("collectgarbage", collectGarbage)
	set("gcinfo", gcInfo)
	set("tostring", v.tostring)
	set("rawget", v.rawget)
	set("rawset", v.rawset)
	set("setmetatable", v.setmetatable)
	set("next", v.next)
	set("error", v.luaError)
	set("tonumber", luaToNumber)
	set("getmetatable", v.getmetatable)
	g.RawSetString("pairs", L.NewClosure(v.pairs, L.NewFunction(v.next)))
	g.RawSetString("ipairs", L.NewClosure(v.ipairs, L.NewFunction(ipairsNext)))
	g.RawSetString("_VERSION", lua.LString("Lua 5.1"))
}

func (v *vm) setupMath() {
	m := v.globals.RawGetString("math").(*lua.LTable)
	m.RawSetString("random", v.L.NewFunction(v.mathRandom))
	m.RawSetString("randomseed", v.L.NewFunction(v.mathRandomseed))
}

// protectGlobals puts every table reachable from the globals behind a
// read-only proxy, makes reading an undefined global an error, and makes
// the proxy the environment of everything that runs from now on.
func (v *vm) protectGlobals() {
	L := v.L
	missing := L.NewTable()
	missing.RawSetString("__index", L.NewFunction(func(L *lua.LState) int {
		L.RaiseError(msgNoGlobal, lua.LVAsString(L.Get(2)))
		return 0
	}))
	v.env = v.protect(v.globals)
	v.globalsMeta = v.protect(missing)
	v.globals.Metatable = missing
	v.globals.RawSetString("_G", v.env)
	// Strings index the string library through their own metatable, which
	// getmetatable('') hands out: it is read-only too.
	strmt := L.NewTable()
	strmt.RawSetString("__index", v.globals.RawGetString("string"))
	strmt.RawSetString("__metatable", v.protect(strmt))
	L.SetMetatable(lua.LString(""), strmt)
	L.G.Global = v.env
	L.Env = v.env
}

// protect returns the read-only proxy of t, making one (and proxies of the
// tables t holds) the first time.
func (v *vm) protect(t *lua.LTable) *lua.LTable {
	for p, b := range v.backing {
		if b == t {
			return p
		}
	}
	L := v.L
	p := L.NewTable()
	v.backing[p] = t
	var nested []lua.LValue
	t.ForEach(func(k, val lua.LValue) {
		if sub, ok := val.(*lua.LTable); ok && sub != t {
			nested = append(nested, k)
		}
	})
	for _, k := range nested {
		t.RawSet(k, v.protect(t.RawGet(k).(*lua.LTable)))
	}
	if t.RawGetString("__index") == t { // the string library indexes itself
		t.RawSetString("__index", p)
	}
	mt := L.NewTable()
	mt.RawSetString("__index", t)
	mt.RawSetString("__newindex", L.NewFunction(readonlyAssign))
	mt.RawSetString("__metatable", lua.LFalse)
	p.Metatable = mt
	return p
}

// readonlyAssign is the proxies' __newindex.
func readonlyAssign(L *lua.LState) int {
	L.RaiseError(msgReadonlyTbl)
	return 0
}

// raiseReadonly raises Redis's error for a library call that would modify a
// protected table (rawset, setmetatable, table.insert ...), without a position.
func raiseReadonly(L *lua.LState) {
	L.Error(lua.LString(msgReadonlyTbl), 0)
}

// unproxy returns the table behind a read-only proxy, or t.
func (v *vm) unproxy(t *lua.LTable) *lua.LTable {
	if b, ok := v.backing[t]; ok {
		return b
	}
	return t
}

// checkWritable raises the read-only error when argument n is a proxy.
func (v *vm) checkWritable(n int) *lua.LTable {
	t := v.L.CheckTable(n)
	if _, ok := v.backing[t]; ok {
		raiseReadonly(v.L)
	}
	return t
}
