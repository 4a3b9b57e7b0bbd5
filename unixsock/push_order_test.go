package unixsock_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/testdb"
)

// TestPushesNeverSplitReplies: a RESP3 client subscribed to keyspace
// events while it pipelines GETs of a large value (sent in several writes)
// gets every push between whole replies, and every reply intact.
func TestPushesNeverSplitReplies(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	ctx := context.Background()
	other := client(t, sc.socket)
	big := bytes.Repeat([]byte("b"), 100<<10)
	if err := other.Set(ctx, "big", big, 0).Err(); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", sc.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := bufio.NewReader(c)
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write([]byte("HELLO 3\r\nSUBSCRIBE __keyevent@0__:set\r\n")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"map", "push"} {
		if v, err := readResp3(rd); err != nil || !strings.HasPrefix(v, want) {
			t.Fatalf("%s: %.100q, %v", want, v, err)
		}
	}
	const rounds, perRound = 100, 10
	go func() {
		for i := 0; i < rounds; i++ {
			_, _ = c.Write(bytes.Repeat([]byte("GET big\r\n"), perRound))
		}
	}()
	go func() {
		for i := 0; i < 200; i++ {
			if err := other.Set(ctx, fmt.Sprintf("k%d", i), "v", 0).Err(); err != nil {
				return
			}
		}
	}()
	replies, pushes := 0, 0
	for replies < rounds*perRound || pushes < 200 {
		v, err := readResp3(rd)
		if err != nil {
			t.Fatalf("after %d replies and %d pushes: %v", replies, pushes, err)
		}
		switch {
		case strings.HasPrefix(v, "push [message __keyevent@0__:set k"):
			pushes++
		case v == "bulk "+string(big):
			replies++
		default:
			t.Fatalf("after %d replies and %d pushes: unexpected %.100q", replies, pushes, v)
		}
	}
}

// readResp3 reads one RESP3 value and renders it: "bulk <bytes>",
// "push [a b c]", "map [...]", ...
func readResp3(rd *bufio.Reader) (string, error) {
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	if len(line) < 3 || !strings.HasSuffix(line, "\r\n") {
		return "", fmt.Errorf("bad line %q", line)
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+', '-', ':', '_':
		return string(kind) + body, nil
	case '$', '=':
		n, err := strconv.Atoi(body)
		if err != nil {
			return "", fmt.Errorf("bad length %q", line)
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(rd, b); err != nil {
			return "", err
		}
		if string(b[n:]) != "\r\n" {
			return "", fmt.Errorf("bulk of %d not followed by CRLF: %q", n, b[n:])
		}
		return "bulk " + string(b[:n]), nil
	case '*', '>', '%':
		n, err := strconv.Atoi(body)
		if err != nil {
			return "", fmt.Errorf("bad count %q", line)
		}
		if kind == '%' {
			n *= 2
		}
		parts := make([]string, n)
		for i := range parts {
			v, err := readResp3(rd)
			if err != nil {
				return "", err
			}
			parts[i] = strings.TrimPrefix(v, "bulk ")
		}
		name := map[byte]string{'*': "array", '>': "push", '%': "map"}[kind]
		return name + " [" + strings.Join(parts, " ") + "]", nil
	}
	return "", fmt.Errorf("unknown type %q", line)
}
