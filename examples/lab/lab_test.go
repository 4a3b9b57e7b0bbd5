package main

// The lab against its own throwaway Postgres and sidecars, as `make
// demo-lab` runs it: in the test process (the step counts), and as a child
// process interrupted with SIGINT (nothing left behind).

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"pgmirror/examples/internal/demo"
	"pgmirror/internal/testutil"
)

func TestMain(m *testing.M) {
	demo.RunMainIfAsked(main)
	m.Run()
}

var stepCount = regexp.MustCompile(`(?m)^(\d+)\. .*\n   .*\n   queries on users: (\d+)  (.*)$`)

// TestLabCounts: every step prints the queries Postgres ran on users, and
// they are the lab's: 1 for a cold read, 0 for hits, 2 for a write and the
// read after it, 1 for 50 concurrent cold reads.
func TestLabCounts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := &testutil.SyncBuffer{}
	ok, err := run(ctx, out)
	if err != nil || !ok {
		t.Fatalf("run: ok %v, error %v; output:\n%s", ok, err, out)
	}
	want := []string{"1", "0", "0", "2", "1", "0", "1", "2"}
	var got []string
	for _, m := range stepCount.FindAllStringSubmatch(out.String(), -1) {
		got = append(got, m[2])
		if m[3] != "ok" {
			t.Errorf("step %s: %s", m[1], m[3])
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("queries per step %v, want %v; output:\n%s", got, want, out)
	}
	for _, s := range []string{`"plan" : "pro"`, `50 readers, all got {"id" : 2`, `"plan" : "team"`, "GET user:999 -> (nil)"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("the output has no %q:\n%s", s, out)
		}
	}
	demo.AssertNothingLeft(t, out.String(), os.Getpid())
}

// TestLabInterrupted: Ctrl-C while the lab runs stops it and leaves no
// process, socket or data directory behind.
func TestLabInterrupted(t *testing.T) {
	p := demo.StartMain(t)
	p.WaitFor(t, "ready", time.Minute)
	if code := p.Interrupt(t, 30*time.Second); code == 0 {
		t.Logf("exit status 0: the lab had finished when the signal came")
	}
	demo.AssertNothingLeft(t, p.Out.String(), p.PID())
}
