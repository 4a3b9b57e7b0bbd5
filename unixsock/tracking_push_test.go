package unixsock_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/unixsock"
)

// invalidation is the raw RESP3 push that invalidates keys.
func invalidation(keys ...string) string {
	s := ">2\r\n$10\r\ninvalidate\r\n" + fmt.Sprintf("*%d\r\n", len(keys))
	for _, k := range keys {
		s += fmt.Sprintf("$%d\r\n%s\r\n", len(k), k)
	}
	return s
}

// flushAll is the raw RESP3 push that invalidates everything.
const flushAll = ">2\r\n$10\r\ninvalidate\r\n_\r\n"

// next reads the next value the connection receives (a reply or a push),
// waiting at most d.
func (c *rawConn) next(d time.Duration) string {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	var out strings.Builder
	c.read(&out)
	return out.String()
}

// expect reads the next value and fails unless it is want; it returns how
// long it took.
func (c *rawConn) expect(want string, d time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	if got := c.next(d); got != want {
		c.t.Fatalf("got %q, want %q", got, want)
	}
	return time.Since(start)
}

// tracking opens a RESP3 connection with CLIENT TRACKING ON and opts.
func tracking(t testing.TB, socket string, opts ...string) *rawConn {
	t.Helper()
	c := dialRaw(t, socket)
	c.do("HELLO", "3")
	if r := c.do(append([]string{"CLIENT", "TRACKING", "on"}, opts...)...); r != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING ON: %q", r)
	}
	return c
}

// TestTrackingPushesMatchRedis: the invalidation a read key's change
// sends is byte for byte Redis's, in RESP3 on the connection itself and in
// RESP2 through REDIRECT to a connection subscribed to __redis__:invalidate.
func TestTrackingPushesMatchRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	var got [2][]string
	for i, socket := range []string{redisSock, sc.socket} {
		w := dialRaw(t, socket)
		c := tracking(t, socket)
		c.do("GET", "k")
		w.do("SET", "k", "v")
		got[i] = append(got[i], c.next(5*time.Second))

		sub := dialRaw(t, socket)
		id := intReply(sub.do("CLIENT", "ID"))
		sub.do("SUBSCRIBE", "__redis__:invalidate")
		r2 := dialRaw(t, socket)
		got[i] = append(got[i], r2.do("CLIENT", "TRACKING", "on", "redirect", id))
		got[i] = append(got[i], r2.do("GET", "k2"))
		w.do("SET", "k2", "v")
		got[i] = append(got[i], sub.next(5*time.Second))
		got[i] = append(got[i], r2.do("PING"))
		got[i] = append(got[i], redirBroken(t, socket, w))
	}
	for j := range got[0] {
		if got[0][j] != got[1][j] {
			t.Errorf("message %d:\n redis    %q\n pgmirror %q", j, got[0][j], got[1][j])
		}
	}
}

// redirBroken: a RESP3 client whose redirect target left is told so when
// one of its keys changes; its message is returned with the id replaced.
func redirBroken(t *testing.T, socket string, w *rawConn) string {
	target := dialRaw(t, socket)
	id := intReply(target.do("CLIENT", "ID"))
	c := tracking(t, socket, "redirect", id)
	c.do("GET", "k3")
	target.nc.Close()
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		r := w.do("CLIENT", "LIST", "ID", id)
		return !strings.Contains(r, "id="+id+" "), r
	})
	w.do("SET", "k3", "v")
	return strings.ReplaceAll(c.next(5*time.Second)+c.do("CLIENT", "TRACKINGINFO"), ":"+id+"\r\n", ":ID\r\n")
}

// TestTrackingInvalidatesEveryRoute: keys read every way (absent, present,
// MGET, in MULTI, in a script, PTTL) are invalidated by changes of every
// route: plain SQL, a write through this sidecar, through another sidecar;
// an UPDATE and then a DELETE of a key read again in between.
func TestTrackingInvalidatesEveryRoute(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	sc2 := startSidecar(t, dsn, config{})
	ctx := context.Background()
	other, remote := client(t, sc.socket), client(t, sc2.socket)
	if err := other.Set(ctx, "b", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	c := tracking(t, sc.socket)
	for _, read := range [][]string{{"GET", "a"}, {"GET", "b"}, {"MGET", "c", "d"}, {"MULTI"}, {"GET", "e"}, {"EXEC"},
		{"EVAL", "return redis.call('GET', KEYS[1])", "1", "f"}, {"PTTL", "g"}} {
		c.do(read...)
	}
	if n := sc.srv.Stats().Tracking.Keys; n != 7 {
		t.Fatalf("tracked keys %d, want 7", n)
	}
	var worst time.Duration
	step := func(key string, change func()) {
		t.Helper()
		change()
		worst = max(worst, c.expect(invalidation(key), 5*time.Second))
	}
	step("a", func() { exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('a', 'v')`) })
	step("b", func() { exec(t, db, `UPDATE cache_entries SET value = '2' WHERE key = 'b'`) })
	if r := c.do("GET", "b"); r != "$1\r\n2\r\n" {
		t.Fatalf("GET b after the UPDATE: %q", r)
	}
	step("b", func() { exec(t, db, `DELETE FROM cache_entries WHERE key = 'b'`) })
	step("c", func() { other.Set(ctx, "c", "v", 0) })
	step("d", func() { remote.Set(ctx, "d", "v", 0) })
	for _, k := range []string{"e", "f", "g"} {
		step(k, func() { exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ($1, 'v')`, k) })
	}
	t.Logf("slowest invalidation after the change returned: %v", worst)
	if n := sc.srv.Stats().Tracking.Keys; n != 0 {
		t.Errorf("tracked keys %d after every invalidation, want 0", n)
	}
}

// TestTrackingModes: OPTIN tracks only after CLIENT CACHING YES (the next
// command, or a whole MULTI block); NOLOOP skips the connection's own
// writes; the echo of a write already applied does not invalidate again;
// BCAST sends the changes of its prefixes, read or not.
func TestTrackingModes(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	ins := func(k string) { exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ($1, 'v')`, k) }

	in := tracking(t, sc.socket, "optin")
	in.do("GET", "o1")
	in.do("CLIENT", "CACHING", "yes")
	in.do("GET", "o2")
	in.do("GET", "o3")
	in.do("CLIENT", "CACHING", "yes")
	in.do("MULTI")
	in.do("GET", "o4")
	in.do("GET", "o5")
	in.do("EXEC")
	for _, k := range []string{"o1", "o2", "o3", "o4", "o5"} {
		ins(k)
	}
	for _, k := range []string{"o2", "o4", "o5"} {
		in.expect(invalidation(k), 5*time.Second)
	}

	loop := tracking(t, sc.socket, "noloop")
	loop.do("GET", "n1")
	loop.do("GET", "n2")
	loop.do("SET", "n1", "mine")
	ins("n2")
	loop.expect(invalidation("n2"), 5*time.Second) // not n1 first

	own := tracking(t, sc.socket)
	own.do("GET", "e1")
	if r := own.do("SET", "e1", "x"); r != "+OK\r\n" {
		t.Fatal(r)
	}
	own.expect(invalidation("e1"), 5*time.Second)
	own.do("GET", "e1") // tracked again, before the write's echo arrives
	own.do("GET", "e2")
	ins("e2") // notified after the echo of e1's write
	own.expect(invalidation("e2"), 5*time.Second)

	bc := tracking(t, sc.socket, "bcast", "prefix", "p:")
	ins("p:1")
	ins("q:1")
	ins("p:2")
	bc.expect(invalidation("p:1"), 5*time.Second)
	bc.expect(invalidation("p:2"), 5*time.Second)
}

// TestTrackingUnderNamespace: pushes name keys as the client sees them,
// and changes outside the namespace send nothing.
func TestTrackingUnderNamespace(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.Namespace = "ns:" }})
	c := tracking(t, sc.socket)
	c.do("GET", "k")
	c.do("GET", "k2")
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('k', 'outside'), ('other:k2', 'outside')`)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('ns:k', 'v')`)
	c.expect(invalidation("k"), 5*time.Second)
	bc := tracking(t, sc.socket, "bcast")
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('x', 'outside'), ('ns:x', 'v')`)
	bc.expect(invalidation("x"), 5*time.Second)
}

// TestInvalidationNeverOvertakesAReply: a change applied while the
// tracking client's batch is still being answered (a GET of the old value,
// then a slow script) is invalidated after the GET's reply, never before:
// the client would cache the old value for good.
func TestInvalidationNeverOvertakesAReply(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('k', 'old')`)
	w := dialRaw(t, sc.socket)
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		r := w.do("GET", "k")
		return r == "$3\r\nold\r\n", r
	})
	c := tracking(t, sc.socket)
	busy := "local i = 0 while i < 20000000 do i = i + 1 end return 1"
	batch := fmt.Sprintf("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$4\r\nEVAL\r\n$%d\r\n%s\r\n$1\r\n0\r\n", len(busy), busy)
	if _, err := c.nc.Write([]byte(batch)); err != nil {
		t.Fatal(err)
	}
	exec(t, db, `UPDATE cache_entries SET value = 'new' WHERE key = 'k'`)
	got := []string{c.next(30 * time.Second), c.next(30 * time.Second), c.next(30 * time.Second)} // the script runs seconds under -race on a loaded machine
	if got[0] != "$3\r\nold\r\n" && got[0] != "$3\r\nnew\r\n" {
		t.Fatalf("first %q, want the GET's reply", got[0])
	}
	if got[0] == "$3\r\nold\r\n" && !slices.Contains(got[1:], invalidation("k")) {
		t.Fatalf("after the old value %q, want an invalidation", got[1:])
	}
}
