package pgtest_test

import (
	"bufio"
	"bytes"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
)

// helperEnv guards TestHelperPanics: it only runs when re-executed by
// TestNoPostgresSurvivesCrash, with the crash mode as the value.
const helperEnv = "PGTEST_CRASH_HELPER"

// TestHelperPanics starts a server, reports its processes on stdout and then
// dies without running any cleanup, in the way helperEnv says.
func TestHelperPanics(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper for TestNoPostgresSurvivesCrash")
	}
	s := pgtest.New(t) // its t.Cleanup must never get to run
	db := open(t, s.DSN("postgres"))
	queryInt(t, db, "SELECT 1") // so that a client backend exists too
	kids := childPIDs(s.PID())
	fmt.Printf("HELPER pid=%d datadir=%s kids=%s\n", s.PID(), s.DataDir(), joinInts(kids))
	os.Stdout.Sync()
	switch mode {
	case "panic":
		// A panic outside the test goroutine skips every deferred call
		// and cleanup, unlike one inside it.
		go panic("deliberate panic")
	case "exit":
		log.Fatal("deliberate log.Fatal")
	}
	select {} // "sigkill": wait for the parent to kill us
}

func TestNoPostgresSurvivesCrash(t *testing.T) {
	for _, mode := range []string{"panic", "exit", "sigkill"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			pid, dataDir, kids := runCrashingHelper(t, mode)
			waitNoPostgres(t, pid, dataDir, kids)
			// Any later Start sweeps the directory the dead helper left.
			pgtest.New(t)
			if _, err := os.Stat(filepath.Dir(dataDir)); !os.IsNotExist(err) {
				t.Errorf("stale directory %s not swept: %v", filepath.Dir(dataDir), err)
			}
		})
	}
}

// runCrashingHelper re-executes the test binary as TestHelperPanics in the
// given mode and returns what it reported once it has died.
func runCrashingHelper(t *testing.T, mode string) (pid int, dataDir string, kids []int) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPanics$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := ""
	for sc := bufio.NewScanner(out); sc.Scan(); {
		if strings.HasPrefix(sc.Text(), "HELPER ") {
			line = sc.Text()
			break
		}
	}
	if mode == "sigkill" {
		cmd.Process.Kill()
	}
	go bufio.NewReader(out).WriteTo(new(bytes.Buffer)) // drain until exit
	werr := cmd.Wait()
	if line == "" {
		t.Fatalf("helper reported nothing (%v); stderr:\n%s", werr, stderr.String())
	}
	if werr == nil {
		t.Fatalf("helper exited cleanly; stderr:\n%s", stderr.String())
	}
	var kidList string
	if _, err := fmt.Sscanf(line, "HELPER pid=%d datadir=%s kids=%s", &pid, &dataDir, &kidList); err != nil {
		t.Fatalf("parsing %q: %v", line, err)
	}
	for _, k := range strings.Split(kidList, ",") {
		if n, err := strconv.Atoi(k); err == nil {
			kids = append(kids, n)
		}
	}
	if len(kids) == 0 {
		t.Fatalf("helper saw no postmaster children: %q", line)
	}
	return pid, dataDir, kids
}

// waitNoPostgres polls until neither the postmaster, nor its children, nor
// any process started in or for dataDir is left.
func waitNoPostgres(t *testing.T, pid int, dataDir string, kids []int) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		left := leftovers(pid, dataDir, kids)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres processes survived the crashed test: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leftovers describes every live process that belongs to the dead cluster.
func leftovers(pid int, dataDir string, kids []int) []string {
	var left []string
	for _, p := range append([]int{pid}, kids...) {
		if isAlive(p) {
			left = append(left, fmt.Sprintf("pid %d", p))
		}
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil || !isAlive(p) {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		cwd, _ := os.Readlink("/proc/" + e.Name() + "/cwd")
		if ppid(p) == pid || bytes.Contains(cmdline, []byte(dataDir)) || cwd == dataDir {
			left = append(left, fmt.Sprintf("pid %d %q", p, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		}
	}
	return left
}

// statFields returns the fields of /proc/<pid>/stat after the command name.
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
}

// isAlive reports whether pid exists and is not a zombie.
func isAlive(pid int) bool {
	f := statFields(pid)
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

func ppid(pid int) int {
	if f := statFields(pid); len(f) > 1 {
		n, _ := strconv.Atoi(f[1])
		return n
	}
	return 0
}

// childPIDs lists the live children of pid.
func childPIDs(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil && ppid(p) == pid && isAlive(p) {
			out = append(out, p)
		}
	}
	return out
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
