package script

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The engine against a real redis-server: each script runs as EVAL on
// redis-server, and on the engine with a Caller that sends its commands to
// the same redis-server; the replies and the data left behind must be the
// same. The replies are compared kind by kind (status and bulk differ), so
// both sides speak raw RESP.

// startRedis runs a redis-server on a Unix socket. scripts/setup installs
// Debian's redis-server; without it the test fails, as the project's other
// comparison tests do.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: run `make setup` (scripts/setup installs Debian's redis-server)")
	}
	dir, err := os.MkdirTemp("", "pgm-lua")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", socket, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: socket})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not answer within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return socket
}

// respConn sends commands and parses replies with ParseReply.
type respConn struct {
	c   net.Conn
	r   *bufio.Reader
	buf []byte
}

func dialRESP(t *testing.T, socket string) *respConn {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &respConn{c: c, r: bufio.NewReader(c)}
}

func (rc *respConn) do(args ...[]byte) (Reply, error) {
	var out []byte
	out = appendInt(out, '*', int64(len(args)))
	for _, a := range args {
		out = appendBulk(out, string(a))
	}
	rc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := rc.c.Write(out); err != nil {
		return Reply{}, err
	}
	for {
		if len(rc.buf) > 0 {
			rep, n, err := ParseReply(rc.buf)
			if err == nil {
				rc.buf = rc.buf[n:]
				return rep, nil
			}
			if !errors.Is(err, ErrIncomplete) {
				return Reply{}, err
			}
		}
		chunk := make([]byte, 64<<10)
		n, err := rc.r.Read(chunk)
		if err != nil {
			return Reply{}, err
		}
		rc.buf = append(rc.buf, chunk[:n]...)
	}
}

func (rc *respConn) must(t *testing.T, args ...string) Reply {
	t.Helper()
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	rep, err := rc.do(b...)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// redisCaller runs a script's commands on a redis-server connection.
type redisCaller struct {
	rc    *respConn
	wrote bool
}

// Call answers as Redis's script client: its own words for an unknown
// command and a wrong arity.
func (c *redisCaller) Call(ctx context.Context, args [][]byte) (Reply, error) {
	switch strings.ToUpper(string(args[0])) {
	case "SET", "DEL", "INCR", "INCRBY", "APPEND", "PEXPIRE", "EXPIRE", "SETNX", "GETSET", "DECR":
		c.wrote = true
	}
	rep, err := c.rc.do(args...)
	switch {
	case err != nil:
		return rep, err
	case strings.HasPrefix(rep.Str, "ERR unknown command"):
		return ErrorReply(MsgUnknownCommand), nil
	case strings.HasPrefix(rep.Str, "ERR wrong number of arguments"):
		return ErrorReply(MsgWrongArity), nil
	}
	return rep, nil
}

func (c *redisCaller) Wrote() bool { return c.wrote }

// dataOf renders every key and value of the server.
func dataOf(t *testing.T, rc *respConn) string {
	keys := rc.must(t, "KEYS", "*")
	var out []string
	for _, k := range keys.Elems {
		v := rc.must(t, "GET", k.Str)
		ttl := rc.must(t, "PTTL", k.Str)
		out = append(out, k.Str+"="+render(v)+" ttl>0="+map[bool]string{true: "y", false: "n"}[ttl.Int > 0])
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

type compareCase struct {
	src   string
	keys  []string
	args  []string
	setup [][]string // commands run before the script, on both sides
}

func TestEvalMatchesRedisServer(t *testing.T) {
	socket := startRedis(t)
	ref, conn := dialRESP(t, socket), dialRESP(t, socket)
	e := New(Config{})
	known := map[string]bool{}
	cases := compareCases()
	for _, src := range knownDivergences {
		known[src] = true
		cases = append(cases, compareCase{src: src})
	}
	for _, tc := range cases {
		prepare := func() {
			ref.must(t, "FLUSHALL")
			for _, cmd := range tc.setup {
				ref.must(t, cmd...)
			}
		}
		prepare()
		evalArgs := append([]string{"EVAL", tc.src, itoa(len(tc.keys))}, tc.keys...)
		want := ref.must(t, append(evalArgs, tc.args...)...)
		wantData := dataOf(t, ref)

		prepare()
		req := Request{Caller: &redisCaller{rc: conn}}
		for _, k := range tc.keys {
			req.Keys = append(req.Keys, []byte(k))
		}
		for _, a := range tc.args {
			req.Args = append(req.Args, []byte(a))
		}
		got, err := e.Eval(context.Background(), []byte(tc.src), req)
		if err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		gotData := dataOf(t, ref)
		if known[tc.src] {
			t.Logf("known divergence %q\n  engine:       %s\n  redis-server: %s", tc.src, render(got), render(want))
			continue
		}
		if render(got) != render(want) {
			t.Errorf("%q\n  engine:       %s\n  redis-server: %s", tc.src, render(got), render(want))
		}
		if gotData != wantData {
			t.Errorf("%q leaves\n  engine:       %s\n  redis-server: %s", tc.src, gotData, wantData)
		}
	}
}
