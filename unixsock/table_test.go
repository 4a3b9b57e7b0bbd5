package unixsock

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestCommandTableConsistent checks each entry's metadata against itself:
// names, arity, key positions and flags that must go together.
func TestCommandTableConsistent(t *testing.T) {
	tab := (&Server{}).commands()
	if len(tab.byName) != 2*len(tab.list) {
		t.Errorf("%d names for %d commands: want each in lower and upper case only", len(tab.byName), len(tab.list))
	}
	for _, cmd := range tab.list {
		name := cmd.name
		if name != strings.ToLower(name) || tab.byName[name] != cmd || tab.byName[strings.ToUpper(name)] != cmd {
			t.Errorf("%s: want a lower-case name, found in both cases", name)
		}
		if cmd.arity == 0 || cmd.fn == nil {
			t.Errorf("%s: arity %d, handler %v", name, cmd.arity, cmd.fn != nil)
		}
		checkKeys(t, cmd)
		hasKeys := cmd.keys != noKeys
		switch {
		case cmd.has(flagReadonly) && cmd.has(flagWrite):
			t.Errorf("%s: both readonly and write", name)
		case cmd.has(flagWrite) && !cmd.has(flagPostgres|flagMirror):
			t.Errorf("%s: a write runs in Postgres and applies to the mirror: want flagPostgres and flagMirror", name)
		case hasKeys && !cmd.has(flagReadonly) && !cmd.has(flagWrite) && name != "watch":
			// (WATCH names keys but reads none: Redis reports it neither
			// readonly nor write, and answers it while loading.)
			t.Errorf("%s: takes keys but is neither readonly nor write", name)
		case (cmd.has(flagReadonly) || cmd.has(flagWrite)) && !cmd.has(flagMirror):
			t.Errorf("%s: reads or writes keys, so must wait for the mirror to load (flagMirror)", name)
		}
	}
	for _, name := range []string{"subscribe", "psubscribe", "unsubscribe", "punsubscribe"} {
		if cmd := tab.byName[name]; cmd == nil || cmd.flags&(flagMulti|flagScript) != 0 {
			t.Errorf("%s: want it registered, neither in MULTI nor in scripts", name)
		}
	}
}

// checkKeys checks a command's key positions against its arity.
func checkKeys(t *testing.T, cmd *command) {
	t.Helper()
	k, n := cmd.keys, cmd.arity
	if n < 0 {
		n = -n // the fewest arguments
	}
	switch {
	case k == noKeys:
	case k.first <= 0 || k.step <= 0 || k.first >= n:
		t.Errorf("%s: keys %+v with arity %d", cmd.name, k, cmd.arity)
	case k.last > 0 && (k.last < k.first || cmd.arity > 0 && k.last >= n):
		t.Errorf("%s: last key %d outside %d..arity %d", cmd.name, k.last, k.first, cmd.arity)
	case k.last < 0 && cmd.arity > 0:
		t.Errorf("%s: last key counted from the end (%d) with a fixed arity %d", cmd.name, k.last, cmd.arity)
	}
}

// TestCommandCallsPerServer: each server counts its own calls, unknown
// commands included, and reports its own version.
func TestCommandCallsPerServer(t *testing.T) {
	dir := t.TempDir()
	var srvs [2]*Server
	var clients [2]*redis.Client
	for i, version := range []string{"v9.9.9", ""} {
		s := &Server{Socket: filepath.Join(dir, []string{"a.sock", "b.sock"}[i]), Mirror: fakeMirror{}, Writer: fakeWriter{},
			Version: version}
		if err := s.Open(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		srvs[i] = s
		clients[i] = redis.NewClient(&redis.Options{Network: "unix", Addr: s.Socket, Protocol: 2})
		t.Cleanup(func() { clients[i].Close() })
	}
	ctx := context.Background()
	c := clients[0]
	c.Get(ctx, "k")
	c.Do(ctx, "GET", "k")
	c.Do(ctx, "get", "k")
	c.Do(ctx, "gEt", "k")
	c.Do(ctx, "BOGUS")
	calls := srvs[0].CommandCalls()
	if calls["get"] != 4 || calls["unknown"] != 1 {
		t.Errorf("first server: get %d, unknown %d; want 4 and 1", calls["get"], calls["unknown"])
	}
	for name, n := range srvs[1].CommandCalls() {
		if n != 0 {
			t.Errorf("second server counted %d calls of %s made on the first", n, name)
		}
	}
	if len(calls) != len(srvs[0].commands().list)+1 {
		t.Errorf("CommandCalls has %d names, want every command and unknown", len(calls))
	}
	if n, err := c.Do(ctx, "COMMAND", "COUNT").Int(); err != nil || n != len(srvs[0].commands().list) {
		t.Errorf("COMMAND COUNT = %d, %v; want the table's %d commands", n, err, len(srvs[0].commands().list))
	}
	for i, want := range []string{"pgmirror_version:v9.9.9", "pgmirror_version:dev"} {
		if info := clients[i].Info(ctx, "server").Val(); !strings.Contains(info, want) {
			t.Errorf("server %d: INFO lacks %q:\n%s", i, want, info)
		}
	}
}
