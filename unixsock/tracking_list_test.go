package unixsock_test

import (
	"regexp"
	"strings"
	"testing"

	"pgmirror/internal/testdb"
)

// TestClientListShowsTracking: CLIENT INFO (and LIST) show tracking as
// Redis does: flag t (B with BCAST), redir=-1 when off, 0 when pushes go to
// the client itself, the target's id with REDIRECT.
func TestClientListShowsTracking(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	c, target := dialRaw(t, sc.socket), dialRaw(t, sc.socket)
	field := regexp.MustCompile(`(flags|redir)=(\S*)`)
	info := func() map[string]string {
		out := map[string]string{}
		for _, m := range field.FindAllStringSubmatch(c.do("CLIENT", "INFO"), -1) {
			out[m[1]] = m[2]
		}
		return out
	}
	if i := info(); i["redir"] != "-1" || strings.Contains(i["flags"], "t") {
		t.Fatalf("tracking off: %v", i)
	}
	c.do("HELLO", "3")
	c.do("CLIENT", "TRACKING", "ON")
	if i := info(); i["redir"] != "0" || !strings.Contains(i["flags"], "t") {
		t.Fatalf("tracking on: %v", i)
	}
	id := strings.TrimPrefix(strings.TrimSpace(target.do("CLIENT", "ID")), ":")
	c.do("CLIENT", "TRACKING", "OFF")
	if r := c.do("CLIENT", "TRACKING", "ON", "REDIRECT", id, "BCAST"); r != "+OK\r\n" {
		t.Fatalf("CLIENT TRACKING ON REDIRECT %s BCAST: %q", id, r)
	}
	if i := info(); i["redir"] != id || !strings.Contains(i["flags"], "t") || !strings.Contains(i["flags"], "B") {
		t.Fatalf("tracking with REDIRECT %s and BCAST: %v", id, i)
	}
	c.do("CLIENT", "TRACKING", "OFF")
	if i := info(); i["redir"] != "-1" || strings.Contains(i["flags"], "t") {
		t.Fatalf("tracking off again: %v", i)
	}
}
