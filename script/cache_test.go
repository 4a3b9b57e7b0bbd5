package script

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

func TestNoScript(t *testing.T) {
	e := New(Config{})
	for _, sha := range []string{"", "abc", strings.Repeat("0", 40), SHA1Hex([]byte("return 1"))} {
		rep, err := e.EvalSHA(context.Background(), sha, Request{Caller: newFake()})
		if err != nil || rep.Kind != Error || rep.Str != "NOSCRIPT No matching script. Please use EVAL." {
			t.Errorf("EVALSHA %q: %s %v", sha, render(rep), err)
		}
	}
}

func TestLoadExistsFlush(t *testing.T) {
	e := New(Config{})
	sha, rep := e.Load([]byte("return ARGV[1]"))
	if rep.Kind == Error || sha != SHA1Hex([]byte("return ARGV[1]")) || len(sha) != 40 {
		t.Fatalf("Load: %q %s", sha, render(rep))
	}
	got, err := e.EvalSHA(context.Background(), strings.ToUpper(sha), Request{Caller: newFake(), Args: [][]byte{[]byte("x")}})
	if err != nil || render(got) != "$1 x " {
		t.Errorf("EVALSHA of the upper-case sha: %s %v", render(got), err)
	}
	evalWith(t, e, newFake(), "return 2", nil) // EVAL caches its script too
	exists := e.Exists(sha, SHA1Hex([]byte("return 2")), SHA1Hex([]byte("return 3")), "short")
	if fmt.Sprint(exists) != "[true true false false]" {
		t.Errorf("Exists: %v", exists)
	}
	if _, rep := e.Load([]byte("return (")); !strings.HasPrefix(rep.Str, "ERR Error compiling script (new function): user_script:1: ") {
		t.Errorf("Load of a bad script: %s", render(rep))
	}
	e.Flush()
	if e.Exists(sha)[0] || e.CacheStats().Scripts != 0 {
		t.Error("Flush left scripts")
	}
}

// The cache keeps within its count and bytes: EVAL scripts are evicted least
// recently used first, loaded scripts stay, and when loaded scripts fill it
// SCRIPT LOAD is refused while EVAL still runs.
func TestCacheBounds(t *testing.T) {
	e := New(Config{MaxCacheScripts: 3, MaxCacheBytes: 1000})
	body := func(i int) []byte { return []byte(fmt.Sprintf("return %d", i)) }
	for i := 1; i <= 3; i++ {
		evalWith(t, e, newFake(), string(body(i)), nil)
	}
	evalWith(t, e, newFake(), string(body(1)), nil) // 1 is now the most recently used
	evalWith(t, e, newFake(), string(body(4)), nil) // evicts 2
	if got := fmt.Sprint(e.Exists(SHA1Hex(body(1)), SHA1Hex(body(2)), SHA1Hex(body(3)), SHA1Hex(body(4)))); got != "[true false true true]" {
		t.Errorf("after eviction: %s", got)
	}
	if st := e.CacheStats(); st.Scripts != 3 || st.Evicted != 1 {
		t.Errorf("stats: %+v", st)
	}
	for i := 10; i < 13; i++ {
		if _, rep := e.Load(body(i)); rep.Kind == Error {
			t.Fatalf("Load %d: %s", i, render(rep))
		}
	}
	if _, rep := e.Load(body(13)); !strings.HasPrefix(rep.Str, "ERR script cache full") {
		t.Errorf("Load into a cache full of loaded scripts: %s", render(rep))
	}
	if rep := evalWith(t, e, newFake(), string(body(14)), nil); render(rep) != ":14 " {
		t.Errorf("EVAL with a full cache: %s", render(rep))
	}
	if e.Exists(SHA1Hex(body(14)))[0] || !e.Exists(SHA1Hex(body(10)))[0] {
		t.Error("EVAL displaced a loaded script")
	}
	// Bytes bound.
	b := New(Config{MaxCacheBytes: 100})
	big := "return '" + strings.Repeat("x", 80) + "'"
	evalWith(t, b, newFake(), big, nil)
	evalWith(t, b, newFake(), big+" ", nil)
	if st := b.CacheStats(); st.Scripts != 1 || st.Bytes > 100 {
		t.Errorf("bytes bound: %+v", st)
	}
	if _, rep := b.Load([]byte(big + strings.Repeat(" ", 30))); rep.Kind != Error {
		t.Error("Load of a script larger than the cache")
	}
}

// A script loaded after EVAL cached it becomes pinned.
func TestLoadPinsEvalScript(t *testing.T) {
	e := New(Config{MaxCacheScripts: 2})
	evalWith(t, e, newFake(), "return 1", nil)
	e.Load([]byte("return 1"))
	evalWith(t, e, newFake(), "return 2", nil)
	evalWith(t, e, newFake(), "return 3", nil)
	if !e.Exists(SHA1Hex([]byte("return 1")))[0] {
		t.Error("the loaded script was evicted")
	}
}

func TestSplitKeys(t *testing.T) {
	b := func(s ...string) [][]byte {
		out := make([][]byte, len(s))
		for i, x := range s {
			out[i] = []byte(x)
		}
		return out
	}
	keys, args, _, ok := SplitKeys(b("2", "k1", "k2", "a1"))
	if !ok || len(keys) != 2 || string(keys[1]) != "k2" || len(args) != 1 {
		t.Errorf("split: %q %q", keys, args)
	}
	for in, want := range map[string]string{
		"3 k1 k2": "ERR Number of keys can't be greater than number of args",
		"-1 k1":   "ERR Number of keys can't be negative",
		"x k1":    "ERR value is not an integer or out of range",
	} {
		if _, _, rep, ok := SplitKeys(b(strings.Fields(in)...)); ok || rep.Str != want {
			t.Errorf("%q: %s", in, render(rep))
		}
	}
	set := NewKeySet(b("a", "b"))
	for _, tc := range []struct {
		args              []string
		first, last, step int
		undeclared        string
	}{
		{[]string{"GET", "a"}, 1, 1, 1, ""},
		{[]string{"GET", "c"}, 1, 1, 1, "c"},
		{[]string{"MSET", "a", "1", "b", "2"}, 1, -1, 2, ""},
		{[]string{"MSET", "a", "1", "x", "2"}, 1, -1, 2, "x"},
		{[]string{"DEL", "a", "b", "z"}, 1, -1, 1, "z"},
		{[]string{"PING"}, 0, 0, 0, ""},
	} {
		key, bad := set.Undeclared(b(tc.args...), tc.first, tc.last, tc.step)
		if string(key) != tc.undeclared || bad != (tc.undeclared != "") {
			t.Errorf("%v: %q %v", tc.args, key, bad)
		}
	}
	if rep := UndeclaredKeyError([]byte("z")); !strings.Contains(rep.Str, "'z'") {
		t.Error(render(rep))
	}
}
