package unixsock

import (
	"errors"
	"net"
)

// legacyGuard is the streaming guard that ran in front of redcon's Reader
// before the Parser replaced both; kept for BenchmarkParse's comparison.

var (
	legacyErrExpectedDollar = &protocolError{"expected '$'"}
	_                       = errors.New
)

const legacyMaxHeaderLine = 32

// legacyGuardState is where the scanner is within a command.
type legacyGuardState int

const (
	lgAtCommand   legacyGuardState = iota // expecting '*' or an inline command
	lgInInline                            // inside an inline line
	lgInMultiHead                         // inside "*<n>\r\n"
	lgAtBulk                              // expecting '$'
	lgInBulkHead                          // inside "$<n>\r\n"
	lgInBulkBody                          // skipping a bulk's bytes and its "\r\n"
)

// guard is a net.Conn whose reads are checked against the limits. It only
// scans headers; bulk payloads are skipped by count, so it costs little.
type legacyGuard struct {
	net.Conn
	maxBulk    int64 // largest bulk string accepted
	maxCommand int64 // largest command (sum of its bulks) accepted

	state    legacyGuardState
	n        int64 // digits parsed in a header, or bytes left of a bulk body
	neg      bool
	digits   int
	lineLen  int
	args     int64 // bulks left in the current command
	cmdBytes int64
	err      error
}

func newLegacyGuard(c net.Conn, maxBulk, maxCommand int64) *legacyGuard {
	return &legacyGuard{Conn: c, maxBulk: maxBulk, maxCommand: maxCommand}
}

// Read reads and checks; after a violation it returns the protocolError.
func (g *legacyGuard) Read(p []byte) (int, error) {
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

func (g *legacyGuard) scan(b []byte) error {
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch g.state {
		case lgAtCommand:
			switch c {
			case '*':
				g.state, g.n, g.neg, g.digits, g.lineLen, g.cmdBytes = lgInMultiHead, 0, false, 0, 0, 0
			case '\r', '\n':
			default:
				g.state, g.lineLen = lgInInline, 1
			}
		case lgInInline:
			if c == '\n' {
				g.state = lgAtCommand
				continue
			}
			if g.lineLen++; g.lineLen > maxInline {
				return errInlineTooBig
			}
		case lgInMultiHead, lgInBulkHead:
			if err := g.header(c); err != nil {
				return err
			}
		case lgAtBulk:
			if c != '$' {
				return legacyErrExpectedDollar
			}
			g.state, g.n, g.neg, g.digits, g.lineLen = lgInBulkHead, 0, false, 0, 0
		case lgInBulkBody:
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
func (g *legacyGuard) header(c byte) error {
	if g.lineLen++; g.lineLen > legacyMaxHeaderLine {
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

func (g *legacyGuard) headerErr() error {
	if g.state == lgInMultiHead {
		return errMultiBulkLength
	}
	return errBulkLength
}

func (g *legacyGuard) endHeader() error {
	if g.digits == 0 {
		return g.headerErr()
	}
	if g.state == lgInMultiHead {
		if g.neg || g.n > maxMultiBulk {
			return errMultiBulkLength
		}
		if g.n == 0 {
			g.state = lgAtCommand
			return nil
		}
		g.args, g.state = g.n, lgAtBulk
		return nil
	}
	if g.neg || g.n > g.maxBulk {
		return errBulkLength
	}
	if g.cmdBytes += g.n; g.cmdBytes > g.maxCommand {
		return errCommandTooBig
	}
	g.n += 2 // the body's \r\n
	g.state = lgInBulkBody
	return nil
}

func (g *legacyGuard) nextArg() {
	if g.args--; g.args > 0 {
		g.state = lgAtBulk
	} else {
		g.state = lgAtCommand
	}
}
