package script

import (
	"bytes"
	"errors"
	"strconv"
)

// ErrIncomplete is ParseReply's error when b holds only the start of a reply.
var ErrIncomplete = errors.New("script: incomplete RESP reply")

// maxParseDepth bounds the nesting ParseReply accepts.
const maxParseDepth = 1000

// ParseReply parses the first RESP2 or RESP3 reply in b and returns it with
// the number of bytes it took. A server can run a script's command on a
// scratch connection and hand what it wrote to the script through
// ParseReply, as Redis does with its script client. Attributes (|) are
// skipped, as Redis skips them for scripts; push messages (>) parse as arrays.
func ParseReply(b []byte) (Reply, int, error) {
	return parseReply(b, 0)
}

func parseReply(b []byte, depth int) (Reply, int, error) {
	if depth > maxParseDepth {
		return Reply{}, 0, errors.New("script: RESP reply nested too deeply")
	}
	line, n, err := respLine(b)
	if err != nil {
		return Reply{}, 0, err
	}
	body := string(line[1:])
	switch line[0] {
	case '+':
		return StatusReply(body), n, nil
	case '-':
		return ErrorReply(body), n, nil
	case ':':
		v, err := strconv.ParseInt(body, 10, 64)
		return IntReply(v), n, err
	case '$', '=', '!':
		return parseBulk(b, line[0], body, n)
	case '*', '%', '~', '>', '|':
		return parseAggregate(b, line[0], body, n, depth)
	case '_':
		return NullReply(), n, nil
	case '#':
		return boolReply(body == "t"), n, nil
	case ',':
		return parseDouble(body), n, nil
	case '(':
		return Reply{Kind: BigNumber, Str: body}, n, nil
	}
	return Reply{}, 0, errors.New("script: unknown RESP type byte " + strconv.Quote(string(line[:1])))
}

// respLine returns the first line of b, without its CRLF, and its length with it.
func respLine(b []byte) ([]byte, int, error) {
	i := bytes.Index(b, []byte("\r\n"))
	if i < 0 {
		return nil, 0, ErrIncomplete
	}
	if i == 0 {
		return nil, 0, errors.New("script: empty RESP line")
	}
	return b[:i], i + 2, nil
}

func boolReply(t bool) Reply {
	if t {
		return Reply{Kind: Bool, Int: 1}
	}
	return Reply{Kind: Bool}
}

func parseDouble(body string) Reply {
	switch body {
	case "inf", "+inf":
		return Reply{Kind: Double, Float: posInf}
	case "-inf":
		return Reply{Kind: Double, Float: -posInf}
	}
	f, _ := strconv.ParseFloat(body, 64)
	return Reply{Kind: Double, Float: f}
}

// parseBulk parses a bulk string ($), a verbatim string (=) or a blob error (!).
func parseBulk(b []byte, lead byte, body string, n int) (Reply, int, error) {
	size, err := strconv.Atoi(body)
	if err != nil {
		return Reply{}, 0, errors.New("script: bad RESP length " + strconv.Quote(body))
	}
	if size < 0 {
		return NullReply(), n, nil
	}
	if len(b) < n+size+2 {
		return Reply{}, 0, ErrIncomplete
	}
	s := string(b[n : n+size])
	n += size + 2
	switch lead {
	case '!':
		return ErrorReply(s), n, nil
	case '=':
		if len(s) >= 4 && s[3] == ':' {
			return Reply{Kind: Verbatim, Format: s[:3], Str: s[4:]}, n, nil
		}
		return Reply{Kind: Verbatim, Format: "txt", Str: s}, n, nil
	}
	return BulkReply(s), n, nil
}

// parseAggregate parses an array (*), map (%), set (~), push (>) or an
// attribute (|), which it skips to return the reply that follows it.
func parseAggregate(b []byte, lead byte, body string, n, depth int) (Reply, int, error) {
	count, err := strconv.Atoi(body)
	if err != nil {
		return Reply{}, 0, errors.New("script: bad RESP length " + strconv.Quote(body))
	}
	if count < 0 {
		return Reply{Kind: NullArray}, n, nil
	}
	elems := count
	if lead == '%' || lead == '|' {
		elems *= 2
	}
	if elems > len(b) { // each element takes at least one byte: no huge allocation
		return Reply{}, 0, ErrIncomplete
	}
	r := Reply{Kind: Array, Elems: make([]Reply, 0, elems)}
	for i := 0; i < elems; i++ {
		e, m, err := parseReply(b[n:], depth+1)
		if err != nil {
			return Reply{}, 0, err
		}
		r.Elems = append(r.Elems, e)
		n += m
	}
	switch lead {
	case '%':
		r.Kind = Map
	case '~':
		r.Kind = Set
	case '|':
		next, m, err := parseReply(b[n:], depth)
		return next, n + m, err
	}
	return r, n, nil
}
