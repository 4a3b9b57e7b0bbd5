package compat

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// library is one client library of the suite: run drives it against the
// server on socket, keys under prefix, and returns what it printed.
type library struct {
	name string
	run  func(t *testing.T, socket, prefix string) string
}

// TestClientLibraries runs every library against a real redis-server and
// against a pgmirror sidecar and compares their transcripts case by case.
// The libraries run one after another: some cases flush the database.
func TestClientLibraries(t *testing.T) {
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true})
	seen, ran := map[string]bool{}, map[string]bool{}
	for _, lib := range libraries() {
		t.Run(lib.name, func(t *testing.T) {
			ran[lib.name] = true
			prefix := lib.name + ":"
			want := parseTranscript(t, lib.run(t, redisSock, prefix))
			got := parseTranscript(t, lib.run(t, sc.Socket, prefix))
			compareTranscripts(t, lib.name, want, got, seen)
		})
	}
	for name := range pending {
		if lib, _, _ := strings.Cut(name, "/"); ran[lib] && !seen[name] {
			t.Errorf("pending case %q is no case of the suite: remove it from pending", name)
		}
	}
}

func libraries() []library {
	return []library{
		{"go-redis", runGoRedis},
		{"redis-py", scriptRunner(pythonCmd, "python/redis_py.py")},
		{"ioredis", scriptRunner(nodeCmd, "node/ioredis.js")},
		{"node-redis", scriptRunner(nodeCmd, "node/node_redis.js")},
		{"redis-rb", scriptRunner(rubyCmd, "ruby/redis_rb.rb")},
		{"phpredis", scriptRunner(phpCmd, "php/phpredis.php")},
	}
}

// transcript is what one library printed: its cases in order, each with
// its lines.
type transcript struct {
	order []string
	cases map[string][]string
}

// parseTranscript splits output into cases: a line "== name" starts one.
func parseTranscript(t *testing.T, out string) transcript {
	t.Helper()
	tr := transcript{cases: map[string][]string{}}
	cur := ""
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if name, ok := strings.CutPrefix(line, "== "); ok {
			cur = name
			tr.order = append(tr.order, name)
			tr.cases[name] = []string{}
			continue
		}
		if cur == "" {
			if line != "" {
				t.Errorf("output before the first case: %q", line)
			}
			continue
		}
		tr.cases[cur] = append(tr.cases[cur], line)
	}
	return tr
}

// compareTranscripts checks each case of want (Redis) against got
// (pgmirror): a case not in pending must match; a pending case must not.
func compareTranscripts(t *testing.T, lib string, want, got transcript, seen map[string]bool) {
	if len(want.order) == 0 {
		t.Fatalf("%s printed no case against redis-server", lib)
	}
	for _, name := range want.order {
		full := lib + "/" + name
		seen[full] = true
		t.Run(name, func(t *testing.T) {
			w := want.cases[name]
			g, ok := got.cases[name]
			diff := diffLines(w, g)
			if !ok {
				diff = "the case did not run against pgmirror (the script stopped before it)"
			}
			switch v, msg := judge(full, diff, pending); v {
			case fails:
				t.Error(msg)
			case isPending:
				t.Skip(msg)
			}
		})
	}
}

// verdict is the outcome of one case.
type verdict int

const (
	passes    verdict = iota // matches Redis, as it should
	fails                    // differs from Redis, or is pending and matches
	isPending                // pending, and differs as expected
)

// judge decides a case named full whose first difference from Redis is
// diff ("": none), given the pending list.
func judge(full, diff string, pending map[string]string) (verdict, string) {
	reason, listed := pending[full]
	switch {
	case diff == "" && listed:
		return fails, fmt.Sprintf("pending case %s (%s) now matches Redis: remove it from pending in pending_test.go", full, reason)
	case diff == "":
		return passes, ""
	case listed:
		return isPending, fmt.Sprintf("PENDING until %s merges: %s differs from Redis as expected:\n%s", reason, full, diff)
	default:
		return fails, fmt.Sprintf("%s differs from Redis:\n%s", full, diff)
	}
}

// diffLines renders the first difference of two cases, or "".
func diffLines(want, got []string) string {
	for i := 0; i < len(want) || i < len(got); i++ {
		w, g := "(nothing)", "(nothing)"
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w != g {
			return fmt.Sprintf("  line %d\n    redis    %s\n    pgmirror %s", i+1, w, g)
		}
	}
	return ""
}

// scriptRunner returns a library's run: the interpreter cmd finds runs
// testdata/script with the socket and the prefix as arguments.
func scriptRunner(cmd func(t *testing.T) []string, script string) func(*testing.T, string, string) string {
	return func(t *testing.T, socket, prefix string) string {
		t.Helper()
		path, err := filepath.Abs(filepath.Join("testdata", script))
		if err != nil {
			t.Fatal(err)
		}
		argv := append(cmd(t), path, socket, prefix)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, argv[0], argv[1:]...)
		c.Dir = filepath.Dir(path)
		var stderr strings.Builder
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			t.Errorf("%s on %s: %v\n%s", script, socket, err, stderr.String())
		}
		return string(out)
	}
}

// sortedLines renders a set of strings as one line, sorted.
func sortedLines(xs []string) string {
	sort.Strings(xs)
	return strings.Join(xs, ",")
}

// requireRun fails the test with a hint to run make setup when probe fails.
func requireRun(t *testing.T, what string, probe ...string) {
	t.Helper()
	if out, err := exec.Command(probe[0], probe[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s not usable (%v: %s): run `make setup` (scripts/setup installs it)", what, err, out)
	}
}

// pythonCmd is Debian's python3, which has python3-redis: not a python3
// earlier on PATH (a virtualenv or pyenv) that lacks it.
func pythonCmd(t *testing.T) []string {
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		py = "python3"
	}
	requireRun(t, "redis-py (Debian's python3-redis)", py, "-c", "import redis")
	return []string{py}
}

func nodeCmd(t *testing.T) []string {
	requireRun(t, "ioredis and node-redis (npm ci in compat/testdata/node)", "node", "-e",
		"require('./testdata/node/node_modules/ioredis'); require('./testdata/node/node_modules/redis')")
	return []string{"node"}
}

func rubyCmd(t *testing.T) []string {
	requireRun(t, "redis-rb (Debian's ruby-redis)", "ruby", "-e", "require 'redis'")
	return []string{"ruby"}
}

func phpCmd(t *testing.T) []string {
	requireRun(t, "phpredis (Debian's php-redis)", "php", "-r", "exit(class_exists('Redis') ? 0 : 1);")
	return []string{"php"}
}

// startRedis runs a real redis-server on a Unix socket for comparison.
func startRedis(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: run `make setup` (scripts/setup installs Debian's redis-server)")
	}
	dir, err := os.MkdirTemp("", "pgm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", socket, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := newGoRedis(socket)
	defer c.Close()
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		err := c.Ping(context.Background()).Err()
		return err == nil, fmt.Sprintf("redis-server does not answer: %v", err)
	})
	return socket
}
