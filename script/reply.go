package script

import (
	"math"
	"strconv"
	"strings"
)

// Kind is the RESP type of a Reply.
type Kind uint8

// The kinds of Reply. A Caller answers with the RESP2 kinds (Null, NullArray,
// Status, Error, Int, Bulk, Array); a script's own reply may also use the
// RESP3 kinds Redis lets a script return ({double=}, {map=}, {set=},
// {big_number=}, {verbatim_string=}, booleans after redis.setresp(3)), which
// AppendRESP writes in either protocol as Redis does.
const (
	Null      Kind = iota // RESP2 null bulk string ($-1), RESP3 null (_)
	NullArray             // RESP2 null array (*-1), RESP3 null (_)
	Status                // simple string (+OK)
	Error                 // error (-ERR ...); Str holds the text after '-'
	Int                   // integer (:1)
	Bulk                  // bulk string ($3 foo)
	Array                 // array (*n), Elems
	Map                   // RESP3 map (%n), Elems holds keys and values in turn
	Set                   // RESP3 set (~n), Elems
	Double                // RESP3 double (,1.5), Float
	Bool                  // RESP3 boolean (#t), Int is 1 or 0
	BigNumber             // RESP3 big number ((123), Str
	Verbatim              // RESP3 verbatim string (=), Str, Format
)

// Reply is one RESP value: what a Caller answers for a command, and what a
// script run answers to its client.
type Reply struct {
	Kind   Kind
	Str    string  // Status, Error (no leading '-'), Bulk, BigNumber, Verbatim
	Int    int64   // Int, Bool
	Float  float64 // Double
	Format string  // Verbatim: its three-letter format ("txt")
	Elems  []Reply // Array, Set; Map: key, value, key, value...
}

// Constructors for the kinds a Caller needs.

// StatusReply is a simple-string reply (+s).
func StatusReply(s string) Reply { return Reply{Kind: Status, Str: s} }

// ErrorReply is an error reply; msg is what follows '-', e.g. "ERR syntax error".
func ErrorReply(msg string) Reply { return Reply{Kind: Error, Str: msg} }

// IntReply is an integer reply.
func IntReply(n int64) Reply { return Reply{Kind: Int, Int: n} }

// BulkReply is a bulk-string reply.
func BulkReply(s string) Reply { return Reply{Kind: Bulk, Str: s} }

// NullReply is the null bulk string ($-1; _ in RESP3).
func NullReply() Reply { return Reply{Kind: Null} }

// ArrayReply is an array reply of elems.
func ArrayReply(elems ...Reply) Reply { return Reply{Kind: Array, Elems: elems} }

// IsError reports whether r is an error reply.
func (r Reply) IsError() bool { return r.Kind == Error }

// AppendRESP appends r in protocol proto (2 or 3) to dst, as Redis writes a
// script's reply: RESP3 kinds are written as their RESP2 forms for a RESP2
// client (a double as a bulk string formatted %.17g, a map as a flat array,
// a boolean as :1 or :0), and both null kinds as _ for a RESP3 client.
func (r Reply) AppendRESP(dst []byte, proto int) []byte {
	switch r.Kind {
	case Null:
		if proto >= 3 {
			return append(dst, "_\r\n"...)
		}
		return append(dst, "$-1\r\n"...)
	case NullArray:
		if proto >= 3 {
			return append(dst, "_\r\n"...)
		}
		return append(dst, "*-1\r\n"...)
	case Status:
		return appendLine(dst, '+', r.Str)
	case Error:
		return appendLine(dst, '-', r.Str)
	case Int:
		return appendInt(dst, ':', r.Int)
	case Bulk:
		return appendBulk(dst, r.Str)
	case Array, Map, Set:
		return r.appendAggregate(dst, proto)
	default:
		return r.appendScalar3(dst, proto)
	}
}

// appendAggregate writes an Array, Map or Set.
func (r Reply) appendAggregate(dst []byte, proto int) []byte {
	n, lead := len(r.Elems), byte('*')
	if proto >= 3 {
		switch r.Kind {
		case Map:
			n, lead = len(r.Elems)/2, '%'
		case Set:
			lead = '~'
		}
	}
	dst = appendInt(dst, lead, int64(n))
	for _, e := range r.Elems {
		dst = e.AppendRESP(dst, proto)
	}
	return dst
}

// appendScalar3 writes the RESP3 scalar kinds: Double, Bool, BigNumber and
// Verbatim.
func (r Reply) appendScalar3(dst []byte, proto int) []byte {
	switch r.Kind {
	case Double:
		s := FormatDouble(r.Float)
		if proto >= 3 {
			return appendLine(dst, ',', s)
		}
		return appendBulk(dst, s)
	case Bool:
		if proto >= 3 {
			if r.Int != 0 {
				return append(dst, "#t\r\n"...)
			}
			return append(dst, "#f\r\n"...)
		}
		return appendInt(dst, ':', r.Int)
	case BigNumber:
		if proto >= 3 {
			return appendLine(dst, '(', r.Str)
		}
		return appendBulk(dst, r.Str)
	case Verbatim:
		if proto >= 3 {
			f := (r.Format + "   ")[:3]
			dst = appendInt(dst, '=', int64(len(r.Str)+4))
			dst = append(dst, f...)
			dst = append(dst, ':')
			dst = append(dst, r.Str...)
			return append(dst, "\r\n"...)
		}
		return appendBulk(dst, r.Str)
	}
	return append(dst, "$-1\r\n"...)
}

var posInf = math.Inf(1)

// FormatDouble formats a double as Redis 7.0's addReplyDouble: %.17g, and
// inf / -inf.
func FormatDouble(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	return formatG(f, 17)
}

// formatG formats f as C's printf %.<prec>g does.
func formatG(f float64, prec int) string {
	if math.IsNaN(f) {
		if math.Signbit(f) {
			return "-nan"
		}
		return "nan"
	}
	if math.IsInf(f, 0) {
		if f > 0 {
			return "inf"
		}
		return "-inf"
	}
	return strconv.FormatFloat(f, 'g', prec, 64)
}

func appendLine(dst []byte, lead byte, s string) []byte {
	dst = append(dst, lead)
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	}
	dst = append(dst, s...)
	return append(dst, "\r\n"...)
}

func appendInt(dst []byte, lead byte, n int64) []byte {
	dst = append(dst, lead)
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, "\r\n"...)
}

func appendBulk(dst []byte, s string) []byte {
	dst = appendInt(dst, '$', int64(len(s)))
	dst = append(dst, s...)
	return append(dst, "\r\n"...)
}
