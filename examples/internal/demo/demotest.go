package demo

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"pgmirror/internal/testutil"
)

// What the demos' tests use: the test binary runs the demo's main as a
// child process (RunMainIfAsked in TestMain, StartMain in the test), so the
// test can send it SIGINT, as Ctrl-C does, and check what it left behind.

// mainEnv marks the test binary started by StartMain.
const mainEnv = "PGMIRROR_DEMO_MAIN"

// RunMainIfAsked runs main and exits when StartMain started this test
// binary; otherwise it returns at once. TestMain calls it first (after
// RunChildIfAsked when the demo has child sidecars).
func RunMainIfAsked(main func()) {
	if os.Getenv(mainEnv) == "" {
		return
	}
	os.Args = append([]string{os.Args[0]}, strings.Fields(os.Getenv(mainEnv+"_ARGS"))...)
	main()
	os.Exit(0)
}

// Proc is a demo's main running in a child process.
type Proc struct {
	Cmd  *exec.Cmd
	Out  *testutil.SyncBuffer // stdout and stderr
	done chan struct{}
}

// StartMain starts the demo's main (this test binary, see RunMainIfAsked)
// with args, in the repository's root as `make` runs it. The test kills it
// if it is still running at the end.
func StartMain(t testing.TB, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(os.Args[0]), Out: &testutil.SyncBuffer{}, done: make(chan struct{})}
	p.Cmd.Env = append(os.Environ(), mainEnv+"=1", mainEnv+"_ARGS="+strings.Join(args, " "))
	p.Cmd.Dir = filepath.Dir(RepoFile("go.mod"))
	p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Out
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a signal to the test's group does not reach it
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
		if strings.Contains(p.Out.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector reported a data race in the demo")
		}
		if t.Failed() {
			t.Logf("the demo's output:\n%s", p.Out.String())
		}
	})
	return p
}

// WaitFor waits until the output contains want.
func (p *Proc) WaitFor(t testing.TB, want string, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, func() (bool, string) {
		return strings.Contains(p.Out.String(), want), "the output has no " + strconv.Quote(want)
	})
}

// Wait waits until the demo exits and returns its exit status.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.Cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("the demo did not exit within %v", timeout)
		return -1
	}
}

// Interrupt sends SIGINT, as Ctrl-C does, and waits until the demo exits.
func (p *Proc) Interrupt(t testing.TB, timeout time.Duration) int {
	t.Helper()
	if err := p.Cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	return p.Wait(t, timeout)
}

var startedLine = regexp.MustCompile(`demo: Postgres ready in (\S+) \(data directory (\S+)\), migrated; sockets and logs in (\S+)`)

// AssertNothingLeft checks, once the demo of process pid exited, that the
// directories it announced (Postgres's, with its data directory and socket,
// and the sidecars' sockets and logs) are gone, that no other throwaway
// cluster directory of pid is left (the initdb template), and that no
// process runs with one of them on its command line (postgres -D, a child
// sidecar's --socket).
func AssertNothingLeft(t testing.TB, out string, pid int) {
	t.Helper()
	m := startedLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the output does not say where Postgres and the sockets were:\n%s", out)
	}
	dirs := []string{m[1], m[3]}
	for _, d := range append(append([]string(nil), dirs...), pgtestDirsOf(pid)...) {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s is still there (stat: %v)", d, err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		for _, pid := range processesUsing(dirs) {
			return false, "process " + strconv.Itoa(pid) + " still runs with " + strings.Join(dirs, " or ") + " on its command line"
		}
		return true, ""
	})
}

// pgtestDirsOf returns internal/pgtest's temporary directories made by pid.
func pgtestDirsOf(pid int) []string {
	var out []string
	for _, base := range []string{os.TempDir(), "/tmp"} {
		matches, _ := filepath.Glob(filepath.Join(base, "pgmirror-pgtest-*", "owner"))
		for _, owner := range matches {
			b, err := os.ReadFile(owner)
			if f := strings.Fields(string(b)); err == nil && len(f) > 0 && f[0] == strconv.Itoa(pid) {
				out = append(out, filepath.Dir(owner))
			}
		}
		if base == "/tmp" {
			break
		}
	}
	return out
}

// PID is the demo's process id.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// processesUsing returns the processes with one of dirs on their command line.
func processesUsing(dirs []string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, d := range dirs {
			if strings.Contains(string(b), d) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}
