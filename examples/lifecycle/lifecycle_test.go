package main

// The demo as `make demo-lifecycle` runs it (the test binary plays the
// demo and, re-executed, its three sidecars), interrupted with SIGINT once
// its scenario is done.

import (
	"strings"
	"testing"
	"time"

	"pgmirror/examples/internal/demo"
	"pgmirror/internal/pgtest"
)

func TestMain(m *testing.M) {
	demo.RunChildIfAsked()
	demo.RunMainIfAsked(main)
	pgtest.Main(m)
}

// TestLifecycleDemo: the report is computed once for three concurrent
// misses, refreshed ahead once across three sidecars, its stale refresh
// lock reclaimed by another sidecar after the holder is killed, and an
// unused key cleaned up; Ctrl-C then leaves no process, socket or data
// directory behind.
func TestLifecycleDemo(t *testing.T) {
	p := demo.StartMain(t)
	p.WaitFor(t, "Ctrl-C stops the sidecars and Postgres.", 3*time.Minute)
	out := p.Out.String()
	for _, want := range []string{
		"computed once across the three sidecars",
		"run #2 of report:sales committed: refresh by sidecar-",
		"refreshed ahead exactly once across three sidecars",
		"(pid ", "SIGKILL) while it held the refresh lock",
		"refresh lock of report:sales reclaimed: it was taken at",
		"reclaimed the stale lock (older than --refresh-lock-stale 2s) and refreshed report:sales",
		"the cleanup job deleted report:2019",
		"every part went as the design says",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output has no %q", want)
		}
	}
	if strings.Contains(out, "UNEXPECTED") {
		t.Errorf("an expectation did not hold")
	}
	if code := p.Interrupt(t, time.Minute); code != 0 {
		t.Errorf("exit status %d after Ctrl-C", code)
	}
	demo.AssertNothingLeft(t, p.Out.String(), p.PID())
}
