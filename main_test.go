package main

// Exec and in-process tests of the command line; tests against a real
// Postgres are in main_pg_test.go.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testutil"
	"pgmirror/migrations"
)

// binary is the pgmirror built once by TestMain, with its version set through -ldflags.
var binary string

const testVersion = "v0.0.0-test"

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "pgmirror-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "pgmirror")
	gobin, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "building pgmirror for the exec tests:", err)
		return 1
	}
	build := exec.Command(gobin, "build", "-ldflags", "-X main.version="+testVersion, "-o", binary, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	return pgtest.Run(m)
}

// waitFor polls buf until it contains want, failing the test at the deadline.
func waitFor(t *testing.T, buf *testutil.SyncBuffer, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %v; output so far:\n%s", want, timeout, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cleanEnv is the test's environment without anything that would configure pgmirror or libpq.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PG") || name == "DATABASE_URL" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// command prepares the binary with a clean environment, run in a temporary directory so a
// default socket path lands there.
func command(t *testing.T, env []string, args ...string) (*exec.Cmd, *testutil.SyncBuffer, *testutil.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = cleanEnv(env...)
	stdout, stderr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	return cmd, stdout, stderr
}

// exitCode runs cmd to completion within a deadline and returns its exit status.
func exitCode(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return waitExit(t, cmd, 30*time.Second)
}

// waitExit waits for a started cmd, killing it and failing the test after timeout.
func waitExit(t *testing.T, cmd *exec.Cmd, timeout time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &exit):
			return exit.ExitCode()
		default:
			t.Fatal(err)
		}
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not exit within %v", cmd, timeout)
	}
	return -1
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		args       []string
		env        []string
		code       int
		stdout     string // must contain
		stderr     string // must contain
		notInOut   string // must not appear in stdout or stderr
		stderrNone bool   // stderr must be empty
	}{
		{name: "bad flag", args: []string{"serve", "--reload-interval=banana"}, code: 2,
			stderr: `pgmirror: invalid value "banana" for flag --reload-interval: want a duration like 30s or 5m`},
		{name: "bad env", env: []string{"PGMIRROR_RELOAD_INTERVAL=banana"}, args: []string{"serve"}, code: 2,
			stderr: `invalid value "banana" for environment variable PGMIRROR_RELOAD_INTERVAL`},
		{name: "bad env, implicit serve", env: []string{"PGMIRROR_MAX_MEMORY=-1MiB"}, code: 2,
			stderr: "PGMIRROR_MAX_MEMORY"},
		{name: "version", args: []string{"version"}, code: 0, stderrNone: true,
			stdout: fmt.Sprintf("pgmirror %s (%s)\n", testVersion, runtime.Version())},
		{name: "--version", args: []string{"--version"}, code: 0, stdout: "pgmirror " + testVersion},
		{name: "unknown command", args: []string{"bogus-subcommand"}, code: 2,
			stderr: `unknown command "bogus-subcommand"`},
		{name: "unknown flag prints usage", args: []string{"serve", "--bogus"}, code: 2,
			stderr: "flag provided but not defined: --bogus"},
		{name: "unknown flag prints usage too", args: []string{"--bogus"}, code: 2, stderr: "--reload-interval duration"},
		{name: "positional argument", args: []string{"serve", "extra"}, code: 2, stderr: `unexpected argument "extra"`},
		{name: "migrate rejects serve flags", args: []string{"migrate", "--socket=/x"}, code: 2,
			stderr: "flag provided but not defined: --socket"},
		{name: "migrate bad env", args: []string{"migrate"}, env: []string{"PGMIRROR_LOG_LEVEL=loud"}, code: 2,
			stderr: "PGMIRROR_LOG_LEVEL"},
		{name: "-h", args: []string{"-h"}, code: 0, stdout: "--max-memory size", stderrNone: true},
		{name: "serve --help", args: []string{"serve", "--help"}, code: 0, stdout: "PGMIRROR_RELOAD_INTERVAL"},
		{name: "migrate -h", args: []string{"migrate", "-h"}, code: 0, stdout: "Usage: pgmirror migrate"},
		{name: "help", args: []string{"help"}, code: 0, stdout: "pgmirror migrate [flags]"},
		{name: "help migrate", args: []string{"help", "migrate"}, code: 0, stdout: "--dsn dsn"},
		{name: "help bogus", args: []string{"help", "bogus"}, code: 2, stderr: `no help for "bogus"`},
		{name: "version with arguments", args: []string{"version", "--json"}, code: 2, stderr: "takes no arguments"},
		{name: "bad DSN hides password", args: []string{"--dsn", "postgres://u:s3cret@host:badport/x"}, code: 2,
			stderr: "invalid value \"postgres://u:xxxxx@host:badport/x\" for flag --dsn", notInOut: "s3cret"},
		{name: "bad DATABASE_URL hides password", env: []string{"DATABASE_URL=host=h port=x password='s3 cret'"}, code: 2,
			stderr: "environment variable DATABASE_URL", notInOut: "s3 cret"},
		// Postgres is not needed to see migrate fail: it can only fail, with exit 1, and say why.
		{name: "migrate unreachable", args: []string{"migrate", "--dsn", "postgres://u:s3cret@/x?host=/nonexistent-dir"},
			code: 1, stderr: "pgmirror: migrate: cannot reach Postgres (postgres://u:xxxxx@/x?host=/nonexistent-dir)", notInOut: "s3cret"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd, stdout, stderr := command(t, tt.env, tt.args...)
			code := exitCode(t, cmd)
			out, errOut := stdout.String(), stderr.String()
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out, errOut)
			}
			if !strings.Contains(out, tt.stdout) {
				t.Errorf("stdout %q, want it to contain %q", out, tt.stdout)
			}
			if !strings.Contains(errOut, tt.stderr) {
				t.Errorf("stderr %q, want it to contain %q", errOut, tt.stderr)
			}
			if tt.stderrNone && errOut != "" {
				t.Errorf("stderr %q, want none", errOut)
			}
			if tt.notInOut != "" && strings.Contains(out+errOut, tt.notInOut) {
				t.Errorf("output shows %q:\n%s%s", tt.notInOut, out, errOut)
			}
		})
	}
}

// unreachableDSN names a socket directory that does not exist, so every attempt fails at once.
const unreachableDSN = "host=/nonexistent-dir port=1 user=x dbname=x sslmode=disable connect_timeout=1"

func TestServeStopsOnSIGTERMWhileRetrying(t *testing.T) {
	t.Parallel()
	cmd, _, stderr := command(t, nil, "serve", "--dsn", unreachableDSN, "--http=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, stderr, "retry_in=", 10*time.Second)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd, 5*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0\nstderr:\n%s", code, stderr)
	}
	out := stderr.String()
	for _, want := range []string{"attempt=1", "error=", "retry_in=100ms", "stopped"} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
}

func TestServeNeverLogsPassword(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		args []string
		env  []string
	}{
		{"url flag", []string{"--dsn", "postgres://u:s3cret@/x?host=/nonexistent"}, nil},
		{"key=value flag, json logs", []string{"--log-json", "--log-level=trace", "--dsn", unreachableDSN + " password='s3cret'"}, nil},
		{"env and listen dsn", nil, []string{
			"PGMIRROR_DSN=postgres://u:s3cret@/x?host=/nonexistent",
			"PGMIRROR_LISTEN_DSN=host=/nonexistent password=s3cret",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cmd, stdout, stderr := command(t, tt.env, append([]string{"serve", "--http="}, tt.args...)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			// Two failed attempts: the DSN has been logged and each error message has passed through.
			waitFor(t, stderr, "attempt", 10*time.Second)
			waitFor(t, stderr, "200ms", 10*time.Second)
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := waitExit(t, cmd, 5*time.Second); code != 0 {
				t.Errorf("exit %d, want 0", code)
			}
			out := stdout.String() + stderr.String()
			if strings.Contains(out, "s3cret") {
				t.Errorf("the password appears in the output:\n%s", out)
			}
			if !strings.Contains(out, "xxxxx") {
				t.Errorf("the redacted DSN is not logged:\n%s", out)
			}
		})
	}
}

func TestServeSIGHUPRequestsResync(t *testing.T) {
	t.Parallel()
	cmd, _, stderr := command(t, nil, "serve", "--dsn", unreachableDSN, "--http=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, stderr, "retry_in=", 10*time.Second)
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, stderr, "resync requested", 5*time.Second)
	// Still running: it keeps retrying after the SIGHUP.
	waitFor(t, stderr, "retry_in=400ms", 10*time.Second)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, cmd, 5*time.Second); code != 0 {
		t.Errorf("exit %d after SIGINT, want 0\nstderr:\n%s", code, stderr)
	}
}

func TestParseFlagsCommands(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args    []string
		command string
		err     string // "" for none, "help" for flag.ErrHelp
	}{
		{nil, "serve", ""},
		{[]string{"--max-clients=5"}, "serve", ""},
		{[]string{"serve"}, "serve", ""},
		{[]string{"migrate", "--dsn=host=/x"}, "migrate", ""},
		{[]string{"version"}, "version", ""},
		{[]string{"--version"}, "version", ""},
		{[]string{"help"}, "help", ""},
		{[]string{"help", "migrate"}, "help", ""},
		{[]string{"-h"}, "serve", "help"},
		{[]string{"version", "-h"}, "version", "help"},
		{[]string{"bogus-subcommand"}, "bogus-subcommand", "unknown command"},
		{[]string{"help", "a", "b"}, "help", "no help"},
	} {
		m := NewMain()
		m.Env = nil
		m.Stderr = &bytes.Buffer{}
		err := m.ParseFlags(tt.args)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%q: %v", tt.args, err)
		case tt.err == "help" && !errors.Is(err, flag.ErrHelp):
			t.Errorf("%q: got %v, want flag.ErrHelp", tt.args, err)
		case tt.err != "" && tt.err != "help" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: got %v, want an error saying %q", tt.args, err, tt.err)
		}
		if m.Command != tt.command {
			t.Errorf("%q: command %q, want %q", tt.args, m.Command, tt.command)
		}
	}
}

func TestParseFlagsConfiguresMain(t *testing.T) {
	t.Parallel()
	m := NewMain()
	var stderr testutil.SyncBuffer
	m.Stderr = &stderr
	m.Env = []string{"PGMIRROR_DSN=host=/from-env", "PGMIRROR_TYPO=1"}
	if err := m.ParseFlags([]string{"serve", "--log-level=debug", "--log-json"}); err != nil {
		t.Fatal(err)
	}
	if m.Config.DSN != "host=/from-env" || m.Config.LogLevel != "debug" || !m.Config.LogJSON {
		t.Errorf("config %+v", m.Config)
	}
	if !m.Logger.IsDebug() || m.Logger.IsTrace() {
		t.Error("logger level is not debug")
	}
	if out := stderr.String(); !strings.Contains(out, `"name":"PGMIRROR_TYPO"`) || !strings.Contains(out, `"@module":"pgmirror"`) {
		t.Errorf("want a JSON warning naming PGMIRROR_TYPO from module pgmirror, got %q", out)
	}
}

func TestRunVersionAndHelp(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"version"}, "pgmirror dev (" + runtime.Version() + ")\n"},
		{[]string{"help"}, "Flags of serve:"},
		{[]string{"help", "version"}, "Run 'pgmirror help serve'"},
		{[]string{"help", "serve"}, "--stale-reads serve|error"},
	} {
		m := NewMain()
		var stdout bytes.Buffer
		m.Stdout = &stdout
		if err := m.ParseFlags(tt.args); err != nil {
			t.Fatal(err)
		}
		if err := m.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(stdout.String(), tt.want) {
			t.Errorf("%q printed %q, want %q", tt.args, stdout.String(), tt.want)
		}
	}
}

// TestRunServeStopsWhileRetrying runs the daemon in-process, as later tests will with a database.
func TestRunServeStopsWhileRetrying(t *testing.T) {
	t.Parallel()
	m := NewMain()
	var stderr testutil.SyncBuffer
	m.Stderr = &stderr
	m.Env = nil
	if err := m.ParseFlags([]string{"--dsn", unreachableDSN, "--http="}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	waitFor(t, &stderr, "retry_in=", 10*time.Second)
	m.RequestResync()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of cancellation")
	}
	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for _, want := range []string{"resync requested", "stopped"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, stderr.String())
		}
	}
	if m.Sidecar() != nil {
		t.Error("Close left the sidecar set")
	}
}

func TestPrintMigrateResult(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		res  migrations.Result
		want string
	}{
		{migrations.Result{}, "nothing to do: schema up to date\n"},
		{migrations.Result{Applied: []string{"0001_cache_entries.sql", "0002_loaders.sql"}, TriggersUpdated: true},
			"applied 0001_cache_entries.sql\napplied 0002_loaders.sql\ntriggers.sql installed\n"},
		{migrations.Result{Applied: []string{"0003_x.sql"}}, "applied 0003_x.sql\ntriggers.sql up to date\n"},
		{migrations.Result{TriggersUpdated: true}, "triggers.sql installed\n"},
		{migrations.Result{Secured: []string{"revoked EXECUTE from PUBLIC on f()"}},
			"triggers.sql up to date\nsecured: revoked EXECUTE from PUBLIC on f()\n"},
	} {
		var b bytes.Buffer
		printMigrateResult(&b, tt.res)
		if b.String() != tt.want {
			t.Errorf("%+v printed %q, want %q", tt.res, b.String(), tt.want)
		}
	}
}

func TestRedactingWriter(t *testing.T) {
	t.Parallel()
	m := NewMain()
	var stderr bytes.Buffer
	m.Stderr = &stderr
	m.Env = nil
	if err := m.ParseFlags([]string{"--dsn", "postgres://u:s3cret@h/db"}); err != nil {
		t.Fatal(err)
	}
	// Whatever a component logs, even a raw error quoting the DSN, the password does not reach stderr.
	m.Logger.Error("driver said", "error", `parse "postgres://u:s3cret@h/db": oops`)
	if out := stderr.String(); strings.Contains(out, "s3cret") || !strings.Contains(out, "u:xxxxx@h") {
		t.Errorf("log line %q", out)
	}
}
