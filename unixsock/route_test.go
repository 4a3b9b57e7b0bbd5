package unixsock

import (
	"slices"
	"strings"
	"testing"
)

// TestPublishRoutes: publish finds exact channels and patterns (with a
// literal start or none), sends the keyspace message before the keyevent
// one, and builds nothing for a route that cannot match.
func TestPublishRoutes(t *testing.T) {
	s := &Server{}
	s.defaults()
	c := s.newClient(-1)
	c.subscribe(bs("__keyspace@0__:user:1", "__keyevent@0__:set", "__keyspace@0__:user:10"), false)
	c.subscribe(bs("__keyspace@0__:user:*", "__key*__:*", "*", "__keyevent@0__:s?t", "nomatch:*", `__keyspace@0__:\u*`), true)
	c.wbuf, c.holding, c.out.held = nil, false, false // the confirmations, as if sent

	got := func() []string {
		var out []string
		for _, seg := range c.out.segs {
			var p Parser
			p.MaxBulk, p.MaxFrame = 1<<20, 1<<20
			cmds, _, err := p.Parse(seg.b, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range cmds {
				if string(m[0]) == "pmessage" {
					out = append(out, string(m[1])+"|"+string(m[2])+"|"+string(m[3]))
				} else {
					out = append(out, "|"+string(m[1])+"|"+string(m[2]))
				}
			}
		}
		c.account(-c.out.owned)
		c.out.segs, c.out.pending, c.out.owned, c.out.pushes = nil, 0, 0, 0
		return out
	}
	check := func(key, event string, want []string) {
		t.Helper()
		s.publish(key, event, map[*client]struct{}{})
		msgs := got()
		// Keyspace messages first, then keyevent ones.
		seenEvent := false
		for _, m := range msgs {
			ev := strings.Contains(m, "|__keyevent@0__:")
			if seenEvent && !ev {
				t.Fatalf("%s %s: a keyspace message after a keyevent one: %q", key, event, msgs)
			}
			seenEvent = seenEvent || ev
		}
		slices.Sort(msgs)
		slices.Sort(want)
		if !slices.Equal(msgs, want) {
			t.Fatalf("%s %s:\n got %q\nwant %q", key, event, msgs, want)
		}
	}
	check("user:1", "set", []string{
		"|__keyspace@0__:user:1|set",
		"|__keyevent@0__:set|user:1",
		"__keyspace@0__:user:*|__keyspace@0__:user:1|set",
		`__keyspace@0__:\u*|__keyspace@0__:user:1|set`,
		"__key*__:*|__keyspace@0__:user:1|set",
		"__key*__:*|__keyevent@0__:set|user:1",
		"*|__keyspace@0__:user:1|set",
		"*|__keyevent@0__:set|user:1",
		"__keyevent@0__:s?t|__keyevent@0__:set|user:1",
	})
	check("other", "del", []string{
		"__key*__:*|__keyspace@0__:other|del",
		"__key*__:*|__keyevent@0__:del|other",
		"*|__keyspace@0__:other|del",
		"*|__keyevent@0__:del|other",
	})

	// Unsubscribing everything leaves no route.
	c.unsubscribe(nil, false)
	c.unsubscribe(nil, true)
	if len(s.hub.patterns) != 0 || len(s.hub.channels) != 0 || s.hub.n.Load() != 0 || c.used.Load() != 0 {
		t.Fatalf("after unsubscribing: %d patterns, %d channels, %d subscribers, %d bytes accounted",
			len(s.hub.patterns), len(s.hub.channels), s.hub.n.Load(), c.used.Load())
	}
	check("user:1", "set", nil)
}

func bs(ss ...string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func TestHasPrefixOf2(t *testing.T) {
	for _, c := range []struct {
		a, b, p string
		want    bool
	}{
		{"__keyspace@0__:", "user:1", "", true},
		{"__keyspace@0__:", "user:1", "__key", true},
		{"__keyspace@0__:", "user:1", "__keyspace@0__:", true},
		{"__keyspace@0__:", "user:1", "__keyspace@0__:us", true},
		{"__keyspace@0__:", "user:1", "__keyspace@0__:user:1", true},
		{"__keyspace@0__:", "user:1", "__keyspace@0__:user:10", false},
		{"__keyspace@0__:", "user:1", "__keyevent", false},
		{"__keyspace@0__:", "user:1", "__keyspace@0__:x", false},
	} {
		if got := hasPrefixOf2(c.a, c.b, c.p); got != c.want {
			t.Errorf("hasPrefixOf2(%q, %q, %q) = %v", c.a, c.b, c.p, got)
		}
	}
}
