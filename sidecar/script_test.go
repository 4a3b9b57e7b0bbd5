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
