package pgtest

import (
	"strings"
	"testing"
)

func TestVersionLess(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{{"9.6", "10", true}, {"10", "9.6", false}, {"15", "16", true}, {"16", "15", false}, {"15", "15", false}} {
		if got := versionLess(c.a, c.b); got != c.want {
			t.Errorf("versionLess(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

func TestDSNQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/x": "/tmp/x", "": "''", "a b": "'a b'", `it's`: `'it\'s'`, `a\b`: `'a\\b'`,
	} {
		if got := dsnQuote(in); got != want {
			t.Errorf("dsnQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDBName(t *testing.T) {
	name := dbName("TestSomething/sub-test with spaces "+strings.Repeat("x", 100), 12345)
	if len(name) > 63 || !strings.HasPrefix(name, "t_testsomething_sub_test_with_spaces") || !strings.HasSuffix(name, "_12345") {
		t.Errorf("dbName = %q", name)
	}
}
