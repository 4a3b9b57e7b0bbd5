package unixsock_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/unixsock"
)

// respConn is a raw connection that sends commands and reads whole RESP
// values back byte for byte, for comparing with Redis exactly.
type respConn struct {
	t  *testing.T
	c  net.Conn
	rd *bufio.Reader
}

func dialResp(t *testing.T, socket string) *respConn {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &respConn{t: t, c: c, rd: bufio.NewReader(c)}
}

// do sends one command and returns its reply's bytes.
func (r *respConn) do(args ...string) string {
	r.t.Helper()
	r.send(args...)
	return r.read()
}

func (r *respConn) send(args ...string) {
	r.t.Helper()
	if _, err := io.WriteString(r.c, multibulk(args...)); err != nil {
		r.t.Fatal(err)
	}
}

// read returns the next RESP2 or RESP3 value, byte for byte.
func (r *respConn) read() string {
	r.t.Helper()
	v, err := unixsock.ReadRESP(r.rd)
	if err != nil {
		r.t.Fatal(err)
	}
	return v
}

// pubsubScript runs the same pub/sub session on a server (a Redis, or a
// sidecar) and returns each step's bytes: a subscriber's confirmations, a
// publisher's replies (PUBLISH, PUBSUB, errors), then the messages the
// subscriber received, its refusal of PUBLISH in RESP2, and its
// unsubscriptions.
func pubsubScript(t *testing.T, socket string, proto int) []string {
	sub, pub := dialResp(t, socket), dialResp(t, socket)
	var out []string
	if proto == 3 {
		sub.do("HELLO", "3") // the server map differs: not compared
		pub.do("HELLO", "3")
	}
	sub.send("SUBSCRIBE", "news", "other")
	out = append(out, sub.read(), sub.read())
	sub.send("PSUBSCRIBE", "n*", "x?")
	out = append(out, sub.read(), sub.read())
	for _, cmd := range [][]string{
		{"PUBLISH", "news", "hello"},
		{"PUBLISH", "nobody", "x"},
		{"PUBLISH", "xy", ""},
		{"PUBLISH", "news"},
		{"PUBSUB", "CHANNELS", "n*"},
		{"PUBSUB", "CHANNELS", "o*"},
		{"PUBSUB", "CHANNELS", "zz*"},
		{"PUBSUB", "NUMSUB", "news", "other", "missing"},
		{"PUBSUB", "NUMSUB"},
		{"PUBSUB", "NUMPAT"},
		{"PUBSUB", "SHARDCHANNELS"},
		{"PUBSUB", "SHARDNUMSUB", "news"},
		{"PUBSUB", "HELP"},
		{"PUBSUB", "BOGUS"},
		{"PUBSUB", "CHANNELS", "a", "b"},
		{"PUBSUB", "NUMPAT", "x"},
		{"PUBSUB", "HELP", "x"},
		{"PUBSUB", "SHARDCHANNELS", "a", "b"},
		{"PUBSUB"},
	} {
		out = append(out, strings.Join(cmd, " ")+" -> "+pub.do(cmd...))
	}
	// The messages: news to the channel and to n*, nobody to n*, xy to
	// x?. All four are read before the subscriber's next command: a
	// sidecar delivers them through Postgres, after PUBLISH's reply.
	for i := 0; i < 4; i++ {
		out = append(out, "message "+sub.read())
	}
	if proto == 2 {
		out = append(out, "subscribed PUBLISH -> "+sub.do("PUBLISH", "news", "x"))
	}
	sub.send("UNSUBSCRIBE", "news")
	out = append(out, sub.read())
	sub.send("PUNSUBSCRIBE")
	out = append(out, sub.read(), sub.read())
	sub.send("UNSUBSCRIBE")
	out = append(out, sub.read())
	return out
}

// TestPubSubMatchesRedis (issue 18): PUBLISH, PUBSUB CHANNELS, NUMSUB,
// NUMPAT, HELP and the SHARD subcommands, their errors, the subscriber's
// message and pmessage pushes and its confirmations are byte for byte
// Redis 7's, in RESP2 and RESP3, when publisher and subscriber are two
// connections (a RESP3 client that publishes to itself gets PUBLISH's
// reply before the message, which comes back through Postgres).
func TestPubSubMatchesRedis(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	redisSock := startRedis(t)
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprint("RESP", proto), func(t *testing.T) {
			want := pubsubScript(t, redisSock, proto)
			got := pubsubScript(t, sc.socket, proto)
			for i := range want {
				if i >= len(got) || got[i] != want[i] {
					g := "(missing)"
					if i < len(got) {
						g = got[i]
					}
					t.Errorf("step %d:\n got  %q\n want %q", i, g, want[i])
				}
			}
		})
	}
}
