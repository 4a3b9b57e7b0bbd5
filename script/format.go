package script

import (
	"fmt"
	"math"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// strFormat is Lua 5.1's string.format: C printf directives with at most
// two-digit widths and precisions (so no directive can make a huge string),
// numbers converted as C converts them, %q quoting as Lua does.
func (v *vm) strFormat(L *lua.LState) int {
	f := L.CheckString(1)
	arg := 1
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		i++
		if i < len(f) && f[i] == '%' {
			b.WriteByte('%')
			continue
		}
		arg++
		if arg > L.GetTop() {
			L.ArgError(arg, "no value")
		}
		d, next := scanFormat(L, f, i)
		i = next
		piece := v.formatOne(L, d, arg)
		if b.Len()+len(piece) > v.e.cfg.MaxStringBytes {
			v.makes(b.Len() + len(piece))
		}
		b.WriteString(piece)
	}
	v.charge(int64(b.Len()))
	L.Push(lua.LString(b.String()))
	return 1
}

// directive is one parsed %-directive: flags, width, precision (-1: none).
type directive struct {
	flags       string
	width, prec int
	verb        byte
}

// goSpec is the directive as a Go format for a number verb.
func (d directive) goSpec(verb byte) string {
	s := "%" + d.flags
	if d.width > 0 {
		s += fmt.Sprint(d.width)
	}
	if d.prec >= 0 {
		s += "." + fmt.Sprint(d.prec)
	}
	return s + string(verb)
}

// pad pads s to the width in bytes, as C does (Go pads to a width in runes).
func (d directive) pad(s string) string {
	if len(s) >= d.width {
		return s
	}
	fill := strings.Repeat(" ", d.width-len(s))
	if strings.Contains(d.flags, "-") {
		return s + fill
	}
	return fill + s
}

// scanFormat reads the flags, width and precision of the directive starting
// at f[i] as Lua 5.1's scanformat does, and returns it with the index of its
// verb.
func scanFormat(L *lua.LState, f string, i int) (directive, int) {
	d := directive{prec: -1}
	start := i
	for i < len(f) && strings.IndexByte("-+ #0", f[i]) >= 0 {
		i++
	}
	if i-start >= 6 {
		L.RaiseError("invalid format (repeated flags)")
	}
	d.flags = f[start:i]
	number := func() int {
		n := 0
		for k := 0; k < 2 && i < len(f) && isDigit(f[i]); k++ {
			n = n*10 + int(f[i]-'0')
			i++
		}
		return n
	}
	d.width = number()
	if i < len(f) && f[i] == '.' {
		i++
		d.prec = number()
	}
	if i < len(f) && isDigit(f[i]) {
		L.RaiseError("invalid format (width or precision too long)")
	}
	if i >= len(f) {
		L.RaiseError("invalid option '%%' to 'format'")
	}
	d.verb = f[i]
	return d, i
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// formatOne formats argument arg for one directive.
func (v *vm) formatOne(L *lua.LState, d directive, arg int) string {
	switch d.verb {
	case 'c':
		return d.pad(string([]byte{byte(toInt64(float64(L.CheckNumber(arg))))}))
	case 'd', 'i':
		return fmt.Sprintf(d.goSpec('d'), toInt64(float64(L.CheckNumber(arg))))
	case 'o', 'u', 'x', 'X':
		verb := d.verb
		if verb == 'u' {
			verb = 'd'
		}
		return fmt.Sprintf(d.goSpec(verb), uint64(toInt64(float64(L.CheckNumber(arg)))))
	case 'e', 'E', 'f', 'g', 'G':
		return formatFloat(d, float64(L.CheckNumber(arg)))
	case 'q':
		return quoteString(L.CheckString(arg))
	case 's':
		s, ok := stringOf(L.Get(arg))
		if !ok {
			s = lua.LVAsString(L.ToStringMeta(L.CheckAny(arg)))
		}
		if d.prec < 0 && len(s) >= 100 {
			return s
		}
		if i := strings.IndexByte(s, 0); i >= 0 {
			s = s[:i] // C's %s stops at NUL
		}
		if d.prec >= 0 && len(s) > d.prec {
			s = s[:d.prec]
		}
		return d.pad(s)
	}
	L.RaiseError("invalid option '%%%c' to 'format'", d.verb)
	return ""
}

// formatFloat formats as C: %g without a precision means precision 6 (Go's
// %g would print the shortest form); inf and nan as glibc prints them.
func formatFloat(d directive, f float64) string {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		s := formatG(f, 6)
		if !strings.HasPrefix(s, "-") && strings.Contains(d.flags, "+") {
			s = "+" + s
		} else if !strings.HasPrefix(s, "-") && strings.Contains(d.flags, " ") {
			s = " " + s
		}
		if d.verb == 'E' || d.verb == 'G' {
			s = strings.ToUpper(s)
		}
		return d.pad(s)
	}
	if (d.verb == 'g' || d.verb == 'G') && d.prec < 0 {
		d.prec = 6
	}
	return fmt.Sprintf(d.goSpec(d.verb), f)
}

// toInt64 converts as C's cast of a double to long on x86-64: truncation,
// and the minimum int64 for NaN and values out of range.
func toInt64(f float64) int64 {
	if math.IsNaN(f) || f >= 9223372036854775807.0 || f < -9223372036854775808.0 {
		return math.MinInt64
	}
	return int64(f)
}

// quoteString is Lua 5.1's %q.
func quoteString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\\', '\n':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\r':
			b.WriteString(`\r`)
		case 0:
			b.WriteString(`\000`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
