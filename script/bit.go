package script

import (
	"math"
	"strconv"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// bitModule is Lua BitOp 1.0 (lua_bit.c) as Redis ships it: 32-bit
// operations on numbers normalized with tobit.
func (v *vm) bitModule() *lua.LTable {
	t := v.L.NewTable()
	unary := map[string]func(uint32) uint32{
		"tobit": func(b uint32) uint32 { return b },
		"bnot":  func(b uint32) uint32 { return ^b },
		"bswap": func(b uint32) uint32 { return b>>24 | b>>8&0xff00 | (b&0xff00)<<8 | b<<24 },
	}
	for name, op := range unary {
		op := op
		name := name
		t.RawSetString(name, v.L.NewFunction(func(L *lua.LState) int { return bitReturn(L, op(bitArg(L, 1, name))) }))
	}
	fold := map[string]func(a, b uint32) uint32{
		"band": func(a, b uint32) uint32 { return a & b },
		"bor":  func(a, b uint32) uint32 { return a | b },
		"bxor": func(a, b uint32) uint32 { return a ^ b },
	}
	for name, op := range fold {
		op := op
		name := name
		t.RawSetString(name, v.L.NewFunction(func(L *lua.LState) int {
			b := bitArg(L, 1, name)
			for i := L.GetTop(); i > 1; i-- {
				b = op(b, bitArg(L, i, name))
			}
			return bitReturn(L, b)
		}))
	}
	shift := map[string]func(b, n uint32) uint32{
		"lshift":  func(b, n uint32) uint32 { return b << n },
		"rshift":  func(b, n uint32) uint32 { return b >> n },
		"arshift": func(b, n uint32) uint32 { return uint32(int32(b) >> n) },
		"rol":     func(b, n uint32) uint32 { return b<<n | b>>(32-n) },
		"ror":     func(b, n uint32) uint32 { return b<<(32-n) | b>>n },
	}
	for name, op := range shift {
		op := op
		name := name
		t.RawSetString(name, v.L.NewFunction(func(L *lua.LState) int {
			return bitReturn(L, op(bitArg(L, 1, name), bitArg(L, 2, name)&31))
		}))
	}
	t.RawSetString("tohex", v.L.NewFunction(bitTohex))
	return t
}

// bitArg is barg: the number (or numeric string) at n, plus 2^52+2^51, whose
// low 32 bits of mantissa are the number rounded and taken modulo 2^32.
func bitArg(L *lua.LState, n int, fn string) uint32 {
	var f float64
	switch x := L.Get(n).(type) {
	case lua.LNumber:
		f = float64(x)
	case lua.LString:
		num, ok := luaStringToNumber(string(x))
		if !ok {
			typeError(L, n, fn, "number")
		}
		f = num
	default:
		typeError(L, n, fn, "number")
	}
	return uint32(math.Float64bits(f + 6755399441055744.0))
}

// typeError is luaL_typerror: "bad argument #1 to 'band' (number expected,
// got no value)".
func typeError(L *lua.LState, n int, fn, want string) {
	got := "no value"
	if n <= L.GetTop() {
		got = L.Get(n).Type().String()
	}
	L.RaiseError("bad argument #%d to '%s' (%s expected, got %s)", n, fn, want, got)
}

func bitReturn(L *lua.LState, b uint32) int {
	L.Push(lua.LNumber(int32(b)))
	return 1
}

func bitTohex(L *lua.LState) int {
	b := bitArg(L, 1, "tohex")
	n := int32(8)
	if L.GetTop() >= 2 {
		n = int32(bitArg(L, 2, "tohex"))
	}
	digits := "0123456789abcdef"
	if n < 0 {
		n, digits = -n, "0123456789ABCDEF"
	}
	if n > 8 {
		n = 8
	}
	buf := make([]byte, n)
	for i := n - 1; i >= 0; i-- {
		buf[i] = digits[b&15]
		b >>= 4
	}
	L.Push(lua.LString(buf))
	return 1
}

// luaStringToNumber converts a string as Lua 5.1's lua_tonumber does
// (luaO_str2d): strtod, or a hexadecimal integer, with only spaces around.
func luaStringToNumber(s string) (float64, bool) {
	t := strings.TrimSpace(s)
	n, size := strtod(t)
	if size > 0 && size == len(t) {
		return n, true
	}
	if h, ok := strings.CutPrefix(strings.ToLower(t), "0x"); ok {
		if u, err := strconv.ParseUint(h, 16, 64); err == nil {
			return float64(u), true
		}
	}
	return 0, false
}

// strtod parses the longest prefix of s that C's strtod takes: decimal and
// hexadecimal numbers, inf, infinity and nan, with an optional sign. It
// returns the value and the prefix's length, 0 when there is none.
func strtod(s string) (float64, int) {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	lower := strings.ToLower(s[i:])
	switch {
	case strings.HasPrefix(lower, "infinity"):
		return signed(s, math.Inf(1)), i + 8
	case strings.HasPrefix(lower, "inf"):
		return signed(s, math.Inf(1)), i + 3
	case strings.HasPrefix(lower, "nan"):
		n := i + 3
		if end := strings.IndexByte(s[n:], ')'); strings.HasPrefix(s[n:], "(") && end > 0 {
			n += end + 1
		}
		return math.NaN(), n
	case strings.HasPrefix(lower, "0x"):
		return hexFloat(s, i)
	}
	j := i
	digits := 0
	for ; j < len(s) && isDigit(s[j]); j++ {
		digits++
	}
	if j < len(s) && s[j] == '.' {
		for j++; j < len(s) && isDigit(s[j]); j++ {
			digits++
		}
	}
	if digits == 0 {
		return 0, 0
	}
	j = exponent(s, j, 'e')
	f, _ := strconv.ParseFloat(s[:j], 64)
	return f, j
}

// exponent extends a number ending at j over an exponent (e or p) if one follows.
func exponent(s string, j int, mark byte) int {
	if j < len(s) && s[j]|0x20 == mark {
		k := j + 1
		if k < len(s) && (s[k] == '+' || s[k] == '-') {
			k++
		}
		if k < len(s) && isDigit(s[k]) {
			for k < len(s) && isDigit(s[k]) {
				k++
			}
			return k
		}
	}
	return j
}

func signed(s string, f float64) float64 {
	if strings.HasPrefix(s, "-") {
		return -f
	}
	return f
}

// hexFloat parses a hexadecimal number (0x1A, 0x1.8p3) after the sign at i.
func hexFloat(s string, i int) (float64, int) {
	j := i + 2
	digits := 0
	isHex := func(c byte) bool { return isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'f') }
	for ; j < len(s) && isHex(s[j]); j++ {
		digits++
	}
	if j < len(s) && s[j] == '.' {
		for j++; j < len(s) && isHex(s[j]); j++ {
			digits++
		}
	}
	if digits == 0 {
		return 0, i + 1 // strtod takes the "0" of "0x"
	}
	end := exponent(s, j, 'p')
	text := s[:end]
	if end == j {
		text += "p0"
	}
	f, _ := strconv.ParseFloat(text, 64)
	return f, end
}
