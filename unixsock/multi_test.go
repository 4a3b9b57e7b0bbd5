package unixsock_test

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/testdb"
)

// rawConn is one connection speaking RESP, returning replies as raw text,
// so that MULTI state (per connection) and exact reply shapes compare.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

func dialRaw(t testing.TB, socket string) *rawConn {
	t.Helper()
	nc, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// do sends a command and returns its reply as raw RESP text.
func (c *rawConn) do(args ...string) string {
	c.t.Helper()
	_ = c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c.nc, multibulk(args...)); err != nil {
		c.t.Fatal(err)
	}
	var out strings.Builder
	c.read(&out)
	return out.String()
}

func (c *rawConn) read(out *strings.Builder) {
	c.t.Helper()
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read reply: %v (so far %q)", err, out.String())
	}
	out.WriteString(line)
	n, _ := strconv.Atoi(strings.TrimSpace(line[1:]))
	switch line[0] {
	case '$', '=':
		if n >= 0 {
			buf := make([]byte, n+2)
			if _, err := ioReadFull(c.r, buf); err != nil {
				c.t.Fatal(err)
			}
			out.Write(buf)
		}
	case '*', '>', '~':
		for i := 0; i < n; i++ {
			c.read(out)
		}
	case '%':
		for i := 0; i < 2*n; i++ {
			c.read(out)
		}
	}
}

func ioReadFull(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// multiCases run on one connection each, against Redis and pgmirror alike;
// "k", "k2", "k3" are made unique per case.
var multiCases = map[string][][]string{
	"nesting and misuse": {{"EXEC"}, {"DISCARD"}, {"MULTI"}, {"MULTI"}, {"WATCH", "k"}, {"EXEC"}, {"MULTI"}, {"EXEC"}},
	"queued in order": {{"SET", "k2", "abc"}, {"MULTI"}, {"SET", "k", "1"}, {"INCR", "k"}, {"INCR", "k2"}, {"GET", "k"},
		{"APPEND", "k", "x"}, {"GET", "k"}, {"STRLEN", "k"}, {"EXISTS", "k", "k2", "k3", "k"}, {"TTL", "k"}, {"PTTL", "k3"},
		{"TYPE", "k"}, {"TYPE", "k3"}, {"MGET", "k", "k2", "k3"}, {"DEL", "k2"}, {"GET", "k2"}, {"PING"}, {"EXEC"}, {"GET", "k"}},
	"run-time errors": {{"MULTI"}, {"SET", "k", "v", "EX", "0"}, {"SET", "k", "v", "BOGUS"}, {"SET", "k", "v"},
		{"INCRBY", "k", "x"}, {"EXEC"}, {"GET", "k"}},
	"unknown command aborts": {{"MULTI"}, {"SET", "k", "v"}, {"NOSUCHCOMMAND", "a"}, {"SET", "k2", "v"}, {"EXEC"},
		{"GET", "k"}, {"EXISTS", "k2"}},
	"arity error aborts": {{"MULTI"}, {"SET", "k", "v"}, {"GET"}, {"EXEC"}, {"GET", "k"}},
	"discard":            {{"MULTI"}, {"SET", "k", "v"}, {"DISCARD"}, {"GET", "k"}, {"EXEC"}},
	"reads only":         {{"SET", "k", "v"}, {"MULTI"}, {"PTTL", "k"}, {"GET", "k"}, {"GET", "k2"}, {"ECHO", "e"}, {"EXEC"}},
	"expiry in a block": {{"MULTI"}, {"SET", "k", "v", "EX", "100"}, {"TTL", "k"}, {"PERSIST", "k"}, {"TTL", "k"},
		{"SET", "k2", "v", "PX", "1"}, {"EXEC"}},
	"watch unchanged applies": {{"SET", "k", "1"}, {"WATCH", "k", "k2"}, {"GET", "k"}, {"MULTI"}, {"INCR", "k"}, {"EXEC"}, {"GET", "k"}},
	"watch own change aborts": {{"WATCH", "k"}, {"SET", "k", "2"}, {"MULTI"}, {"SET", "k", "3"}, {"EXEC"}, {"GET", "k"},
		{"MULTI"}, {"SET", "k", "4"}, {"EXEC"}, {"GET", "k"}},
	"unwatch":     {{"WATCH", "k"}, {"SET", "k", "2"}, {"UNWATCH"}, {"MULTI"}, {"SET", "k", "3"}, {"EXEC"}, {"GET", "k"}},
	"watch resp3": {{"HELLO", "3"}, {"WATCH", "k"}, {"SET", "k", "x"}, {"MULTI"}, {"GET", "k"}, {"EXEC"}},
	"reads see the block's writes": {{"MULTI"}, {"SET", "k", "hello"}, {"GETRANGE", "k", "1", "3"},
		{"SETRANGE", "k", "5", " world"}, {"SUBSTR", "k", "0", "-1"}, {"SETBIT", "k2", "7", "1"}, {"GETBIT", "k2", "7"},
		{"BITCOUNT", "k"}, {"BITPOS", "k2", "1"}, {"TOUCH", "k", "k3"}, {"RENAME", "k", "k3"}, {"GET", "k3"},
		{"EXISTS", "k"}, {"COPY", "k3", "k"}, {"GETSET", "k", "new"}, {"GETDEL", "k3"}, {"MSET", "k3", "a", "k2", "b"},
		{"MGET", "k", "k2", "k3"}, {"STRLEN", "k"}, {"TYPE", "k3"}, {"EXPIRE", "k", "100"}, {"TTL", "k"}, {"EXEC"}},
	"discard unwatches": {{"WATCH", "k"}, {"SET", "k", "2"}, {"MULTI"}, {"DISCARD"}, {"MULTI"}, {"SET", "k", "5"},
		{"EXEC"}, {"GET", "k"}},
}

// TestMultiMatchesRedis compares MULTI/EXEC/DISCARD/WATCH/UNWATCH replies,
// byte for byte, with a real Redis.
func TestMultiMatchesRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	for name, steps := range multiCases {
		t.Run(name, func(t *testing.T) {
			red, pgm := dialRaw(t, redisSock), dialRaw(t, sc.socket)
			prefix := strings.ReplaceAll(name, " ", "_") + ":"
			for i, st := range steps {
				args := make([]string, len(st))
				for j, a := range st {
					if j > 0 && (a == "k" || a == "k2" || a == "k3") {
						a = prefix + a
					}
					args[j] = a
				}
				want, got := red.do(args...), pgm.do(args...)
				if st[0] == "HELLO" {
					continue // the servers name themselves differently
				}
				if want != got {
					t.Errorf("step %d %q:\n redis    %q\n pgmirror %q", i, st, want, got)
				}
			}
		})
	}
}

// A queue-time error applies nothing: Postgres holds none of the block.
func TestExecAbortAppliesNothing(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	c := dialRaw(t, sc.socket)
	for _, cmd := range [][]string{{"MULTI"}, {"SET", "a", "1"}, {"INCR", "b"}, {"SET", "c"}, {"SET", "d", "1"}} {
		c.do(cmd...)
	}
	if got := c.do("EXEC"); !strings.HasPrefix(got, "-EXECABORT") {
		t.Fatalf("EXEC: %q", got)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM cache_entries`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows after EXECABORT: %d %v", n, err)
	}
	// The connection is out of the transaction: the next command runs.
	if got := c.do("SET", "e", "1"); got != "+OK\r\n" {
		t.Fatalf("SET after EXECABORT: %q", got)
	}
}
