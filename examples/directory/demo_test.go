package main

// make demo-directory: `directory demo` in a child process (this test
// binary, see TestMain), then interrupted.

import (
	"strings"
	"testing"
	"time"

	"pgmirror/examples/internal/demo"
)

// TestDemo: `directory demo` answers who manages Alan Turing before and
// after its SQL UPDATE of the manager, lists what to try, and Ctrl-C stops
// everything and leaves no process, socket or data directory behind.
func TestDemo(t *testing.T) {
	p := demo.StartMain(t, "demo")
	p.WaitFor(t, "demo: Ctrl-C stops", 2*time.Minute)
	out := p.Out.String()
	before := "Alan Turing (Engineer, Engineering in Building 1) is managed by Grace Hopper (VP Engineering), employee " + grace
	after := "Alan Turing (Engineer, Engineering in Building 1) is managed by Katherine Johnson (Engineer), employee " + katherine
	i, j := strings.Index(out, before), strings.Index(out, after)
	if i < 0 || j < i {
		t.Errorf("want %q, then %q in the output", before, after)
	}
	for _, want := range []string{"go run ./examples/directory -socket ", "UPDATE departments SET manager_id"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output has no %q", want)
		}
	}
	if code := p.Interrupt(t, time.Minute); code != 0 {
		t.Errorf("exit status %d after Ctrl-C", code)
	}
	demo.AssertNothingLeft(t, p.Out.String(), p.PID())
}
