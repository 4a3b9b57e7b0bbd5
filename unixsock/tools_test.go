package unixsock_test

import (
	execpkg "os/exec"
	"strings"
	"testing"

	"pgmirror/internal/testdb"
)

// TestRedisTools drives the server with redis-cli and redis-benchmark, as
// users will. The setup step installs them; without them the test fails.
func TestRedisTools(t *testing.T) {
	t.Parallel()
	cli, err1 := execpkg.LookPath("redis-cli")
	bench, err2 := execpkg.LookPath("redis-benchmark")
	if err1 != nil || err2 != nil {
		t.Fatal("redis-cli or redis-benchmark not found: run `make setup` (Debian's redis-tools)")
	}
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := execpkg.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %q: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	if out := run(cli, "-s", sc.socket, "SET", "greeting", "hello"); strings.TrimSpace(out) != "OK" {
		t.Fatalf("redis-cli SET: %q", out)
	}
	if out := run(cli, "-s", sc.socket, "GET", "greeting"); strings.TrimSpace(out) != "hello" {
		t.Fatalf("redis-cli GET: %q", out)
	}
	info := run(cli, "-s", sc.socket, "INFO")
	for _, want := range []string{"# Server", "# Clients", "# Stats", "# Keyspace", "db0:keys=1", "# Mirror", "entries:1",
		"state:ready", "hits:1", "last_reload:"} {
		if !strings.Contains(info, want) {
			t.Errorf("redis-cli INFO lacks %q:\n%s", want, info)
		}
	}
	if mirrorOnly := run(cli, "-s", sc.socket, "INFO", "mirror"); strings.Contains(mirrorOnly, "# Server") || !strings.Contains(mirrorOnly, "# Mirror") {
		t.Errorf("INFO mirror should hold the mirror section only:\n%s", mirrorOnly)
	}
	out := run(bench, "-s", sc.socket, "-t", "get,set", "-n", "20000", "-q")
	if strings.Contains(strings.ToLower(out), "error") || !strings.Contains(out, "SET:") || !strings.Contains(out, "GET:") {
		t.Fatalf("redis-benchmark:\n%s", out)
	}
	t.Logf("redis-benchmark: %s", strings.Join(strings.Fields(out), " "))
}
