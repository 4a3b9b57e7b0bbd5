package unixsock

import (
	"bytes"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socketClient returns a client of a fresh Server on one end of a Unix
// socket pair, watched by an event loop for its output but not read (as
// while its goroutine runs its commands: the test plays that goroutine),
// and the other end.
func socketClient(t *testing.T) (*client, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[1]), "peer")
	peer, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	s := &Server{}
	s.defaults()
	l, err := newLoop(s)
	if err != nil {
		t.Fatal(err)
	}
	s.loops = []*loop{l}
	go l.run()
	c := s.newClient(fds[0])
	if err := l.add(c); err != nil {
		t.Fatal(err)
	}
	c.disarm()
	t.Cleanup(func() {
		c.out.closeOutput(c)
		c.closeFD()
		s.stopLoops()
	})
	return c, peer
}

// TestHeldBatchWithQueuedPush: a push queued before the command loop
// holds the output, whose kick the hold then skips (the publisher kicks
// after its whole batch), must not leave the batch's replies queued with
// no writer: a reply past the output bound waited for a writer that
// never came, and the connection hung for good (no deadline applies).
func TestHeldBatchWithQueuedPush(t *testing.T) {
	c, peer := socketClient(t)
	// The publisher queues a message; before it kicks, the command loop
	// starts a batch (a subscribed client's output is held) ...
	if !c.out.push(c, appendMessage(nil, true, "", "__keyevent@0__:set", "k")) {
		t.Fatal("push refused")
	}
	c.holdOutput()
	c.out.kick(c) // ... so the publisher's kick does nothing.
	go func() { _, _ = io.Copy(io.Discard, peer) }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A reply larger than the output bound (GET of a 2 MiB value).
		c.bulk(bytes.Repeat([]byte("v"), 2<<20))
		_ = c.flush()
		c.holding = false
		c.out.release(c)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the reply was never written: the command loop waits on a queue nobody writes")
	}
	if c.werr != nil {
		t.Fatal(c.werr)
	}
}

// TestNoMessageAfterLastUnsubscribe: in RESP2 a client whose UNSUBSCRIBE
// confirmation says 0 subscriptions is back to request/reply (node-redis
// then sends commands on the same connection), so a message published
// before the unsubscription must come before the confirmation, as Redis
// sends it. A message the publisher delivered while the batch held the
// output (it waited in the side queue) came after it, where the client
// reads it as the reply to its next command.
func TestNoMessageAfterLastUnsubscribe(t *testing.T) {
	c, peer := socketClient(t)
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.subscribe([][]byte{[]byte("ch")}, false)
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	c.holding = false
	c.out.release(c)
	confirm := "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
	got := make([]byte, len(confirm))
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != confirm {
		t.Fatalf("subscribe: %q, %v", got, err)
	}
	// The next batch (UNSUBSCRIBE) holds the output; the publisher
	// delivers a message of the channel before the command runs.
	c.holdOutput()
	c.s.deliver(c, "", "ch", "payload", map[*client]struct{}{})
	c.unsubscribe(nil, false)
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	c.holding = false
	c.out.release(c)
	msg := "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$7\r\npayload\r\n"
	unsub := "*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"
	got = make([]byte, len(msg)+len(unsub))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != msg+unsub {
		t.Fatalf("got %q; want the message, then the confirmation %q", got, msg+unsub)
	}
	if n := c.s.budget.total.Load(); n != 0 {
		t.Fatalf("client buffers %d after everything was written and unsubscribed; want 0", n)
	}
}
