package pgtest

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// procInfo is the part of /proc/<pid>/stat the harness needs.
type procInfo struct {
	state byte   // R, S, D, Z (zombie), ...
	ppid  int    // parent pid
	start uint64 // start time in clock ticks since boot; tells pid reuse apart
}

// readProc parses /proc/<pid>/stat; ok is false when there is no such process.
func readProc(pid int) (info procInfo, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return info, false
	}
	// The command name in parentheses may hold spaces and ')', so the
	// fixed fields are counted from the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return info, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return info, false
	}
	info.state = f[0][0]
	info.ppid, _ = strconv.Atoi(f[1])
	info.start, _ = strconv.ParseUint(f[19], 10, 64) // field 22 of stat
	return info, true
}

// alive reports whether pid runs; a zombie counts as dead, since nothing but
// its (possibly non-reaping) parent can make it go away.
func alive(pid int) bool {
	info, ok := readProc(pid)
	return ok && info.state != 'Z' && info.state != 'X'
}

// pids lists every process in /proc.
func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// childrenOf lists the live children of pid.
func childrenOf(pid int) []int {
	var out []int
	for _, p := range pids() {
		if info, ok := readProc(p); ok && info.ppid == pid && info.state != 'Z' {
			out = append(out, p)
		}
	}
	return out
}

// waitGone polls until none of pids is alive; it reports false on timeout.
func waitGone(pids []int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		anyAlive := false
		for _, p := range pids {
			anyAlive = anyAlive || alive(p)
		}
		if !anyAlive {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
