package script

import (
	"strconv"
	"strings"
	"unicode/utf8"

	lua "github.com/yuin/gopher-lua"
)

// JSON tokens, named as lua-cjson names them in its errors.
type jsonToken int

const (
	tObjBegin jsonToken = iota
	tObjEnd
	tArrBegin
	tArrEnd
	tString
	tNumber
	tBoolean
	tNull
	tColon
	tComma
	tEnd
	tWhitespace
	tError
	tUnknown
)

var jsonTokenNames = [...]string{"T_OBJ_BEGIN", "T_OBJ_END", "T_ARR_BEGIN", "T_ARR_END", "T_STRING",
	"T_NUMBER", "T_BOOLEAN", "T_NULL", "T_COLON", "T_COMMA", "T_END", "T_WHITESPACE", "T_ERROR", "T_UNKNOWN"}

// jsonDecoder is one cjson.decode call: lua-cjson's parser, with its
// errors, over data that ends at its first NUL as a C string does.
type jsonDecoder struct {
	v     *vm
	L     *lua.LState
	cfg   *cjsonConfig
	data  string
	pos   int
	depth int
	// the current token
	tok    jsonToken
	index  int
	str    string
	num    float64
	errmsg string
}

func (v *vm) jsonDecode(L *lua.LState, c *cjsonConfig) int {
	if L.GetTop() != 1 {
		L.ArgError(1, "expected 1 argument")
	}
	data := L.CheckString(1)
	if len(data) >= 2 && (data[0] == 0 || data[1] == 0) {
		L.RaiseError("JSON parser does not support UTF-16 or UTF-32")
	}
	if i := strings.IndexByte(data, 0); i >= 0 {
		data = data[:i]
	}
	d := &jsonDecoder{v: v, L: L, cfg: c, data: data}
	d.next()
	val := d.value()
	d.next()
	if d.tok != tEnd {
		d.fail("the end")
	}
	L.Push(val)
	return 1
}

func (d *jsonDecoder) fail(expected string) {
	found := jsonTokenNames[d.tok]
	if d.tok == tError {
		found = d.errmsg
	}
	d.L.RaiseError("Expected %s but found %s at character %d", expected, found, d.index+1)
}

func (d *jsonDecoder) at(i int) byte {
	if i < len(d.data) {
		return d.data[i]
	}
	return 0
}

func (d *jsonDecoder) setError(msg string) {
	d.tok, d.index, d.errmsg = tError, d.pos, msg
}

// next reads the next token (json_next_token).
func (d *jsonDecoder) next() {
	for {
		c := d.at(d.pos)
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			break
		}
		d.pos++
	}
	d.index = d.pos
	c := d.at(d.pos)
	if t, ok := punctuation(c); ok {
		d.tok = t
		d.pos++
		return
	}
	rest := d.data[d.pos:]
	switch {
	case c == 0:
		d.tok = tEnd
	case c == '"':
		d.stringToken()
	case c == '-' || isDigit(c):
		if !d.cfg.decodeInvalid && invalidNumber(rest) {
			d.setError("invalid number")
			return
		}
		d.numberToken()
	case strings.HasPrefix(rest, "true"):
		d.tok, d.num = tBoolean, 1
		d.pos += 4
	case strings.HasPrefix(rest, "false"):
		d.tok, d.num = tBoolean, 0
		d.pos += 5
	case strings.HasPrefix(rest, "null"):
		d.tok = tNull
		d.pos += 4
	case strings.IndexByte("iInN+", c) >= 0 && d.cfg.decodeInvalid && invalidNumber(rest):
		d.numberToken()
	default:
		d.setError("invalid token")
	}
}

// punctuation is the token of a one-character token.
func punctuation(c byte) (jsonToken, bool) {
	switch c {
	case '{':
		return tObjBegin, true
	case '}':
		return tObjEnd, true
	case '[':
		return tArrBegin, true
	case ']':
		return tArrEnd, true
	case ',':
		return tComma, true
	case ':':
		return tColon, true
	}
	return 0, false
}

// unescape is the character a one-character escape stands for.
func unescape(c byte) (byte, bool) {
	switch c {
	case '"', '\\', '/':
		return c, true
	case 'b':
		return '\b', true
	case 't':
		return '\t', true
	case 'n':
		return '\n', true
	case 'f':
		return '\f', true
	case 'r':
		return '\r', true
	}
	return 0, false
}

// invalidNumber is json_is_invalid_number: forms strtod takes but JSON does not.
func invalidNumber(s string) bool {
	if strings.HasPrefix(s, "+") {
		return true
	}
	s = strings.TrimPrefix(s, "-")
	if strings.HasPrefix(s, "0") {
		c := byte(0)
		if len(s) > 1 {
			c = s[1]
		}
		return c|0x20 == 'x' || isDigit(c)
	}
	if len(s) > 0 && s[0] <= '9' {
		return false
	}
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "inf") || strings.HasPrefix(l, "nan")
}

func (d *jsonDecoder) numberToken() {
	n, size := strtod(d.data[d.pos:])
	if size == 0 {
		d.setError("invalid number")
		return
	}
	d.tok, d.num = tNumber, n
	d.pos += size
}

// stringToken reads a string, decoding escapes (json_next_string_token).
func (d *jsonDecoder) stringToken() {
	d.pos++
	var b strings.Builder
	for {
		c := d.at(d.pos)
		if c == '"' {
			break
		}
		if c == 0 {
			d.setError("unexpected end of string")
			return
		}
		if c != '\\' {
			b.WriteByte(c)
			d.pos++
			continue
		}
		esc := d.at(d.pos + 1)
		if esc == 'u' {
			if !d.unicodeEscape(&b) {
				d.setError("invalid unicode escape code")
				return
			}
			continue
		}
		r, ok := unescape(esc)
		if !ok {
			d.setError("invalid escape code")
			return
		}
		b.WriteByte(r)
		d.pos += 2
	}
	d.pos++
	d.tok, d.str = tString, b.String()
}

// unicodeEscape decodes \uXXXX, or a surrogate pair, at d.pos to UTF-8.
func (d *jsonDecoder) unicodeEscape(b *strings.Builder) bool {
	hex4 := func(i int) int {
		if i+4 > len(d.data) {
			return -1
		}
		n, err := strconv.ParseUint(d.data[i:i+4], 16, 32)
		if err != nil || strings.ContainsAny(d.data[i:i+4], "+-") {
			return -1
		}
		return int(n)
	}
	cp := hex4(d.pos + 2)
	if cp < 0 {
		return false
	}
	size := 6
	if cp&0xF800 == 0xD800 {
		if cp&0x400 != 0 || d.at(d.pos+6) != '\\' || d.at(d.pos+7) != 'u' {
			return false
		}
		low := hex4(d.pos + 8)
		if low < 0 || low&0xFC00 != 0xDC00 {
			return false
		}
		cp = ((cp&0x3FF)<<10 | low&0x3FF) + 0x10000
		size = 12
	}
	var buf [4]byte
	b.Write(buf[:utf8.EncodeRune(buf[:], rune(cp))])
	d.pos += size
	return true
}

// value converts the current token to a Lua value (json_process_value).
func (d *jsonDecoder) value() lua.LValue {
	d.v.charge(entryBytes)
	switch d.tok {
	case tString:
		d.v.charge(int64(len(d.str)))
		return lua.LString(d.str)
	case tNumber:
		return lua.LNumber(d.num)
	case tBoolean:
		return lua.LBool(d.num != 0)
	case tNull:
		return d.v.null
	case tObjBegin:
		return d.object()
	case tArrBegin:
		return d.array()
	}
	d.fail("value")
	return lua.LNil
}

func (d *jsonDecoder) descend() {
	d.depth++
	if d.depth > d.cfg.decodeMaxDepth || d.depth > maxJSONNesting {
		d.L.RaiseError("Found too many nested data structures (%d) at character %d", d.depth, d.pos)
	}
}

func (d *jsonDecoder) object() lua.LValue {
	d.descend()
	t := d.L.NewTable()
	d.next()
	if d.tok == tObjEnd {
		d.depth--
		return t
	}
	for n := 1; ; n++ {
		if d.tok != tString {
			d.fail("object key string")
		}
		key := d.str
		d.next()
		if d.tok != tColon {
			d.fail("colon")
		}
		d.next()
		d.entry(n)
		t.RawSetString(key, d.value())
		d.next()
		if d.tok == tObjEnd {
			d.depth--
			return t
		}
		if d.tok != tComma {
			d.fail("comma or object end")
		}
		d.next()
	}
}

func (d *jsonDecoder) array() lua.LValue {
	d.descend()
	t := d.L.NewTable()
	d.next()
	if d.tok == tArrEnd {
		d.depth--
		return t
	}
	for i := 1; ; i++ {
		d.entry(i)
		t.RawSetInt(i, d.value())
		d.next()
		if d.tok == tArrEnd {
			d.depth--
			return t
		}
		if d.tok != tComma {
			d.fail("comma or array end")
		}
		d.next()
	}
}

// entry checks that a decoded table may hold n entries.
func (d *jsonDecoder) entry(n int) {
	if n > d.v.e.cfg.MaxTableEntries {
		d.L.RaiseError("table overflow: a script table may hold at most %d entries", d.v.e.cfg.MaxTableEntries)
	}
}
