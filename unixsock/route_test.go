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
	sub := &subscription{
		channels: map[string]bool{"__keyspace@0__:user:1": true, "__keyevent@0__:set": true, "__keyspace@0__:user:10": true},
		patterns: map[string]bool{"__keyspace@0__:user:*": true, "__key*__:*": true, "*": true,
			"__keyevent@0__:s?t": true, "nomatch:*": true, `__keyspace@0__:\u*`: true},
		out: make(chan message, 100),
	}
	s.hub.subs = map[*client]*subscription{{}: sub}
	s.hub.n.Store(1)
	s.hub.rebuild()

	got := func() []string {
		var out []string
		for len(sub.out) > 0 {
			m := <-sub.out
			out = append(out, m.pattern+"|"+m.channel+"|"+m.payload)
		}
		return out
	}
	check := func(key, event string, want []string) {
		t.Helper()
		s.publish(key, event)
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
	sub.channels, sub.patterns = map[string]bool{}, map[string]bool{}
	s.hub.rebuild()
	check("user:1", "set", nil)
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
