package unixsock_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/unixsock"
)

// loopConn dials the sidecar's socket for tests that write the protocol
// themselves (dialRaw), with a deadline on everything they do.
func loopConn(t *testing.T, socket string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := dialRaw(t, socket)
	_ = c.nc.SetDeadline(time.Now().Add(60 * time.Second))
	return c.nc, c.r
}

// TestLoopAnswersHitsInOneWrite: a pipeline of reads the mirror answers
// (GET of held values, EXISTS, TTL, PING) is answered on the event loop,
// without a handoff, and its replies leave in one write.
func TestLoopAnswersHitsInOneWrite(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	ctx := context.Background()
	rc := client(t, sc.socket)
	if err := rc.Set(ctx, "k", "value", 0).Err(); err != nil {
		t.Fatal(err)
	}
	nc, r := loopConn(t, sc.socket)
	var req, want strings.Builder
	for range 100 {
		req.WriteString(multibulk("GET", "k"))
		want.WriteString("$5\r\nvalue\r\n")
	}
	req.WriteString(multibulk("EXISTS", "k", "nokey") + multibulk("TTL", "k") + multibulk("GET", "nokey") + multibulk("PING"))
	want.WriteString(":1\r\n:-1\r\n$-1\r\n+PONG\r\n")
	// A first PING, so the connection is accepted and watched before the
	// counters are read.
	if _, err := io.WriteString(nc, multibulk("PING")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "+PONG\r\n" {
		t.Fatalf("PING: %q, %v", line, err)
	}
	before := sc.srv.Stats()
	if _, err := io.WriteString(nc, req.String()); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want.String() {
		t.Fatalf("replies differ:\n got %q\nwant %q", got, want.String())
	}
	after := sc.srv.Stats()
	if d := after.Handoffs - before.Handoffs; d != 0 {
		t.Errorf("%d handoffs for reads the mirror answers; want 0", d)
	}
	if d := after.LoopCommands - before.LoopCommands; d != 104 {
		t.Errorf("the loop answered %d commands; want 104", d)
	}
	if d := after.Writes - before.Writes; d != 1 {
		t.Errorf("the replies of one pipeline took %d writes; want 1", d)
	}
}

// TestLoopAnswersMGet: an MGET of up to 16 keys whose values the mirror
// holds (or knows missing) and that are small is answered on the loop; one
// of more keys, of a value to fetch again, or of large values is handed
// off, and every one answers as Redis would.
func TestLoopAnswersMGet(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	ctx := context.Background()
	rc := client(t, sc.socket)
	big := strings.Repeat("b", 100<<10)
	for k, v := range map[string]string{"k1": "one", "k2": "two", "k3": "three", "k4": "four", "big": big} {
		if err := rc.Set(ctx, k, v, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	nc, r := loopConn(t, sc.socket)
	roundTrip := func(req, want string) (loop, handoffs int64) {
		t.Helper()
		before := sc.srv.Stats()
		if _, err := io.WriteString(nc, req); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("replies differ:\n got %q\nwant %q", got, want)
		}
		after := sc.srv.Stats()
		return after.LoopCommands - before.LoopCommands, after.Handoffs - before.Handoffs
	}
	roundTrip(multibulk("PING"), "+PONG\r\n") // accepted and watched before counting

	if loop, h := roundTrip(multibulk("MGET", "k1", "k2", "nokey", "k3"),
		"*4\r\n$3\r\none\r\n$3\r\ntwo\r\n$-1\r\n$5\r\nthree\r\n"); loop != 1 || h != 0 {
		t.Errorf("MGET of held values: %d on the loop, %d handoffs; want 1 and 0", loop, h)
	}
	keys := []string{"MGET"}
	want := "*17\r\n"
	for i := range 17 {
		keys = append(keys, fmt.Sprint("k", i%4+1))
		want += fmt.Sprintf("$%d\r\n%s\r\n", len([]string{"one", "two", "three", "four"}[i%4]), []string{"one", "two", "three", "four"}[i%4])
	}
	if _, h := roundTrip(multibulk(keys...), want); h != 1 {
		t.Errorf("MGET of 17 keys: %d handoffs; want 1", h)
	}
	if _, h := roundTrip(multibulk("MGET", "k1", "big"), fmt.Sprintf("*2\r\n$3\r\none\r\n$%d\r\n%s\r\n", len(big), big)); h != 1 {
		t.Errorf("MGET of a 100 KiB value: %d handoffs; want 1", h)
	}
	sc.m.EvictValue("big")
	if _, h := roundTrip(multibulk("MGET", "big", "k2"), fmt.Sprintf("*2\r\n$%d\r\n%s\r\n$3\r\ntwo\r\n", len(big), big)); h != 1 {
		t.Errorf("MGET of a value to fetch again: %d handoffs; want 1", h)
	}
	if loop, h := roundTrip(multibulk("MGET", "k4", "nokey"), "*2\r\n$4\r\nfour\r\n$-1\r\n"); loop != 1 || h != 0 {
		t.Errorf("MGET after the handoffs: %d on the loop, %d handoffs; want 1 and 0", loop, h)
	}
}

// TestTrackingClientReadsOnTheLoop: a client tracking keys (CLIENT
// TRACKING ON, as rueidis turns on by default) has its reads answered on
// the loop, each registering its key before the read: a change after the
// read invalidates the key.
func TestTrackingClientReadsOnTheLoop(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('a', 'one'), ('b', 'two')`)
	w := dialRaw(t, sc.socket)
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		r := w.do("MGET", "a", "b")
		return r == "*2\r\n$3\r\none\r\n$3\r\ntwo\r\n", r
	})
	c := tracking(t, sc.socket)
	before := sc.srv.Stats()
	if r := c.do("GET", "a"); r != "$3\r\none\r\n" {
		t.Fatalf("GET a: %q", r)
	}
	if r := c.do("MGET", "b", "nokey"); r != "*2\r\n$3\r\ntwo\r\n_\r\n" {
		t.Fatalf("MGET b nokey: %q", r)
	}
	after := sc.srv.Stats()
	if loop, h := after.LoopCommands-before.LoopCommands, after.Handoffs-before.Handoffs; loop != 2 || h != 0 {
		t.Errorf("a tracking client's reads: %d on the loop, %d handoffs; want 2 and 0", loop, h)
	}
	exec(t, db, `UPDATE cache_entries SET value = 'three' WHERE key = 'a'`)
	c.expect(invalidation("a"), 10*time.Second)
	exec(t, db, `DELETE FROM cache_entries WHERE key = 'b'`)
	c.expect(invalidation("b"), 10*time.Second)
}

// TestHandoffKeepsOrder: commands that wait (writes) are handed off, and
// the replies of the reads around them still come in command order, each
// read seeing the writes before it.
func TestHandoffKeepsOrder(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	nc, r := loopConn(t, sc.socket)
	var req, want strings.Builder
	for i := range 50 {
		v := fmt.Sprint(i)
		req.WriteString(multibulk("GET", "k") + multibulk("SET", "k", v) + multibulk("GET", "k") +
			multibulk("INCR", "n") + multibulk("PING"))
		if i == 0 {
			want.WriteString("$-1\r\n")
		} else {
			prev := fmt.Sprint(i - 1)
			fmt.Fprintf(&want, "$%d\r\n%s\r\n", len(prev), prev)
		}
		fmt.Fprintf(&want, "+OK\r\n$%d\r\n%s\r\n:%d\r\n+PONG\r\n", len(v), v, i+1)
	}
	before := sc.srv.Stats()
	if _, err := io.WriteString(nc, req.String()); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("%v after %q", err, got)
	}
	if string(got) != want.String() {
		t.Fatalf("replies differ:\n got %q\nwant %q", got, want.String())
	}
	if d := sc.srv.Stats().Handoffs - before.Handoffs; d < 1 || d > 100 {
		t.Errorf("%d handoffs for 100 writes; want between 1 and 100", d)
	}
}

// TestSlowSenderIsNotRead: while a client's command waits on Postgres, the
// socket is not read: a client that goes on sending is held back by its
// socket, and the sidecar holds a bounded part of what it sent. Once the
// command completes everything is answered, in order.
func TestSlowSenderIsNotRead(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{writeTimeout: 30 * time.Second})
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("LOCK TABLE cache_entries IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	nc, r := loopConn(t, sc.socket)
	const pings = 500_000 // 7 MB of PINGs after a SET that waits for the lock
	chunk := []byte(strings.Repeat(multibulk("PING"), 10_000))
	var sent atomic.Int64
	go func() {
		if _, err := io.WriteString(nc, multibulk("SET", "k", "v")); err != nil {
			return
		}
		for range pings / 10_000 {
			n, err := nc.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	// Wait until the sender is held: no progress for half a second.
	deadline := time.Now().Add(20 * time.Second)
	last, since := int64(-1), time.Now()
	for time.Since(since) < 500*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("the sender was never held back: %d bytes sent", sent.Load())
		}
		if n := sent.Load(); n != last {
			last, since = n, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := sent.Load(); n >= 4<<20 {
		t.Fatalf("the sidecar took %d MiB from a client whose command waits", n>>20)
	}
	if b := sc.srv.Stats().ClientBuffers; b > 1<<20 {
		t.Fatalf("client buffers %d bytes while the sender is held; want at most 1 MiB", b)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "+OK\r\n" {
		t.Fatalf("SET: %q, %v", line, err)
	}
	pong := []byte("+PONG\r\n")
	buf := make([]byte, len(pong)*10_000)
	for i := 0; i < pings/10_000; i++ {
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatalf("after %d PONGs: %v", i*10_000, err)
		}
		if !bytes.Equal(buf, bytes.Repeat(pong, 10_000)) {
			t.Fatalf("replies %d-%d are not PONGs", i*10_000, (i+1)*10_000)
		}
	}
}

// TestCostlyCommandDoesNotStallTheLoop: KEYS over many keys is handed off
// like a command that waits, so a GET another client sends meanwhile is
// answered before it.
func TestCostlyCommandDoesNotStallTheLoop(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	if _, err := db.Exec(`INSERT INTO cache_entries(key, value)
		SELECT 'k' || i, 'v' FROM generate_series(1, 100000) i`); err != nil {
		t.Fatal(err)
	}
	sc := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.Loops = 1 }})
	a, ra := loopConn(t, sc.socket)
	b, rb := loopConn(t, sc.socket)
	if _, err := io.WriteString(b, multibulk("PING")); err != nil {
		t.Fatal(err)
	}
	if line, err := rb.ReadString('\n'); err != nil || line != "+PONG\r\n" {
		t.Fatalf("PING: %q, %v", line, err)
	}
	order := make(chan string, 2)
	go func() {
		line, err := ra.ReadString('\n')
		if err != nil || line != "*100000\r\n" {
			line = fmt.Sprintf("KEYS: %q, %v", line, err)
		}
		order <- line
	}()
	if _, err := io.WriteString(a, multibulk("KEYS", "*")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(b, multibulk("GET", "k1")); err != nil {
		t.Fatal(err)
	}
	if line, err := rb.ReadString('\n'); err != nil || line != "$1\r\n" {
		t.Fatalf("GET: %q, %v", line, err)
	}
	order <- "GET"
	if first := <-order; first != "GET" {
		t.Fatalf("the GET was answered after KEYS (%s): KEYS stalled the loop", first)
	}
}

// TestUnreadLargeRepliesStopTheClient: a client that pipelines GETs of a
// large value and reads nothing has its commands run only until its
// output passes the bound (1 MiB): the loop does not run the rest of what
// it read, each holding a value for the client.
func TestUnreadLargeRepliesStopTheClient(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	ctx := context.Background()
	if err := client(t, sc.socket).Set(ctx, "big", strings.Repeat("v", 512<<10), 0).Err(); err != nil {
		t.Fatal(err)
	}
	nc, err := net.Dial("unix", sc.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.(*net.UnixConn).SetReadBuffer(4096)
	gets := func() int64 { return sc.srv.CommandCalls()["get"] }
	before := gets()
	if _, err := io.WriteString(nc, strings.Repeat(multibulk("GET", "big"), 1000)); err != nil {
		t.Fatal(err)
	}
	// Wait until the GETs stop running: no new one for half a second.
	deadline := time.Now().Add(20 * time.Second)
	last, since := int64(-1), time.Now()
	for time.Since(since) < 500*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("GETs kept running: %d", gets()-before)
		}
		if n := gets(); n != last {
			last, since = n, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The bound, what the sockets hold (a few hundred KiB), and one reply.
	if ran := last - before; ran < 2 || ran > 8 {
		t.Fatalf("%d of 1000 GETs of 512 KiB ran for a client that reads nothing; want 2 to 8", ran)
	}
}
