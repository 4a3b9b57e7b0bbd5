package script

import (
	"runtime"
	"runtime/metrics"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/pm"
)

// Bounded string building. Every string a library call or a concatenation
// makes is checked against Config.MaxStringBytes before it is made, and its
// size is charged to the run's allocation budget (Config.MaxAllocBytes).

// makes checks that a new string of n bytes may be made and charges it.
func (v *vm) makes(n int) {
	if n > v.e.cfg.MaxStringBytes || n < 0 {
		v.L.RaiseError("string length overflow: %d bytes is more than the script string limit of %d bytes",
			n, v.e.cfg.MaxStringBytes)
	}
	v.charge(int64(n))
}

// charge counts n bytes the run made. Every quarter of MaxAllocBytes so
// made, the engine collects garbage and measures the live heap: the first
// time to take a baseline, then to stop the run when what it holds (the
// heap's growth since the baseline, plus all it had made before the
// baseline) is over MaxAllocBytes. Garbage (a string built by repeated
// concatenation) does not count; what the run keeps does, and so, as the heap
// is the process's, does what other goroutines keep meanwhile.
func (v *vm) charge(n int64) {
	r := v.run
	if r == nil {
		return
	}
	r.alloc += n
	if r.alloc-r.checked <= v.e.cfg.MaxAllocBytes/4 {
		return
	}
	r.checked = r.alloc
	runtime.GC()
	live := int64(liveHeap())
	if r.baseline < 0 {
		r.baseline, r.before = live, r.alloc
		return
	}
	if held := live - r.baseline + r.before; held > v.e.cfg.MaxAllocBytes {
		v.L.RaiseError("not enough memory: the script holds more than its limit of %d bytes", v.e.cfg.MaxAllocBytes)
	}
}

// liveHeap is the heap the last garbage collection found live.
func liveHeap() uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return sample[0].Value.Uint64()
}

// stringOf converts a string or number operand as Lua 5.1 does.
func stringOf(val lua.LValue) (string, bool) {
	switch x := val.(type) {
	case lua.LString:
		return string(x), true
	case lua.LNumber:
		return numberString(x), true
	}
	return "", false
}

// concat is the bounded `a .. b .. c`: Lua's concatenation of strings and
// numbers, with __concat metamethods for other operands.
func (v *vm) concat(L *lua.LState) int {
	n := L.GetTop()
	parts := make([]string, 0, n)
	total := 0
	for i := 1; i <= n; i++ {
		s, ok := stringOf(L.Get(i))
		if !ok {
			return v.concatMeta(L, n)
		}
		parts = append(parts, s)
		total += len(s)
	}
	v.makes(total)
	L.Push(lua.LString(strings.Join(parts, "")))
	return 1
}

// concatMeta concatenates right to left, pair by pair, as Lua's VM does
// when an operand is not a string or a number.
func (v *vm) concatMeta(L *lua.LState, n int) int {
	acc := L.Get(n)
	for i := n - 1; i >= 1; i-- {
		a := L.Get(i)
		as, aok := stringOf(a)
		bs, bok := stringOf(acc)
		if aok && bok {
			v.makes(len(as) + len(bs))
			acc = lua.LString(as + bs)
			continue
		}
		mm := L.GetMetaField(a, "__concat")
		if mm == lua.LNil {
			mm = L.GetMetaField(acc, "__concat")
		}
		if mm == lua.LNil {
			bad := a
			if aok {
				bad = acc
			}
			L.RaiseError("attempt to concatenate a %s value", bad.Type().String())
		}
		L.Push(mm)
		L.Push(a)
		L.Push(acc)
		L.Call(2, 1)
		acc = L.Get(-1)
		L.Pop(1)
	}
	L.Push(acc)
	return 1
}

func (v *vm) setupString() {
	s := v.globals.RawGetString("string").(*lua.LTable)
	s.RawSetString("__index", lua.LNil)
	for name, fn := range map[string]lua.LGFunction{
		"rep": v.strRep, "upper": v.strCase('a', 'z', -32), "lower": v.strCase('A', 'Z', 32),
		"reverse": v.strReverse, "format": v.strFormat, "gsub": v.strGsub,
	} {
		s.RawSetString(name, v.L.NewFunction(fn))
	}
	s.RawSetString("dump", v.L.NewFunction(func(L *lua.LState) int {
		L.RaiseError("unable to dump given function")
		return 0
	}))
	gmatch := v.L.NewFunction(v.strGmatch)
	s.RawSetString("gmatch", gmatch)
	s.RawSetString("gfind", gmatch)
}

func (v *vm) strRep(L *lua.LState) int {
	s := L.CheckString(1)
	n := L.CheckInt(2)
	if n <= 0 || len(s) == 0 {
		L.Push(lua.LString(""))
		return 1
	}
	if n > v.e.cfg.MaxStringBytes/len(s) {
		v.makes(v.e.cfg.MaxStringBytes + 1)
	}
	v.makes(len(s) * n)
	L.Push(lua.LString(strings.Repeat(s, n)))
	return 1
}

// strCase is string.upper / string.lower: ASCII letters from..to shift by
// delta, as C's toupper and tolower in the C locale.
func (v *vm) strCase(from, to byte, delta int) lua.LGFunction {
	return func(L *lua.LState) int {
		s := L.CheckString(1)
		v.makes(len(s))
		b := []byte(s)
		for i, c := range b {
			if c >= from && c <= to {
				b[i] = byte(int(c) + delta)
			}
		}
		L.Push(lua.LString(b))
		return 1
	}
}

func (v *vm) strReverse(L *lua.LState) int {
	s := L.CheckString(1)
	v.makes(len(s))
	b := make([]byte, len(s))
	for i := range b {
		b[i] = s[len(s)-1-i]
	}
	L.Push(lua.LString(b))
	return 1
}

// findBatch finds up to limit matches of pat in src from offset on.
func findBatch(L *lua.LState, pat string, src []byte, offset, limit int) []*pm.MatchData {
	mds, err := pm.Find(pat, src, offset, limit)
	if err != nil {
		L.RaiseError("%s", err.Error())
	}
	return mds
}

// afterMatch is where the search goes on after a match: its end, or one past
// an empty match.
func afterMatch(md *pm.MatchData) int {
	if md.Capture(1) > md.Capture(0) {
		return md.Capture(1)
	}
	return md.Capture(0) + 1
}

// captureValue is capture i (0 is the whole match) of md.
func captureValue(L *lua.LState, md *pm.MatchData, src string, i int) lua.LValue {
	idx := 2 * i
	if i == 0 || (i == 1 && md.CaptureLength() == 2) {
		idx = 0
	} else if idx >= md.CaptureLength() {
		L.RaiseError("invalid capture index")
	}
	if md.IsPosCapture(idx) {
		return lua.LNumber(md.Capture(idx))
	}
	return lua.LString(src[md.Capture(idx):md.Capture(idx+1)])
}

// pushCaptures pushes md's captures, or the whole match when it has none,
// and returns how many it pushed.
func pushCaptures(L *lua.LState, md *pm.MatchData, src string) int {
	n := md.CaptureLength()/2 - 1
	if n == 0 {
		L.Push(captureValue(L, md, src, 0))
		return 1
	}
	for i := 1; i <= n; i++ {
		L.Push(captureValue(L, md, src, i))
	}
	return n
}

// strGmatch is string.gmatch: it finds one match per call, not every match
// up front.
func (v *vm) strGmatch(L *lua.LState) int {
	src := L.CheckString(1)
	pat := L.CheckString(2)
	b := []byte(src)
	offset := 0
	L.Push(L.NewFunction(func(L *lua.LState) int {
		if offset > len(src) {
			return 0
		}
		mds := findBatch(L, pat, b, offset, 1)
		if len(mds) == 0 {
			offset = len(src) + 1
			return 0
		}
		offset = afterMatch(mds[0])
		return pushCaptures(L, mds[0], src)
	}))
	return 1
}
