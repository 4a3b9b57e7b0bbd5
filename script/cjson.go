package script

import (
	"math"
	"strings"

	lua "github.com/yuin/gopher-lua"
)

// cjsonConfig is lua-cjson's configuration, with Redis's defaults. Redis
// keeps a change (cjson.encode_number_precision(3) ...) for every later
// script; here each run starts from the defaults.
type cjsonConfig struct {
	sparseConvert  bool
	sparseRatio    int
	sparseSafe     int
	encodeMaxDepth int
	decodeMaxDepth int
	encodeInvalid  int // 0 off, 1 on, 2 null
	decodeInvalid  bool
	keepBuffer     bool
	precision      int
}

func defaultCjson() cjsonConfig {
	return cjsonConfig{sparseRatio: 2, sparseSafe: 10, encodeMaxDepth: 1000, decodeMaxDepth: 1000,
		decodeInvalid: true, keepBuffer: true, precision: 14}
}

// cjsonModule builds the cjson table over the run's configuration.
func (v *vm) cjsonModule() *lua.LTable {
	v.null = v.L.NewUserData()
	return v.newCjson(func() *cjsonConfig { return &v.run.cjson })
}

// newCjson builds a cjson table whose functions use the configuration cfg
// returns (cjson.new gives each new table a configuration of its own).
func (v *vm) newCjson(cfg func() *cjsonConfig) *lua.LTable {
	L := v.L
	t := L.NewTable()
	for name, fn := range map[string]func(*lua.LState, *cjsonConfig) int{
		"encode": v.jsonEncode, "decode": v.jsonDecode,
		"encode_sparse_array": cfgSparseArray, "encode_max_depth": cfgIntOption(func(c *cjsonConfig) *int { return &c.encodeMaxDepth }, 1, math.MaxInt32),
		"decode_max_depth":        cfgIntOption(func(c *cjsonConfig) *int { return &c.decodeMaxDepth }, 1, math.MaxInt32),
		"encode_number_precision": cfgIntOption(func(c *cjsonConfig) *int { return &c.precision }, 1, 14),
		"encode_keep_buffer":      cfgBoolOption(func(c *cjsonConfig) *bool { return &c.keepBuffer }),
		"decode_invalid_numbers":  cfgBoolOption(func(c *cjsonConfig) *bool { return &c.decodeInvalid }),
		"encode_invalid_numbers":  cfgEncodeInvalid,
	} {
		fn := fn
		t.RawSetString(name, L.NewFunction(func(L *lua.LState) int { return fn(L, cfg()) }))
	}
	t.RawSetString("new", L.NewFunction(func(L *lua.LState) int {
		c := defaultCjson()
		L.Push(v.newCjson(func() *cjsonConfig { return &c }))
		return 1
	}))
	t.RawSetString("null", v.null)
	t.RawSetString("_NAME", lua.LString("cjson"))
	t.RawSetString("_VERSION", lua.LString("2.1.0"))
	return t
}

// cfgArgs checks a configuration function's argument count (json_arg_init).
func cfgArgs(L *lua.LState, n int) {
	if L.GetTop() > n {
		L.ArgError(n+1, "found too many arguments")
	}
}

func cfgIntOption(get func(*cjsonConfig) *int, lo, hi int) func(*lua.LState, *cjsonConfig) int {
	return func(L *lua.LState, c *cjsonConfig) int {
		cfgArgs(L, 1)
		L.Push(intOption(L, 1, get(c), lo, hi))
		return 1
	}
}

func intOption(L *lua.LState, n int, setting *int, lo, hi int) lua.LValue {
	if L.Get(n) != lua.LNil {
		val := L.CheckInt(n)
		if val < lo || val > hi {
			L.ArgError(1, "expected integer between "+itoa(lo)+" and "+itoa(hi))
		}
		*setting = val
	}
	return lua.LNumber(*setting)
}

func itoa(n int) string { return formatG(float64(n), 17) }

func cfgBoolOption(get func(*cjsonConfig) *bool) func(*lua.LState, *cjsonConfig) int {
	return func(L *lua.LState, c *cjsonConfig) int {
		cfgArgs(L, 1)
		L.Push(boolOption(L, 1, get(c)))
		return 1
	}
}

func boolOption(L *lua.LState, n int, setting *bool) lua.LValue {
	switch x := L.Get(n).(type) {
	case lua.LBool:
		*setting = bool(x)
	case lua.LString:
		switch x {
		case "on":
			*setting = true
		case "off":
			*setting = false
		default:
			L.ArgError(n, "invalid option '"+string(x)+"'")
		}
	case *lua.LNilType:
	default:
		L.TypeError(n, lua.LTString)
	}
	return lua.LBool(*setting)
}

func cfgSparseArray(L *lua.LState, c *cjsonConfig) int {
	cfgArgs(L, 3)
	L.Push(boolOption(L, 1, &c.sparseConvert))
	L.Push(intOption(L, 2, &c.sparseRatio, 0, math.MaxInt32))
	L.Push(intOption(L, 3, &c.sparseSafe, 0, math.MaxInt32))
	return 3
}

func cfgEncodeInvalid(L *lua.LState, c *cjsonConfig) int {
	cfgArgs(L, 1)
	switch x := L.Get(1).(type) {
	case lua.LBool:
		c.encodeInvalid = map[bool]int{false: 0, true: 1}[bool(x)]
	case lua.LString:
		i := map[string]int{"off": 0, "on": 1, "null": 2}
		val, ok := i[string(x)]
		if !ok {
			L.ArgError(1, "invalid option '"+string(x)+"'")
		}
		c.encodeInvalid = val
	}
	if c.encodeInvalid == 2 {
		L.Push(lua.LString("null"))
	} else {
		L.Push(lua.LBool(c.encodeInvalid == 1))
	}
	return 1
}

// maxJSONNesting caps the nesting cjson follows whatever encode_max_depth
// and decode_max_depth say, as Redis's Lua stack does (lua_checkstack
// fails a little under 8000 levels): the Go stack stays small.
const maxJSONNesting = 7990

// jsonEncoder is one cjson.encode call.
type jsonEncoder struct {
	v   *vm
	L   *lua.LState
	cfg *cjsonConfig
	b   strings.Builder
}

func (v *vm) jsonEncode(L *lua.LState, c *cjsonConfig) int {
	if L.GetTop() != 1 {
		L.ArgError(1, "expected 1 argument")
	}
	e := &jsonEncoder{v: v, L: L, cfg: c}
	e.value(L.Get(1), 0)
	v.charge(int64(e.b.Len()))
	L.Push(lua.LString(e.b.String()))
	return 1
}

// grow checks that n more bytes keep the output within the string limit.
func (e *jsonEncoder) grow(n int) {
	if e.b.Len()+n > e.v.e.cfg.MaxStringBytes {
		e.v.makes(e.b.Len() + n)
	}
}

func (e *jsonEncoder) fail(val lua.LValue, reason string) {
	e.L.RaiseError("Cannot serialise %s: %s", typeName(val), reason)
}

// typeName is lua_typename: cjson.null is a light userdata in Redis.
func typeName(val lua.LValue) string {
	if _, ok := val.(*lua.LUserData); ok {
		return "userdata"
	}
	return val.Type().String()
}

func (e *jsonEncoder) value(val lua.LValue, depth int) {
	switch x := val.(type) {
	case lua.LString:
		e.str(string(x))
	case lua.LNumber:
		e.number(x)
	case lua.LBool:
		e.grow(5)
		if x {
			e.b.WriteString("true")
		} else {
			e.b.WriteString("false")
		}
	case *lua.LTable:
		depth++
		if depth > e.cfg.encodeMaxDepth || depth > maxJSONNesting {
			e.L.RaiseError("Cannot serialise, excessive nesting (%d)", depth)
		}
		e.table(e.v.unproxy(x), depth)
	case *lua.LNilType:
		e.grow(4)
		e.b.WriteString("null")
	default:
		if val == e.v.null {
			e.grow(4)
			e.b.WriteString("null")
			return
		}
		e.fail(val, "type not supported")
	}
}

func (e *jsonEncoder) number(n lua.LNumber) {
	f := float64(n)
	if math.IsInf(f, 0) || math.IsNaN(f) {
		switch e.cfg.encodeInvalid {
		case 0:
			e.fail(n, "must not be NaN or Inf")
		case 2:
			e.b.WriteString("null")
			return
		}
		if math.IsNaN(f) {
			e.b.WriteString("nan")
			return
		}
	}
	s := formatG(f, e.cfg.precision)
	e.grow(len(s))
	e.b.WriteString(s)
}

// jsonEscapes is lua-cjson's char2escape: control characters, '"', '\\',
// '/' and DEL are escaped.
var jsonEscapes = func() [256]string {
	var t [256]string
	for c := 0; c < 0x20; c++ {
		t[c] = `\u00` + string("0123456789abcdef"[c>>4]) + string("0123456789abcdef"[c&15])
	}
	t['\b'], t['\t'], t['\n'], t['\f'], t['\r'] = `\b`, `\t`, `\n`, `\f`, `\r`
	t['"'], t['\\'], t['/'], t[0x7f] = `\"`, `\\`, `\/`, `\u007f`
	return t
}()

func (e *jsonEncoder) str(s string) {
	e.grow(len(s) + 2)
	e.b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if esc := jsonEscapes[s[i]]; esc != "" {
			e.grow(len(esc))
			e.b.WriteString(esc)
		} else {
			e.b.WriteByte(s[i])
		}
	}
	e.b.WriteByte('"')
}

// arrayLength is lua_array_length: the largest index of a table whose keys
// are all positive integers, or -1 for an object.
func (e *jsonEncoder) arrayLength(t *lua.LTable) int {
	max, items := 0, 0
	for k, _ := t.Next(lua.LNil); k != lua.LNil; k, _ = t.Next(k) {
		n, ok := k.(lua.LNumber)
		if !ok || float64(n) < 1 || math.Floor(float64(n)) != float64(n) {
			return -1
		}
		if int(n) > max {
			max = int(n)
		}
		items++
	}
	if e.cfg.sparseRatio > 0 && max > items*e.cfg.sparseRatio && max > e.cfg.sparseSafe {
		if !e.cfg.sparseConvert {
			e.L.RaiseError("Cannot serialise table: excessively sparse array")
		}
		return -1
	}
	return max
}

func (e *jsonEncoder) table(t *lua.LTable, depth int) {
	if n := e.arrayLength(t); n > 0 {
		e.b.WriteByte('[')
		for i := 1; i <= n; i++ {
			if i > 1 {
				e.b.WriteByte(',')
			}
			e.value(t.RawGetInt(i), depth)
		}
		e.b.WriteByte(']')
		return
	}
	e.b.WriteByte('{')
	first := true
	for k, val := t.Next(lua.LNil); k != lua.LNil; k, val = t.Next(k) {
		if !first {
			e.b.WriteByte(',')
		}
		first = false
		switch key := k.(type) {
		case lua.LNumber:
			e.b.WriteByte('"')
			e.number(key)
			e.b.WriteString(`":`)
		case lua.LString:
			e.str(string(key))
			e.b.WriteByte(':')
		default:
			e.fail(k, "table key must be a number or string")
		}
		e.value(val, depth)
	}
	e.b.WriteByte('}')
}
