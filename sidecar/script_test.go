package sidecar

import (
	"strings"
	"testing"
	"time"
)

// TestScriptTimeoutBounds: --script-timeout defaults to 1s, stays below
// the write path's timeout, and is refused at 0.
func TestScriptTimeoutBounds(t *testing.T) {
	if c := parse(t, "serve", nil); c.ScriptTimeout != time.Second {
		t.Errorf("default --script-timeout %v, want 1s", c.ScriptTimeout)
	}
	if c := parse(t, "serve", []string{"--script-timeout=4s"}); c.ScriptTimeout != 4*time.Second {
		t.Errorf("--script-timeout=4s gave %v", c.ScriptTimeout)
	}
	for arg, want := range map[string]string{"--script-timeout=5s": "is over 4s", "--script-timeout=0": "at least 1ms"} {
		if _, _, err := ParseConfig("serve", []string{arg}, nil); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", arg, err, want)
		}
	}
}

// TestLoopSpinBounds: --loop-spin defaults to the socket server's 50us, is
// refused past 1ms, and 0 reaches the server as "never" (its 0 is the
// default).
func TestLoopSpinBounds(t *testing.T) {
	if c := parse(t, "serve", nil); c.LoopSpin != 50*time.Microsecond || loopSpin(c.LoopSpin) != 50*time.Microsecond {
		t.Errorf("default --loop-spin %v, want 50µs", c.LoopSpin)
	}
	if c := parse(t, "serve", []string{"--loop-spin=20us"}); c.LoopSpin != 20*time.Microsecond {
		t.Errorf("--loop-spin=20us gave %v", c.LoopSpin)
	}
	if c := parse(t, "serve", []string{"--loop-spin=0"}); c.LoopSpin != 0 || loopSpin(c.LoopSpin) >= 0 {
		t.Errorf("--loop-spin=0 gave %v, server %v; want 0 and a negative (never)", c.LoopSpin, loopSpin(c.LoopSpin))
	}
	if _, _, err := ParseConfig("serve", []string{"--loop-spin=2ms"}, nil); err == nil || !strings.Contains(err.Error(), "is over 1ms") {
		t.Errorf("--loop-spin=2ms: %v, want an error with %q", err, "is over 1ms")
	}
}
