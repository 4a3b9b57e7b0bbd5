package unixsock_test

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/mirror"
	"pgmirror/unixsock"
)

// TestTrackingFlushes: a TRUNCATE, a FLUSHDB, a cut of the listener's connection and
// a reload that repairs drift each send a flush-everything invalidation.
func TestTrackingFlushes(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	c := tracking(t, sc.socket)
	c.do("GET", "x")
	exec(t, db, `TRUNCATE cache_entries`)
	c.expect(flushAll, 5*time.Second)

	c.do("GET", "x")
	dialRaw(t, sc.socket).do("FLUSHDB")
	c.expect(flushAll, 5*time.Second)

	c.do("GET", "x")
	exec(t, db, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`)
	c.expect(flushAll, 10*time.Second)

	dsn2, db2 := testdb.New(t)
	exec(t, db2, `INSERT INTO cache_entries(key, value) VALUES ('y', 'v')`)
	sc2 := startSidecar(t, dsn2, config{})
	d := tracking(t, sc2.socket)
	d.do("GET", "x")
	exec(t, db2, `ALTER TABLE cache_entries DISABLE TRIGGER USER`)
	exec(t, db2, `UPDATE cache_entries SET value = 'silent' WHERE key = 'y'`)
	exec(t, db2, `ALTER TABLE cache_entries ENABLE TRIGGER USER`)
	dialRaw(t, sc2.socket).do("PGMIRROR.RESYNC")
	d.expect(flushAll, 10*time.Second)
}

// TestTrackingExpiry: a tracked key with an expiry is invalidated when it
// expires, without being read again, within the 50 ms expiry tolerance.
func TestTrackingExpiry(t *testing.T) {
	// Not parallel: it bounds how late an invalidation arrives to 50 ms.
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	w := dialRaw(t, sc.socket)
	w.do("SET", "soon", "v", "PX", "400")
	w.do("SET", "never", "v")
	c := tracking(t, sc.socket)
	c.do("GET", "never")
	if r := c.do("GET", "soon"); r != "$1\r\nv\r\n" {
		t.Fatalf("GET soon: %q", r)
	}
	ms, _ := strconv.Atoi(intReply(w.do("PTTL", "soon")))
	expires := time.Now().Add(time.Duration(ms) * time.Millisecond)
	c.expect(invalidation("soon"), 5*time.Second)
	late := time.Since(expires)
	t.Logf("invalidated %v after the expiry", late)
	if late < -5*time.Millisecond || late > 50*time.Millisecond {
		t.Fatalf("invalidated %v after the expiry, want within [0, 50ms]", late)
	}
	if r := w.do("EXISTS", "soon"); r != ":0\r\n" {
		t.Fatalf("EXISTS soon after its invalidation: %q", r)
	}
	if n := sc.srv.Stats().Tracking.Keys; n != 1 {
		t.Fatalf("tracked keys %d, want 1 (never)", n)
	}
}

// TestTrackingTableBound: with the bound at 2,000, reading 20,000
// distinct keys keeps the table at 2,000 keys, and every key evicted
// reaches the client as an invalidation.
func TestTrackingTableBound(t *testing.T) {
	t.Parallel()
	const bound, total, chunk = 2000, 20000, 500
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.TrackingTableMaxKeys = bound }})
	c := tracking(t, sc.socket)
	invalidated := map[string]bool{}
	for start := 0; start < total; start += chunk {
		var b strings.Builder
		for i := start; i < start+chunk; i++ {
			k := "key:" + strconv.Itoa(i)
			fmt.Fprintf(&b, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(k), k)
		}
		if _, err := c.nc.Write([]byte(b.String())); err != nil {
			t.Fatal(err)
		}
		for replies := 0; replies < chunk; {
			if readTracked(t, c, invalidated) {
				replies++
			}
		}
	}
	for len(invalidated) < total-bound { // the last batch's invalidations follow its replies
		if readTracked(t, c, invalidated) {
			t.Fatal("a reply nobody asked for")
		}
	}
	st := sc.srv.Stats().Tracking
	if st.Keys != bound || len(invalidated) != total-bound || st.Evicted != total-bound {
		t.Fatalf("tracked %d keys, %d invalidated, %d evicted; want %d, %d, %d", st.Keys, len(invalidated), st.Evicted,
			bound, total-bound, total-bound)
	}
}

// readTracked reads a reply to a GET of an absent key (true) or an
// invalidation of one key, which it records (false).
func readTracked(t *testing.T, c *rawConn, invalidated map[string]bool) bool {
	v := c.next(30 * time.Second)
	switch {
	case v == "_\r\n":
		return true
	case strings.HasPrefix(v, ">2\r\n$10\r\ninvalidate\r\n*1\r\n"):
		k := strings.Split(v, "\r\n")[5]
		if invalidated[k] {
			t.Fatalf("%s invalidated twice", k)
		}
		invalidated[k] = true
	default:
		t.Fatalf("unexpected %q", v)
	}
	return false
}

// TestTrackingClientThatStopsReadingIsCut: a tracking client that does not
// read its invalidations is disconnected at the output bound, and the
// sidecar's client buffers stay within it meanwhile.
func TestTrackingClientThatStopsReadingIsCut(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	c := tracking(t, sc.socket)
	const n = 3000
	long := strings.Repeat("x", 1000)
	var b strings.Builder
	for i := 0; i < n; i++ {
		k := long + strconv.Itoa(i)
		fmt.Fprintf(&b, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(k), k)
	}
	if _, err := c.nc.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if v := c.next(30 * time.Second); v != "_\r\n" {
			t.Fatalf("reply %d: %q", i, v)
		}
	}
	dropped := sc.srv.Stats().SubscribersDropped
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT $1 || i, 'v' FROM generate_series(0, $2 - 1) i`, long, n)
	var peak int64
	testutil.Eventually(t, 30*time.Second, func() (bool, string) {
		peak = max(peak, sc.srv.Stats().ClientBuffers)
		s := sc.srv.Stats()
		return s.SubscribersDropped > dropped, fmt.Sprintf("dropped %d, buffers %d", s.SubscribersDropped, s.ClientBuffers)
	})
	if limit := int64(unixsock.DefaultMaxClientOutput) + 64<<10; peak > limit {
		t.Fatalf("client buffers peaked at %d, past %d", peak, limit)
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 1<<20)
	for {
		if _, err := c.nc.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the connection was not closed")
			}
			break
		}
	}
	if r := dialRaw(t, sc.socket).do("GET", long+"1"); r != "$1\r\nv\r\n" {
		t.Fatalf("another client after the cut: %q", r)
	}
}

// TestTrackingStalenessBoundFlushes: with --stale-reads=error, when
// Postgres goes away the clients get a flush-everything invalidation at
// the gap, and another once the staleness bound passed (what they read
// meanwhile may be stale, and reads no longer refresh it).
func TestTrackingStalenessBoundFlushes(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	dsn := pg.CreateDB(t)
	testdb.Migrate(t, dsn)
	sc := startSidecar(t, dsn, config{mirror: mirror.Options{MaxStaleness: 500 * time.Millisecond, StaleError: true}})
	c := tracking(t, sc.socket)
	c.do("GET", "x")
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	c.expect(flushAll, 10*time.Second)
	c.expect(flushAll, 10*time.Second)
	if r := dialRaw(t, sc.socket).do("GET", "x"); !strings.HasPrefix(r, "-ERR pgmirror: notifications lost") {
		t.Fatalf("GET past the staleness bound: %q", r)
	}
}
