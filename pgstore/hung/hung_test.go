package hung_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"pgmirror/pgstore/hung"
)

func TestAsideReturnsTheResult(t *testing.T) {
	res, ok := hung.Aside(context.Background(), 0, func() int { return 7 }, func() { t.Error("late ran for a call waited for") })
	if !ok || res != 7 {
		t.Fatalf("Aside = %d, %v; want 7, true", res, ok)
	}
}

// TestAsideGivesUp: a call that does not return is given up on once ctx is
// done and the grace has passed, not before; late runs when it returns.
func TestAsideGivesUp(t *testing.T) {
	for _, grace := range []time.Duration{0, 100 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		release := make(chan struct{})
		late := make(chan struct{})
		start := time.Now()
		res, ok := hung.Aside(ctx, grace, func() int { <-release; return 1 }, func() { close(late) })
		waited := time.Since(start)
		cancel()
		if ok || res != 0 {
			t.Fatalf("grace %v: Aside = %d, %v; want 0, false", grace, res, ok)
		}
		if waited < 50*time.Millisecond+grace {
			t.Fatalf("grace %v: gave up after %v, before the context's deadline and the grace", grace, waited)
		}
		select {
		case <-late:
			t.Fatalf("grace %v: late ran before the call returned", grace)
		default:
		}
		close(release)
		select {
		case <-late:
		case <-time.After(5 * time.Second):
			t.Fatalf("grace %v: late did not run after the call returned", grace)
		}
	}
}

// TestAsideGraceWaits: a call that returns within the grace is waited for.
func TestAsideGraceWaits(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, ok := hung.Aside(ctx, 5*time.Second, func() string { time.Sleep(20 * time.Millisecond); return "done" }, nil)
	if !ok || res != "done" {
		t.Fatalf("Aside = %q, %v; want done, true", res, ok)
	}
}

// TestDialerKillAll: KillAll closes the open connections, so a read
// blocked on a peer that never answers returns.
func TestDialerKillAll(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c // never answers
		}
	}()
	d := hung.NewDialer(time.Second)
	c1, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2, err := d.DialTimeout("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		defer (<-accepted).Close()
	}
	if err := c2.Close(); err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() { _, err := c1.Read(make([]byte, 1)); read <- err }()
	time.Sleep(20 * time.Millisecond)
	d.KillAll()
	select {
	case err := <-read:
		if err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("read after KillAll: %v, want the error of a closed connection", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read blocked on a silent peer did not return after KillAll")
	}
	d.KillAll() // nothing left open: a no-op
}
