package unixsock

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// TestSpinDecision: a loop spins only while its recent events come from a
// few clients and its waits for them are short; long waits stop it, and
// quick ones make it spin again after a few commands.
func TestSpinDecision(t *testing.T) {
	t.Parallel()
	const max = 50 * time.Microsecond
	events := func(s *spin, clients int, wait time.Duration) {
		for i := range spinWindow {
			s.client(int32(10 + i%clients))
			s.waited(wait)
		}
	}
	s := spin{max: max}
	if s.on() {
		t.Fatal("a new loop spins before it saw any client")
	}
	events(&s, 1, 10*time.Microsecond)
	if !s.on() {
		t.Fatalf("one client answering in 10µs: no spin (idle %v)", s.idle)
	}
	events(&s, spinClients, 10*time.Microsecond)
	if !s.on() {
		t.Fatalf("%d clients answering in 10µs: no spin", spinClients)
	}
	events(&s, spinClients+1, 10*time.Microsecond)
	if s.on() {
		t.Fatalf("%d clients: spins; want no spin past %d clients", spinClients+1, spinClients)
	}
	events(&s, 1, 10*time.Microsecond)
	for range 3 {
		s.waited(time.Second) // requests far apart
	}
	if s.on() {
		t.Fatalf("after waits of a second: spins (idle %v)", s.idle)
	}
	k := 0
	for !s.on() {
		s.waited(10 * time.Microsecond)
		if k++; k > 20 {
			t.Fatalf("20 quick waits after an idle second: still no spin (idle %v)", s.idle)
		}
	}
	if off := (spin{}); func() bool { events(&off, 1, time.Microsecond); return off.on() }() {
		t.Fatal("max 0 spins")
	}
}

// TestLoopSpinsForOneClient: one client waiting on each reply makes its
// loop poll for the next command instead of sleeping (counted in
// LoopSpinHits and LoopSpinTime); ten clients in lockstep do not, nor does
// a server with spinning off.
func TestLoopSpinsForOneClient(t *testing.T) {
	t.Parallel()
	dial := func(path string) (net.Conn, *bufio.Reader) {
		nc, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		_ = nc.SetDeadline(time.Now().Add(60 * time.Second))
		return nc, bufio.NewReader(nc)
	}
	ping := "*1\r\n$4\r\nPING\r\n"
	roundTrips := func(conns []net.Conn, rs []*bufio.Reader, n int) {
		for range n {
			for _, nc := range conns {
				if _, err := io.WriteString(nc, ping); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range rs {
				if line, err := r.ReadString('\n'); err != nil || line != "+PONG\r\n" {
					t.Fatalf("PING: %q, %v", line, err)
				}
			}
		}
	}

	// A generous spin, so that a loaded test machine still answers within it.
	s, path := openFake(t, 5*time.Millisecond)
	var conns []net.Conn
	var rs []*bufio.Reader
	for range 10 {
		nc, r := dial(path)
		conns, rs = append(conns, nc), append(rs, r)
	}
	roundTrips(conns, rs, 100)
	if st := s.Stats(); st.LoopSpinHits != 0 {
		t.Errorf("ten clients in lockstep: %d spin hits; want 0 (the loop spins for a few clients only)", st.LoopSpinHits)
	}
	roundTrips(conns[:1], rs[:1], 300)
	if st := s.Stats(); st.LoopSpinHits == 0 || st.LoopSpinTime <= 0 {
		t.Errorf("one client, 300 round trips: %d spin hits in %v; want the loop to spin", st.LoopSpinHits, st.LoopSpinTime)
	}

	off, path := openFake(t, -1)
	nc, r := dial(path)
	roundTrips([]net.Conn{nc}, []*bufio.Reader{r}, 300)
	if st := off.Stats(); st.LoopSpinHits != 0 || st.LoopSpinTime != 0 {
		t.Errorf("spinning off: %d spin hits in %v; want none", st.LoopSpinHits, st.LoopSpinTime)
	}
}
