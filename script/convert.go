package script

import (
	"fmt"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// maxReplyDepth is how deep a script's reply may nest: Redis's Lua stack
// allows 7995 levels and answers "reached lua stack limit" below them.
const maxReplyDepth = 7995

// toLua converts a command's reply to a Lua value as Redis does
// (redisProtocolToLuaType): integer -> number, bulk -> string, null ->
// false (nil after redis.setresp(3)), array -> table, status -> {ok=},
// error -> {err=}, and the RESP3 kinds as Redis gives them to Lua.
func (v *vm) toLua(L *lua.LState, r Reply, depth int) lua.LValue {
	switch r.Kind {
	case Int:
		return lua.LNumber(r.Int)
	case Bulk:
		return lua.LString(r.Str)
	case Null, NullArray:
		if v.run.resp == 3 {
			return lua.LNil
		}
		return lua.LFalse
	case Status:
		return field(L, "ok", lua.LString(r.Str))
	case Error:
		return errorTable(L, "-"+r.Str)
	case Array, Set, Map:
		return v.aggregateToLua(L, r, depth)
	case Bool:
		return lua.LBool(r.Int != 0)
	case Double:
		return field(L, "double", lua.LNumber(r.Float))
	case BigNumber:
		return field(L, "big_number", lua.LString(r.Str))
	case Verbatim:
		inner := L.NewTable()
		inner.RawSetString("string", lua.LString(r.Str))
		inner.RawSetString("format", lua.LString(r.Format))
		return field(L, "verbatim_string", inner)
	}
	return lua.LFalse
}

// aggregateToLua converts an array to a table, a map to {map={k=v}} and a
// set to {set={member=true}}.
func (v *vm) aggregateToLua(L *lua.LState, r Reply, depth int) lua.LValue {
	if depth > maxReplyDepth {
		L.RaiseError("reply nested too deeply")
	}
	switch r.Kind {
	case Map:
		t := L.CreateTable(0, len(r.Elems)/2)
		for i := 0; i+1 < len(r.Elems); i += 2 {
			t.RawSet(v.toLua(L, r.Elems[i], depth+1), v.toLua(L, r.Elems[i+1], depth+1))
		}
		return field(L, "map", t)
	case Set:
		t := L.CreateTable(0, len(r.Elems))
		for _, e := range r.Elems {
			t.RawSet(v.toLua(L, e, depth+1), lua.LTrue)
		}
		return field(L, "set", t)
	}
	t := L.CreateTable(len(r.Elems), 0)
	for i, e := range r.Elems {
		t.RawSetInt(i+1, v.toLua(L, e, depth+1))
	}
	return t
}

func field(L *lua.LState, name string, val lua.LValue) *lua.LTable {
	t := L.NewTable()
	t.RawSetString(name, val)
	return t
}

// replyBuilder converts a script's return value to a Reply as Redis's
// luaReplyToRedisReply does, within a bound on the reply's size (a table
// can hold one big string many times over).
type replyBuilder struct {
	resp     int
	maxBytes int64
	bytes    int64
	over     bool
}

// toReply converts val: string -> bulk, number -> integer (truncated), true
// -> 1 (a RESP3 boolean after redis.setresp(3)), false and nil -> null,
// {err=} -> error, {ok=} -> status, {double=} {big_number=}
// {verbatim_string=} {map=} {set=} -> their RESP3 kinds, any other table ->
// array of its elements up to the first nil.
func (b *replyBuilder) toReply(val lua.LValue, depth int) Reply {
	if b.bytes += 16; b.bytes > b.maxBytes {
		b.over = true
		return Reply{}
	}
	switch x := val.(type) {
	case lua.LString:
		if b.bytes += int64(len(x)); b.bytes > b.maxBytes {
			b.over = true
		}
		return BulkReply(string(x))
	case lua.LBool:
		if b.resp == 3 {
			return boolReply(bool(x))
		}
		if x {
			return IntReply(1)
		}
		return NullReply()
	case lua.LNumber:
		return IntReply(toInt64(float64(x)))
	case *lua.LTable:
		if depth >= maxReplyDepth {
			return ErrorReply("ERR reached lua stack limit")
		}
		return b.tableReply(x, depth)
	}
	return NullReply()
}

// tableReply converts a table, checking its special fields in Redis's order.
func (b *replyBuilder) tableReply(t *lua.LTable, depth int) Reply {
	if s, ok := t.RawGetString("err").(lua.LString); ok {
		return ErrorReply(errorText(string(s)))
	}
	if s, ok := t.RawGetString("ok").(lua.LString); ok {
		return StatusReply(strings.NewReplacer("\r", " ", "\n", " ").Replace(string(s)))
	}
	if n, ok := t.RawGetString("double").(lua.LNumber); ok {
		return Reply{Kind: Double, Float: float64(n)}
	}
	if s, ok := t.RawGetString("big_number").(lua.LString); ok {
		return Reply{Kind: BigNumber, Str: strings.NewReplacer("\r", " ", "\n", " ").Replace(string(s))}
	}
	if vt, ok := t.RawGetString("verbatim_string").(*lua.LTable); ok {
		f, fok := vt.RawGetString("format").(lua.LString)
		s, sok := vt.RawGetString("string").(lua.LString)
		if fok && sok {
			b.bytes += int64(len(s))
			return Reply{Kind: Verbatim, Format: string(f), Str: string(s)}
		}
	}
	if m, ok := t.RawGetString("map").(*lua.LTable); ok {
		r := Reply{Kind: Map}
		for k, val := m.Next(lua.LNil); k != lua.LNil && !b.over; k, val = m.Next(k) {
			r.Elems = append(r.Elems, b.toReply(k, depth+1), b.toReply(val, depth+1))
		}
		return r
	}
	if s, ok := t.RawGetString("set").(*lua.LTable); ok {
		r := Reply{Kind: Set}
		for k, _ := s.Next(lua.LNil); k != lua.LNil && !b.over; k, _ = s.Next(k) {
			r.Elems = append(r.Elems, b.toReply(k, depth+1))
		}
		return r
	}
	r := Reply{Kind: Array}
	for i := 1; !b.over; i++ {
		e := t.RawGetInt(i)
		if e == lua.LNil {
			break
		}
		r.Elems = append(r.Elems, b.toReply(e, depth+1))
	}
	return r
}

// errorText is the text of an {err=} reply as addReplyErrorFormat writes
// it: trailing newlines trimmed, inner ones made spaces.
func errorText(s string) string {
	s = strings.Trim(s, "\r\n")
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}

// tooLarge is the reply for a script reply over Config.MaxReplyBytes.
func tooLarge(limit int64) Reply {
	return ErrorReply(fmt.Sprintf("ERR script reply larger than the limit of %d bytes", limit))
}
