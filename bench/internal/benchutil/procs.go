package benchutil

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ClockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat.
const ClockTicks = 100

// PostmasterPID reads the postmaster's process id from DATADIR/postmaster.pid.
func PostmasterPID(datadir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(datadir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid: %w", err)
	}
	return pid, nil
}

// procStat returns the fields of /proc/<pid>/stat after the command name:
// f[0] is the state (field 3), f[1] the parent (4), f[11] utime (14),
// f[12] stime (15), f[13] cutime (16), f[14] cstime (17).
func procStat(pid string) []string {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return nil
	}
	return f
}

// PostgresTicks is the CPU (user+system clock ticks) that a Postgres
// server has used: the postmaster and every live child process (backends,
// walwriter, checkpointer, autovacuum, ...), plus the children the
// postmaster has reaped (its cutime+cstime), so backends that exited
// between two readings are still counted.
func PostgresTicks(postmaster int) int64 {
	pm := strconv.Itoa(postmaster)
	t := statTicks(pm, 11, 12) + statTicks(pm, 13, 14)
	forChildren(pm, func(_ string, f []string) { t += fieldSum(f, 11, 12) })
	return t
}

// ProcNanos is the CPU time, in nanoseconds, that one live process (its
// main thread: Postgres processes have no other) has spent on a CPU, from
// /proc/<pid>/schedstat; 0 once it has exited. /proc/<pid>/stat counts in
// 10 ms ticks, too coarse for one statement.
func ProcNanos(pid int) int64 { return procNanos(strconv.Itoa(pid)) }

func procNanos(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/schedstat")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	v, _ := strconv.ParseInt(f, 10, 64)
	return v
}

// PostgresNanos is PostgresTicks in nanoseconds: the on-CPU time of the
// postmaster and each live child (schedstat), plus the children it has
// reaped (its cutime+cstime, in ticks).
func PostgresNanos(postmaster int) int64 {
	pm := strconv.Itoa(postmaster)
	t := procNanos(pm) + statTicks(pm, 13, 14)*(1e9/ClockTicks)
	forChildren(pm, func(pid string, _ []string) { t += procNanos(pid) })
	return t
}

// statTicks sums fields of /proc/<pid>/stat (indexes as procStat's).
func statTicks(pid string, fields ...int) int64 { return fieldSum(procStat(pid), fields...) }

// fieldSum sums fields of a procStat result (nil: 0).
func fieldSum(f []string, fields ...int) int64 {
	var t int64
	for _, k := range fields {
		v, _ := strconv.ParseInt(f[k], 10, 64)
		t += v
	}
	return t
}

// forChildren calls fn for every live child process of pid.
func forChildren(pid string, fn func(child string, stat []string)) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		if name == "" || name[0] < '0' || name[0] > '9' || name == pid {
			continue
		}
		if f := procStat(name); f != nil && f[1] == pid {
			fn(name, f)
		}
	}
}

// PostgresProcs counts the postmaster's live child processes.
func PostgresProcs(postmaster int) int {
	n := 0
	forChildren(strconv.Itoa(postmaster), func(string, []string) { n++ })
	return n
}

// MemAvailable is MemAvailable of /proc/meminfo in bytes.
func MemAvailable() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			fs := strings.Fields(v)
			if len(fs) > 0 {
				n, _ := strconv.ParseInt(fs[0], 10, 64)
				return n * 1024
			}
		}
	}
	return 0
}

// ScrapeMetrics reads the Prometheus text of url (an admin /metrics) and
// returns the value of every sample without labels, by metric name.
func ScrapeMetrics(url string) (map[string]float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' || strings.ContainsRune(l, '{') {
			continue
		}
		name, val, ok := strings.Cut(l, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.Fields(val)[0], 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}
