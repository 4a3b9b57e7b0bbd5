package benchutil

import (
	"fmt"
	"strconv"
)

// Send writes a command without reading its reply.
func (c *Conn) Send(args ...string) error {
	fmt.Fprintf(c.w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c.w, "$%d\r\n%s\r\n", len(a), a)
	}
	return c.w.Flush()
}

// ReadStrings reads one array reply of bulk strings and integers (a
// pub/sub message: "pmessage", pattern, channel, payload; or a
// (p)subscribe confirmation), RESP2 or RESP3 push. Nil elements are "".
func (c *Conn) ReadStrings() ([]string, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || (line[0] != '*' && line[0] != '>') {
		return nil, fmt.Errorf("want an array, got %q", line)
	}
	n, err := strconv.Atoi(string(line[1 : len(line)-2]))
	if err != nil {
		return nil, fmt.Errorf("bad array header %q", line)
	}
	out := make([]string, 0, max(n, 0))
	for range n {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		if len(line) < 3 {
			return nil, fmt.Errorf("short element %q", line)
		}
		switch line[0] {
		case ':', '+':
			out = append(out, string(line[1:len(line)-2]))
		case '$':
			m, err := strconv.Atoi(string(line[1 : len(line)-2]))
			if err != nil {
				return nil, fmt.Errorf("bad bulk header %q", line)
			}
			if m < 0 {
				out = append(out, "")
				continue
			}
			b := make([]byte, m+2)
			if _, err := readFull(c.r, b); err != nil {
				return nil, err
			}
			out = append(out, string(b[:m]))
		default:
			return nil, fmt.Errorf("unexpected element %q", line)
		}
	}
	return out, nil
}
