package unixsock

import (
	"errors"
	"net"
)

// Protocol limits checked on the raw byte stream, before the RESP reader
// buffers anything: a length header beyond them closes the connection
// before the memory it announces is allocated.
const (
	maxMultiBulk  = 1024 * 1024 // arguments of one command (as Redis)
	maxInline     = 64 * 1024   // an inline (telnet) command line (as Redis)
	maxHeaderLine = 32          // "*<n>\r\n" or "$<n>\r\n"
)

// protocolError closes the connection after its message is sent.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "Protocol error: " + e.msg }

var (
	errBulkLength      = &protocolError{"invalid bulk length"}
	errMultiBulkLength = &protocolError{"invalid multibulk length"}
	errInlineTooBig    = &protocolError{"too big inline request"}
	errExpectedDollar  = &protocolError{"expected '$'"}
	errCommandTooBig   = &protocolError{"command too big"}
)

// guardState is where the scanner is within a command.
type guardState int

const (
	atCommand   guardState = iota // expecting '*' or an inline command
	inInline                      // inside an inline line
	inMultiHead                   // inside "*<n>\r\n"
	atBulk                        // expecting '$'
	inBulkHead                    // inside "$<n>\r\n"
	inBulkBody                    // skipping a bulk's bytes and its "\r\n"
)

// guard is a net.Conn whose reads are checked against the limits. It only
// scans headers; bulk payloads are skipped by count, so it costs little.
type guard struct {
	net.Conn
	maxBulk    int64 // largest bulk string accepted
	maxCommand int64 // largest command (sum of its bulks) accepted

	state    guardState
	n        int64 // digits parsed in a header, or bytes left of a bulk body
	neg      bool
	digits   int
	lineLen  int
	args     int64 // bulks left in the current command
	cmdBytes int64
	err      error
}

func newGuard(c net.Conn, maxBulk, maxCommand int64) *guard {
	return &guard{Conn: c, maxBulk: maxBulk, maxCommand: maxCommand}
}

// Read reads and checks; after a violation it returns the protocolError.
func (g *guard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.Conn.Read(p)
	if n > 0 {
		if perr := g.scan(p[:n]); perr != nil {
			g.err = perr
			return 0, perr
		}
	}
	return n, err
}

func (g *guard) scan(b []byte) error {
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch g.state {
		case atCommand:
			switch c {
			case '*':
				g.state, g.n, g.neg, g.digits, g.lineLen, g.cmdBytes = inMultiHead, 0, false, 0, 0, 0
			case '\r', '\n':
			default:
				g.state, g.lineLen = inInline, 1
			}
		case inInline:
			if c == '\n' {
				g.state = atCommand
				continue
			}
			if g.lineLen++; g.lineLen > maxInline {
				return errInlineTooBig
			}
		case inMultiHead, inBulkHead:
			if err := g.header(c); err != nil {
				return err
			}
		case atBulk:
			if c != '$' {
				return errExpectedDollar
			}
			g.state, g.n, g.neg, g.digits, g.lineLen = inBulkHead, 0, false, 0, 0
		case inBulkBody:
			// Skip the body (and its \r\n) by count.
			skip := min(g.n, int64(len(b)-i))
			g.n -= skip
			i += int(skip) - 1
			if g.n == 0 {
				g.nextArg()
			}
		}
	}
	return nil
}

// header consumes one byte of a "*<n>\r\n" or "$<n>\r\n" line.
func (g *guard) header(c byte) error {
	if g.lineLen++; g.lineLen > maxHeaderLine {
		return g.headerErr()
	}
	switch {
	case c == '-' && g.digits == 0 && !g.neg:
		g.neg = true
	case c >= '0' && c <= '9':
		g.n, g.digits = g.n*10+int64(c-'0'), g.digits+1
		if g.n > 1<<40 {
			return g.headerErr()
		}
	case c == '\r':
	case c == '\n':
		return g.endHeader()
	default:
		return g.headerErr()
	}
	return nil
}

func (g *guard) headerErr() error {
	if g.state == inMultiHead {
		return errMultiBulkLength
	}
	return errBulkLength
}

func (g *guard) endHeader() error {
	if g.digits == 0 {
		return g.headerErr()
	}
	if g.state == inMultiHead {
		if g.neg || g.n > maxMultiBulk {
			return errMultiBulkLength
		}
		if g.n == 0 {
			g.state = atCommand
			return nil
		}
		g.args, g.state = g.n, atBulk
		return nil
	}
	if g.neg || g.n > g.maxBulk {
		return errBulkLength
	}
	if g.cmdBytes += g.n; g.cmdBytes > g.maxCommand {
		return errCommandTooBig
	}
	g.n += 2 // the body's \r\n
	g.state = inBulkBody
	return nil
}

func (g *guard) nextArg() {
	if g.args--; g.args > 0 {
		g.state = atBulk
	} else {
		g.state = atCommand
	}
}

// isProtocolError reports whether err is a limit violation found by a guard.
func isProtocolError(err error) (*protocolError, bool) {
	var pe *protocolError
	ok := errors.As(err, &pe)
	return pe, ok
}
