package script

import (
	"math"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// setupTable bounds table.concat and table.insert, refuses to let
// table.insert change a read-only table (table.remove and table.sort find a
// read-only proxy empty, as Redis's find nothing to change), and adds Lua
// 5.1's foreach, foreachi and setn.
func (v *vm) setupTable() {
	t := v.globals.RawGetString("table").(*lua.LTable)
	for name, fn := range map[string]lua.LGFunction{
		"concat": v.tableConcat, "insert": v.tableInsert, "foreach": v.tableForeach,
		"foreachi": v.tableForeachi, "setn": tableSetn,
	} {
		t.RawSetString(name, v.L.NewFunction(fn))
	}
}

// tableConcat is table.concat, sized before it is built.
func (v *vm) tableConcat(L *lua.LState) int {
	t := v.unproxy(L.CheckTable(1))
	sep := L.OptString(2, "")
	i := L.OptInt(3, 1)
	j := L.OptInt(4, t.Len())
	if i > j {
		L.Push(lua.LString(""))
		return 1
	}
	if j-i >= v.e.cfg.MaxStringBytes {
		v.makes(v.e.cfg.MaxStringBytes + 1)
	}
	parts := make([]string, 0, j-i+1)
	total := 0
	for k := i; k <= j; k++ {
		val := t.RawGetInt(k)
		s, ok := stringOf(val)
		if !ok {
			L.RaiseError("invalid value (%s) at index %d in table for 'concat'", val.Type().String(), k)
		}
		parts = append(parts, s)
		total += len(s) + len(sep)
		if total > v.e.cfg.MaxStringBytes+len(sep) {
			v.makes(total - len(sep))
		}
	}
	v.makes(total - len(sep))
	L.Push(lua.LString(strings.Join(parts, sep)))
	return 1
}

// tableInsert is table.insert, within Config.MaxTableEntries.
func (v *vm) tableInsert(L *lua.LState) int {
	t := v.checkWritable(1)
	n := t.Len()
	if n >= v.e.cfg.MaxTableEntries {
		L.RaiseError("table overflow: a script table may hold at most %d entries", v.e.cfg.MaxTableEntries)
	}
	v.charge(entryBytes)
	switch L.GetTop() {
	case 2:
		t.Append(L.Get(2))
	case 3:
		pos := L.CheckInt(2)
		if pos < 1 || pos > v.e.cfg.MaxTableEntries {
			L.ArgError(2, "position out of bounds")
		}
		if pos > n+1 {
			t.RawSetInt(pos, L.Get(3))
			return 0
		}
		t.Insert(pos, L.Get(3))
	default:
		L.RaiseError("wrong number of arguments to 'insert'")
	}
	return 0
}

// entryBytes is what the allocation budget counts for a table entry.
const entryBytes = 32

func (v *vm) tableForeach(L *lua.LState) int {
	t := v.unproxy(L.CheckTable(1))
	fn := L.CheckFunction(2)
	for k, val := t.Next(lua.LNil); k != lua.LNil; k, val = t.Next(k) {
		L.Push(fn)
		L.Push(k)
		L.Push(val)
		L.Call(2, 1)
		if r := L.Get(-1); r != lua.LNil {
			return 1
		}
		L.Pop(1)
	}
	return 0
}

func (v *vm) tableForeachi(L *lua.LState) int {
	t := v.unproxy(L.CheckTable(1))
	fn := L.CheckFunction(2)
	n := t.Len()
	for i := 1; i <= n; i++ {
		L.Push(fn)
		L.Push(lua.LNumber(i))
		L.Push(t.RawGetInt(i))
		L.Call(2, 1)
		if r := L.Get(-1); r != lua.LNil {
			return 1
		}
		L.Pop(1)
	}
	return 0
}

func tableSetn(L *lua.LState) int {
	L.RaiseError("'setn' is obsolete")
	return 0
}

// setupCoroutine bounds how many coroutines a run may create: each is a
// whole Lua thread with its own stacks.
func (v *vm) setupCoroutine() {
	co := v.globals.RawGetString("coroutine").(*lua.LTable)
	for _, name := range []string{"create", "wrap"} {
		orig := co.RawGetString(name).(*lua.LFunction).GFunction
		co.RawSetString(name, v.L.NewFunction(func(L *lua.LState) int {
			if r := v.run; r != nil {
				r.coroutines++
				if r.coroutines > v.e.cfg.MaxCoroutines {
					L.RaiseError("too many coroutines: a script may create at most %d", v.e.cfg.MaxCoroutines)
				}
			}
			return orig(L)
		}))
	}
}

// mathRandom is Redis's math.random over its rand48.
func (v *vm) mathRandom(L *lua.LState) int {
	r := v.run.rand.float()
	switch L.GetTop() {
	case 0:
		L.Push(lua.LNumber(r))
	case 1:
		u := L.CheckInt(1)
		if u < 1 {
			L.ArgError(1, "interval is empty")
		}
		L.Push(lua.LNumber(math.Floor(r*float64(u)) + 1))
	case 2:
		l, u := L.CheckInt(1), L.CheckInt(2)
		if l > u {
			L.ArgError(2, "interval is empty")
		}
		L.Push(lua.LNumber(math.Floor(r*float64(u-l+1)) + float64(l)))
	default:
		L.RaiseError("wrong number of arguments")
	}
	return 1
}

func (v *vm) mathRandomseed(L *lua.LState) int {
	v.run.rand.seed(int32(L.CheckInt(1)))
	return 0
}
