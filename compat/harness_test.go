package compat

import (
	"strings"
	"testing"
)

// TestJudge: the pending list stays honest: a listed case that matches
// Redis fails, one that differs is reported as pending, and an unlisted
// case must match.
func TestJudge(t *testing.T) {
	list := map[string]string{"lib/tx": "B: MULTI/EXEC"}
	for _, c := range []struct {
		name, diff string
		want       verdict
	}{
		{"lib/tx", "", fails},
		{"lib/tx", "line 1", isPending},
		{"lib/get", "", passes},
		{"lib/get", "line 1", fails},
	} {
		if v, msg := judge(c.name, c.diff, list); v != c.want {
			t.Errorf("judge(%q, %q) = %v (%s), want %v", c.name, c.diff, v, msg, c.want)
		}
	}
	if _, msg := judge("lib/tx", "", list); !strings.Contains(msg, "remove it from pending") {
		t.Errorf("a pending case that passes should say to remove it: %q", msg)
	}
}

// TestTranscripts: cases split on "== name" lines, and the first
// difference is named with both sides.
func TestTranscripts(t *testing.T) {
	tr := parseTranscript(t, "== a\n1\n2\n== b\n== c\nx\n")
	if strings.Join(tr.order, ",") != "a,b,c" || len(tr.cases["a"]) != 2 || len(tr.cases["b"]) != 0 {
		t.Fatalf("parsed %+v", tr)
	}
	if d := diffLines([]string{"1", "2"}, []string{"1", "2"}); d != "" {
		t.Errorf("equal cases differ: %q", d)
	}
	d := diffLines([]string{"1", "2"}, []string{"1"})
	if !strings.Contains(d, "line 2") || !strings.Contains(d, "(nothing)") {
		t.Errorf("missing line not named: %q", d)
	}
}
