package script

import (
	"strings"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/pm"
)

// gsubBatch is how many matches string.gsub asks the matcher for at a time:
// enough to spare recompiling the pattern per match, few enough that a
// pattern matching everywhere does not hold a match record per byte.
const gsubBatch = 256

// strGsub is Lua 5.1's string.gsub, building its result within the string
// limit as it goes.
func (v *vm) strGsub(L *lua.LState) int {
	src := L.CheckString(1)
	pat := L.CheckString(2)
	L.CheckTypes(3, lua.LTString, lua.LTNumber, lua.LTTable, lua.LTFunction)
	repl := L.Get(3)
	maxN := L.OptInt(4, len(src)+1)
	anchor := strings.HasPrefix(pat, "^")
	b := []byte(src)
	var out strings.Builder
	copied, offset, n := 0, 0, 0
	for n < maxN && offset <= len(src) {
		mds := findBatch(L, pat, b, offset, min(gsubBatch, maxN-n))
		for _, md := range mds {
			start, end := md.Capture(0), md.Capture(1)
			v.gsubAppend(&out, src[copied:start])
			v.gsubAppend(&out, v.gsubValue(L, md, src, repl))
			copied, offset = end, afterMatch(md)
			n++
		}
		if len(mds) == 0 || anchor {
			break
		}
	}
	v.gsubAppend(&out, src[copied:])
	v.charge(int64(out.Len()))
	L.Push(lua.LString(out.String()))
	L.Push(lua.LNumber(n))
	return 2
}

// gsubAppend appends s within the string limit.
func (v *vm) gsubAppend(out *strings.Builder, s string) {
	if out.Len()+len(s) > v.e.cfg.MaxStringBytes {
		v.makes(out.Len() + len(s))
	}
	out.WriteString(s)
}

// gsubValue is the replacement of one match: repl expanded, or looked up, or
// called; the match itself when that gives false or nil.
func (v *vm) gsubValue(L *lua.LState, md *pm.MatchData, src string, repl lua.LValue) string {
	whole := src[md.Capture(0):md.Capture(1)]
	var val lua.LValue
	switch r := repl.(type) {
	case lua.LString:
		return v.expandRepl(L, md, src, string(r))
	case lua.LNumber:
		return v.expandRepl(L, md, src, numberString(r))
	case *lua.LTable:
		val = L.GetTable(r, captureValue(L, md, src, 1))
	case *lua.LFunction:
		L.Push(r)
		L.Call(pushCaptures(L, md, src), 1)
		val = L.Get(-1)
		L.Pop(1)
	}
	if val == lua.LNil || val == lua.LFalse {
		return whole
	}
	s, ok := stringOf(val)
	if !ok {
		L.RaiseError("invalid replacement value (a %s)", val.Type().String())
	}
	return s
}

// expandRepl expands %0-%9 and %% in a replacement string as Lua 5.1's
// add_s: % before any other character stands for that character.
func (v *vm) expandRepl(L *lua.LState, md *pm.MatchData, src, repl string) string {
	if !strings.Contains(repl, "%") {
		return repl
	}
	var b strings.Builder
	for i := 0; i < len(repl); i++ {
		c := repl[i]
		if c != '%' || i+1 == len(repl) {
			b.WriteByte(c)
			continue
		}
		i++
		c = repl[i]
		if c < '0' || c > '9' {
			b.WriteByte(c)
			continue
		}
		s, _ := stringOf(captureValue(L, md, src, int(c-'0')))
		if b.Len()+len(s) > v.e.cfg.MaxStringBytes {
			v.makes(b.Len() + len(s))
		}
		b.WriteString(s)
	}
	return b.String()
}
