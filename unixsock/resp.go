package unixsock

import (
	"bytes"
	"errors"
	"math/bits"
)

// Protocol limits a Parser applies, besides its MaxBulk and MaxFrame.
const (
	maxMultiBulk = 1024 * 1024 // arguments of one command (as Redis)
	maxInline    = 64 * 1024   // an inline (telnet) command line (as Redis)
	// argCost is what one argument costs beyond its bytes, counted against
	// MaxFrame: its slice header in the command and its position while the
	// command is parsed. It keeps a command of a million empty arguments
	// within the bound too.
	argCost = 48
)

// protocolError closes the connection after its message is sent.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "Protocol error: " + e.msg }

// The protocol errors, worded as Redis words them.
var (
	errBulkLength       = &protocolError{"invalid bulk length"}
	errMultiBulkLength  = &protocolError{"invalid multibulk length"}
	errInlineTooBig     = &protocolError{"too big inline request"}
	errUnbalancedQuotes = &protocolError{"unbalanced quotes in request"}
	errCommandTooBig    = &protocolError{"command too big"}
)

func errExpectedDollar(c byte) error {
	return &protocolError{"expected '$', got '" + string(rune(c)) + "'"}
}

// isProtocolError reports whether err is a protocol violation a Parser found.
func isProtocolError(err error) (*protocolError, bool) {
	var pe *protocolError
	ok := errors.As(err, &pe)
	return pe, ok
}

// parseState is where a Parser is within a command.
type parseState uint8

const (
	stStart    parseState = iota // before a command: '*' starts a multibulk, any other byte an inline line
	stInline                     // inside an inline line
	stMultiLen                   // the count of "*<n>\r\n"
	stMultiLF                    // its '\n'
	stDollar                     // the '$' of the next argument
	stBulkLen                    // the length of "$<n>\r\n"
	stBulkLF                     // its '\n'
	stBody                       // an argument's bytes
	stBodyCR                     // the '\r' after them
	stBodyLF                     // the '\n'
)

// Parser splits a client's byte stream into commands: RESP multibulk
// commands and inline (telnet) lines, as Redis frames them. It keeps its
// state between calls, so input may arrive in pieces of any size, one byte
// at a time included, and each byte is looked at once: a command trickled
// in costs the bytes it sent, never a re-parse. What it buffers for a
// command not yet complete is bounded by MaxFrame, checked before anything
// is allocated for an argument.
//
// It is independent of any connection: Parse takes the bytes a read (or an
// event loop's inbound buffer) holds and returns the whole commands in
// them. The arguments of a returned command live in memory of their own
// that the Parser never writes again, so they may be kept (as strings
// sharing their bytes) after the input buffer is reused.
//
// Framing follows Redis: a command starting with '*' is a multibulk, any
// other byte (a stray '\r' included) starts an inline line, so no prefix
// can make the bound apply to other bytes than the ones buffered. Inline
// lines are split as redcon splits them (spaces, and quotes with \n \r \t
// escapes).
type Parser struct {
	// MaxBulk is the largest argument accepted; a longer one is an
	// "invalid bulk length" protocol error.
	MaxBulk int64
	// MaxFrame bounds the memory of one command: the bytes of its
	// arguments plus argCost each. Past it the command is a
	// "command too big" protocol error.
	MaxFrame int64

	state  parseState
	err    error // sticky: after a protocol error the stream cannot be resynchronised
	num    int64 // the number of a "*<n>" or "$<n>" header
	sign   bool  // a sign was read
	neg    bool
	digits bool

	nargs   int   // arguments the multibulk in progress announced
	have    int   // of which complete
	bodyLen int64 // length of the argument in progress
	left    int64 // of which still to come
	cost    int64 // the command in progress, as counted against MaxFrame
	done    int64 // cost of the commands the last Parse returned

	// While the command in progress began in the current call, its
	// arguments are positions in the input: marks holds a start and an end
	// for each. When a call ends inside a command, the arguments so far are
	// copied to own (spilled), and later calls add the rest there.
	marks   []int
	spilled bool
	own     []byte // the bodies of a spilled command, back to back
	ends    []int  // the end of each complete argument in own
	line    []byte // an inline line begun in an earlier call
}

// NewParser returns a Parser for values of at most maxValue bytes: an
// argument may be 64 KiB longer (so an oversized value gets a clear error
// from its command rather than a protocol error), and a command may hold
// max(maxValue, 1 MiB) plus 64 KiB.
func NewParser(maxValue int64) *Parser {
	return &Parser{MaxBulk: maxValue + 64<<10, MaxFrame: max(maxValue, 1<<20) + 64<<10}
}

// Parse consumes b and appends to cmds the commands completed in it, at
// most max of them when max > 0. It returns the commands, the number of
// bytes of b consumed (all of b unless max commands were found first), and
// a *protocolError when the input breaks the protocol: the commands before
// the error are returned with it, and the connection should be answered
// and closed (every later call returns the same error).
func (p *Parser) Parse(b []byte, cmds [][][]byte, max int) ([][][]byte, int, error) {
	p.done = 0
	if p.err != nil {
		return cmds, 0, p.err
	}
	found := 0
	i := 0
	for i < len(b) {
		var cmd [][]byte
		var err error
		switch p.state {
		case stStart:
			if max > 0 && found >= max {
				return cmds, i, nil
			}
			i = p.start(b, i)
		case stInline:
			i, cmd, err = p.inline(b, i)
		case stBody, stBodyCR, stBodyLF:
			i, cmd, err = p.body(b, i)
		default:
			i, err = p.header(b, i)
		}
		if err != nil {
			return cmds, i, p.fail(err)
		}
		if cmd != nil {
			cmds = append(cmds, cmd)
			found++
		}
	}
	if p.state > stInline && !p.spilled {
		p.spill(b)
	}
	return cmds, i, nil
}

// start begins a command at b[i]: '*' a multibulk, any other byte an
// inline line. It returns where parsing goes on.
func (p *Parser) start(b []byte, i int) int {
	if b[i] != '*' {
		p.state = stInline
		return i
	}
	p.state, p.nargs, p.have, p.cost, p.spilled = stMultiLen, 0, 0, 0, false
	p.marks = p.marks[:0]
	p.startNumber()
	return i + 1
}

// inline reads an inline line from b[i:]. It returns where parsing goes
// on, and the command when the line ended with arguments in it.
func (p *Parser) inline(b []byte, i int) (int, [][]byte, error) {
	j := bytes.IndexByte(b[i:], '\n')
	if j < 0 {
		if len(p.line)+len(b)-i > maxInline {
			return i, nil, errInlineTooBig
		}
		p.line = append(p.line, b[i:]...)
		return len(b), nil, nil
	}
	line := b[i : i+j]
	if len(p.line) > 0 {
		p.line = append(p.line, line...)
		line = p.line
	}
	i += j + 1
	if len(line) > maxInline {
		return i, nil, errInlineTooBig
	}
	args, err := splitInline(line)
	if cap(p.line) > 4096 {
		p.line = nil
	}
	p.line = p.line[:0]
	if err != nil {
		return i, nil, err
	}
	p.state = stStart
	if len(args) > 0 {
		p.done += int64(len(line)) + argCost*int64(len(args))
	}
	return i, args, nil
}

// header reads from b[i:] a multibulk's headers: its "*<n>\r\n" and the
// "$<n>\r\n" of each argument, up to the end of b or of the header
// before an argument's bytes. It returns where parsing goes on.
func (p *Parser) header(b []byte, i int) (int, error) {
	for ; i < len(b); i++ {
		switch p.state {
		case stMultiLen, stBulkLen:
			if err := p.digit(b[i]); err != nil {
				return i, err
			}
		case stMultiLF:
			n := p.number()
			if b[i] != '\n' || n <= 0 {
				return i, errMultiBulkLength
			}
			p.nargs, p.state = int(n), stDollar
		case stDollar:
			if b[i] != '$' {
				return i, errExpectedDollar(b[i])
			}
			p.state = stBulkLen
			p.startNumber()
		case stBulkLF:
			n := p.number()
			if b[i] != '\n' || n < 0 {
				return i, errBulkLength
			}
			i++
			if p.cost+argCost+n > p.MaxFrame {
				return i, errCommandTooBig
			}
			p.cost += argCost + n
			p.bodyLen, p.left, p.state = n, n, stBody
			if !p.spilled {
				p.marks = append(p.marks, i)
			}
			return i, nil
		}
	}
	return i, nil
}

// body reads from b[i:] an argument's bytes and the "\r\n" after them, up
// to the end of b or of the argument. It returns where parsing goes on,
// and the command when its last argument ended.
func (p *Parser) body(b []byte, i int) (int, [][]byte, error) {
	if p.state == stBody {
		take := int(min(p.left, int64(len(b)-i)))
		if p.spilled {
			p.appendOwn(b[i:i+take], p.left-int64(take))
		}
		i += take
		if p.left -= int64(take); p.left > 0 {
			return i, nil, nil
		}
		p.state = stBodyCR
	}
	if i < len(b) && p.state == stBodyCR {
		if b[i] != '\r' {
			return i, nil, errBulkLength
		}
		i++
		p.state = stBodyLF
	}
	if i == len(b) {
		return i, nil, nil
	}
	if b[i] != '\n' {
		return i, nil, errBulkLength
	}
	i++
	if p.spilled {
		p.ends = append(p.ends, len(p.own))
	} else {
		p.marks = append(p.marks, i-2)
	}
	if p.have++; p.have < p.nargs {
		p.state = stDollar
		return i, nil, nil
	}
	cmd := p.complete(b)
	p.done += p.cost
	p.state = stStart
	return i, cmd, nil
}

// Buffered returns the bytes held for a command not yet complete.
func (p *Parser) Buffered() int64 {
	return int64(cap(p.own)+cap(p.line)) + 8*int64(cap(p.ends))
}

// Returned returns what the commands the last Parse returned cost, as
// counted against MaxFrame: the memory they hold until they are dropped.
func (p *Parser) Returned() int64 { return p.done }

func (p *Parser) fail(err error) error {
	p.err = err
	p.own, p.ends, p.line, p.marks = nil, nil, nil, nil
	return err
}

func (p *Parser) startNumber() { p.num, p.sign, p.neg, p.digits = 0, false, false, false }

// number returns the header number read so far.
func (p *Parser) number() int64 {
	if p.neg {
		return -p.num
	}
	return p.num
}

// digit reads one byte of a "*<n>" or "$<n>" header: an optional sign,
// digits, then '\r'. A number past its bound fails at once, so a header
// never costs more than the few bytes of state it has.
func (p *Parser) digit(c byte) error {
	limit, err := p.MaxBulk, errBulkLength
	if p.state == stMultiLen {
		limit, err = maxMultiBulk, errMultiBulkLength
	}
	switch {
	case c >= '0' && c <= '9':
		p.num = p.num*10 + int64(c-'0')
		p.digits = true
		if p.num > limit {
			return err
		}
	case (c == '-' || c == '+') && !p.sign && !p.digits:
		p.sign, p.neg = true, c == '-'
	case c == '\r' && p.digits:
		p.state++ // stMultiLen -> stMultiLF, stBulkLen -> stBulkLF
	default:
		return err
	}
	return nil
}

// appendOwn adds body bytes of a spilled command; more is how many bytes
// of the same argument are still to come. The buffer doubles as bytes
// arrive, but never past the end of the argument: a trickled argument
// costs at most twice what was sent, a whole one its size.
func (p *Parser) appendOwn(data []byte, more int64) {
	need := len(p.own) + len(data)
	if need > cap(p.own) {
		// Powers of two: what a command half sent holds (and is counted
		// for) depends on its bytes, not on how the reads split them.
		c := max(ceilPow2(need), 512)
		if lim := int64(need) + more; int64(c) > lim {
			c = int(lim)
		}
		own := make([]byte, len(p.own), c)
		copy(own, p.own)
		p.own = own
	}
	p.own = append(p.own, data...)
}

// ceilPow2 is the least power of two >= n (n > 0).
func ceilPow2(n int) int { return 1 << bits.Len(uint(n-1)) }

// spill copies the arguments of the command in progress out of b, which
// the caller will reuse: what later calls bring is added to them.
func (p *Parser) spill(b []byte) {
	p.spilled = true
	need := 0
	for a := 0; a < p.have; a++ {
		need += p.marks[2*a+1] - p.marks[2*a]
	}
	if len(p.marks) > 2*p.have {
		need += int(p.bodyLen - p.left)
	}
	p.own = make([]byte, 0, int(min(int64(need)+p.left, int64(max(ceilPow2(need), 512)))))
	for a := 0; a < p.have; a++ {
		p.appendOwn(b[p.marks[2*a]:p.marks[2*a+1]], 0)
		p.ends = append(p.ends, len(p.own))
	}
	if len(p.marks) > 2*p.have { // inside an argument's body or its "\r\n"
		start := p.marks[2*p.have]
		end := start + int(p.bodyLen-p.left)
		p.appendOwn(b[start:end], p.left)
	}
	if cap(p.marks) > 1024 {
		p.marks = nil
	}
	p.marks = p.marks[:0]
}

// complete returns the arguments of the multibulk just ended, in memory
// of their own.
func (p *Parser) complete(b []byte) [][]byte {
	args := make([][]byte, p.nargs)
	if p.spilled {
		if p.own == nil {
			p.own = []byte{}
		}
		start := 0
		for k, e := range p.ends {
			args[k] = p.own[start:e:e]
			start = e
		}
		p.own, p.ends = nil, p.ends[:0]
		if cap(p.ends) > 1024 {
			p.ends = nil
		}
		return args
	}
	total := 0
	for k := 0; k < len(p.marks); k += 2 {
		total += p.marks[k+1] - p.marks[k]
	}
	raw := make([]byte, total)
	off := 0
	for k := range args {
		n := copy(raw[off:], b[p.marks[2*k]:p.marks[2*k+1]])
		args[k] = raw[off : off+n : off+n]
		off += n
	}
	if cap(p.marks) > 1024 {
		p.marks = nil
	}
	return args
}

// splitInline splits an inline command line (its '\n' removed) into
// arguments as redcon does: a trailing '\r' is dropped; arguments are
// separated by spaces; an argument may be quoted with " or ' (the quote
// opening it, and a space or the end following the closing one), inside
// which \n, \r and \t are escapes and a backslash keeps any other byte.
func splitInline(line []byte) ([][]byte, error) {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	out := make([]byte, 0, len(line))
	var ends []int
	i := 0
	for i < len(line) {
		c := line[i]
		switch {
		case c == ' ':
			i++
		case c == '"' || c == '\'':
			quote := c
			i++
			escape, closed := false, false
			for i < len(line) && !closed {
				c := line[i]
				i++
				switch {
				case escape:
					escape = false
					switch c {
					case 'n':
						c = '\n'
					case 'r':
						c = '\r'
					case 't':
						c = '\t'
					}
					out = append(out, c)
				case c == quote:
					closed = true
				case c == '\\':
					escape = true
				default:
					out = append(out, c)
				}
			}
			if !closed || i < len(line) && line[i] != ' ' {
				return nil, errUnbalancedQuotes
			}
			ends = append(ends, len(out))
		default:
			for i < len(line) && line[i] != ' ' {
				if line[i] == '"' || line[i] == '\'' {
					return nil, errUnbalancedQuotes
				}
				out = append(out, line[i])
				i++
			}
			ends = append(ends, len(out))
		}
	}
	if len(ends) == 0 {
		return nil, nil
	}
	args := make([][]byte, len(ends))
	from := 0
	for k, e := range ends {
		args[k] = out[from:e:e]
		from = e
	}
	return args, nil
}
