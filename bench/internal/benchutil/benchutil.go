// Package benchutil holds what the benchmark programs share: a minimal
// RESP client for probing sidecars, percentiles, and running pgmirror
// processes that die with the benchmark.
package benchutil

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Conn is a minimal Redis-protocol client: one command at a time, replies
// read into a reused buffer, so probing costs no allocations per GET.
type Conn struct {
	c   net.Conn
	r   *bufio.Reader
	w   *bufio.Writer
	buf []byte
}

// Dial connects to a Unix socket.
func Dial(socket string) (*Conn, error) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	return &Conn{c: c, r: bufio.NewReaderSize(c, 64<<10), w: bufio.NewWriterSize(c, 4096)}, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// Do sends a command and returns a bulk or simple-string reply (nil for a
// nil reply). The returned slice is valid until the next call.
func (c *Conn) Do(args ...string) ([]byte, error) {
	fmt.Fprintf(c.w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c.w, "$%d\r\n%s\r\n", len(a), a)
	}
	if err := c.w.Flush(); err != nil {
		return nil, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 {
		return nil, fmt.Errorf("short reply %q", line)
	}
	switch line[0] {
	case '+', ':':
		c.buf = append(c.buf[:0], line[1:len(line)-2]...)
		return c.buf, nil
	case '-':
		return nil, errors.New(string(line[1 : len(line)-2]))
	case '$':
		n, err := strconv.Atoi(string(line[1 : len(line)-2]))
		if err != nil {
			return nil, fmt.Errorf("bad reply %q", line)
		}
		if n < 0 {
			return nil, nil
		}
		if cap(c.buf) < n+2 {
			c.buf = make([]byte, n+2)
		}
		c.buf = c.buf[:n+2]
		if _, err := readFull(c.r, c.buf); err != nil {
			return nil, err
		}
		return c.buf[:n], nil
	}
	return nil, fmt.Errorf("unexpected reply %q", line)
}

func readFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Info returns the fields of INFO as a map.
func (c *Conn) Info() (map[string]string, error) {
	b, err := c.Do("INFO")
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = v
		}
	}
	return m, nil
}

// WaitReady polls the socket until INFO answers with state:ready, the
// process exits, or the deadline passes.
func WaitReady(socket string, p *os.Process, deadline time.Time) error {
	for {
		if p != nil && p.Signal(syscall.Signal(0)) != nil {
			return fmt.Errorf("%s: process exited", socket)
		}
		if c, err := Dial(socket); err == nil {
			info, err := c.Info()
			c.Close()
			if err == nil && info["state"] == "ready" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready in time", socket)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Start starts a command that is killed if this process dies.
func Start(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd.Start()
}

// Stop asks a process to stop (SIGTERM), kills it after the grace period,
// and reaps it.
func Stop(cmd *exec.Cmd, grace time.Duration) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// ProcStatus returns a field of /proc/<pid>/status in bytes (kB fields).
func ProcStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range bytes.Split(b, []byte("\n")) {
		if k, v, ok := bytes.Cut(l, []byte(":")); ok && string(k) == field {
			f := strings.Fields(string(v))
			if len(f) == 0 {
				break
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return n * 1024, nil
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// CPUTicks returns the user+system clock ticks a process has used.
func CPUTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// MachineTicks returns the busy and total clock ticks of all CPUs from /proc/stat.
func MachineTicks() (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// Stats summarises durations in microseconds.
type Stats struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_us"`
	P90  float64 `json:"p90_us"`
	P99  float64 `json:"p99_us"`
	P999 float64 `json:"p999_us"`
	Max  float64 `json:"max_us"`
	Mean float64 `json:"mean_us"`
}

// Summarise computes nearest-rank percentiles of xs (microseconds).
func Summarise(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	return Stats{N: len(s), P50: Percentile(s, 50), P90: Percentile(s, 90), P99: Percentile(s, 99),
		P999: Percentile(s, 99.9), Max: s[len(s)-1], Mean: sum / float64(len(s))}
}

// Percentile is the nearest-rank percentile of sorted xs.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100+0.999999) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}

// NumCPU counts the CPUs /proc/stat lists, which MachineTicks sums.
func NumCPU() int {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 1
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "cpu") && len(l) > 3 && l[3] >= '0' && l[3] <= '9' {
			n++
		}
	}
	return max(n, 1)
}
