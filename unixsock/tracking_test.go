package unixsock_test

import (
	"strings"
	"testing"

	"pgmirror/internal/testdb"
)

// trackingCases run on one connection each, against Redis and pgmirror
// alike. "$ME" stands for the connection's own id, "$OTHER" for another
// connection's; "-" before a command's name leaves its reply unchecked.
var trackingCases = map[string][][]string{
	"cluster": {{"CLUSTER", "SLOTS"}, {"CLUSTER", "INFO"}, {"CLUSTER", "NODES"}, {"CLUSTER", "slots"},
		{"CLUSTER", "BOGUS"}, {"CLUSTER"}, {"CLUSTER", "SLOTS", "x"}},
	"errors": {{"CLIENT", "TRACKING"}, {"CLIENT", "TRACKING", "maybe"}, {"CLIENT", "TRACKING", "on", "prefix", "a"},
		{"CLIENT", "TRACKING", "on", "bcast", "optin"}, {"CLIENT", "TRACKING", "on", "bcast", "optout"},
		{"CLIENT", "TRACKING", "on", "optin", "optout"}, {"CLIENT", "TRACKING", "on", "redirect", "99999999"},
		{"CLIENT", "TRACKING", "on", "redirect", "x"}, {"CLIENT", "TRACKING", "on", "redirect"},
		{"CLIENT", "TRACKING", "on", "bogus"}, {"CLIENT", "TRACKING", "on", "bcast", "prefix", "a", "prefix", "ab"},
		{"CLIENT", "TRACKING", "on", "redirect", "$OTHER", "redirect", "$OTHER"},
		{"CLIENT", "CACHING", "yes"}, {"CLIENT", "CACHING"}, {"CLIENT", "CACHING", "yes", "no"},
		{"CLIENT", "GETREDIR"}, {"CLIENT", "GETREDIR", "x"}, {"CLIENT", "TRACKINGINFO"}, {"CLIENT", "TRACKINGINFO", "x"}},
	"optin": {{"CLIENT", "TRACKING", "on", "optin"}, {"CLIENT", "TRACKINGINFO"}, {"CLIENT", "CACHING", "yes"},
		{"CLIENT", "TRACKINGINFO"}, {"CLIENT", "CACHING", "no"}, {"CLIENT", "CACHING", "maybe"},
		{"CLIENT", "TRACKING", "on", "optout"}, {"CLIENT", "TRACKING", "on", "bcast"}, {"CLIENT", "GETREDIR"},
		{"CLIENT", "TRACKING", "off"}, {"CLIENT", "TRACKINGINFO"}, {"CLIENT", "TRACKING", "on", "optout", "noloop"},
		{"CLIENT", "CACHING", "no"}, {"CLIENT", "TRACKINGINFO"}, {"CLIENT", "CACHING", "yes"}, {"GET", "k"},
		{"CLIENT", "TRACKINGINFO"}, {"CLIENT", "TRACKING", "off"}, {"CLIENT", "CACHING", "no"}},
	"bcast": {{"CLIENT", "TRACKING", "on", "bcast", "prefix", "a", "prefix", "b"}, {"CLIENT", "TRACKINGINFO"},
		{"CLIENT", "TRACKING", "on", "bcast", "prefix", "ab"}, {"CLIENT", "TRACKING", "on", "bcast", "prefix", "c"},
		{"CLIENT", "TRACKING", "on", "bcast", "prefix", "a"}, {"CLIENT", "TRACKINGINFO"},
		{"CLIENT", "TRACKING", "on"}, {"CLIENT", "CACHING", "yes"}, {"CLIENT", "TRACKING", "off"},
		{"CLIENT", "TRACKING", "on", "bcast"}, {"CLIENT", "TRACKINGINFO"}, {"CLIENT", "TRACKING", "off"}},
	"redirect": {{"CLIENT", "TRACKING", "on", "redirect", "$OTHER"}, {"CLIENT", "GETREDIR"}, {"CLIENT", "TRACKINGINFO"},
		{"CLIENT", "TRACKING", "on", "redirect", "$ME"}, {"CLIENT", "GETREDIR"}, {"CLIENT", "TRACKING", "off"},
		{"CLIENT", "GETREDIR"}},
	"resp3": {{"-HELLO", "3"}, {"CLIENT", "TRACKINGINFO"}, {"CLIENT", "TRACKING", "on", "optin", "noloop"},
		{"CLIENT", "CACHING", "yes"}, {"CLIENT", "TRACKINGINFO"}, {"CLIENT", "TRACKING", "off"},
		{"CLIENT", "TRACKING", "on", "bcast", "prefix", "p:"}, {"CLIENT", "TRACKINGINFO"}},
}

// TestTrackingCommandsMatchRedis compares the replies of CLUSTER and the
// CLIENT tracking subcommands, errors included, with a real Redis's.
func TestTrackingCommandsMatchRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	for name, steps := range trackingCases {
		t.Run(name, func(t *testing.T) {
			var got [2][]string
			for i, socket := range []string{redisSock, sc.socket} {
				c, other := dialRaw(t, socket), dialRaw(t, socket)
				me, them := intReply(c.do("CLIENT", "ID")), intReply(other.do("CLIENT", "ID"))
				for _, st := range steps {
					args := append([]string(nil), st...)
					for j, a := range args {
						args[j] = strings.NewReplacer("$ME", me, "$OTHER", them).Replace(a)
					}
					check := !strings.HasPrefix(args[0], "-")
					args[0] = strings.TrimPrefix(args[0], "-")
					reply := c.do(args...)
					reply = strings.NewReplacer(":"+me+"\r\n", ":$ME\r\n", ":"+them+"\r\n", ":$OTHER\r\n").Replace(reply)
					if !check {
						reply = "(unchecked)"
					}
					got[i] = append(got[i], reply)
				}
			}
			for i := range steps {
				if got[0][i] != got[1][i] {
					t.Errorf("step %d %q:\n redis    %q\n pgmirror %q", i, steps[i], got[0][i], got[1][i])
				}
			}
		})
	}
}

// intReply returns the number of an integer reply.
func intReply(r string) string { return strings.TrimSpace(strings.TrimPrefix(r, ":")) }
