package benchutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// FleetOptions says how to start a fleet of `pgmirror serve` processes.
type FleetOptions struct {
	Bin  string // the pgmirror binary
	DSN  string // --dsn of every sidecar
	Dir  string // sockets and logs go here
	Name string // sidecar i has socket Dir/<Name>-<i>.sock and log Dir/<Name>-<i>.log
	// Args returns the flags of sidecar i after serve, --dsn and --socket;
	// nil means --http= (no admin server).
	Args func(i int) []string
	// Env is added to the sidecars' environment.
	Env []string
	// ReadyTimeout bounds the wait for each sidecar's first load; 0 means 60 s.
	ReadyTimeout time.Duration
}

// Fleet is N running sidecars.
type Fleet struct {
	Cmds  []*exec.Cmd
	Socks []string
	Logs  []*os.File
}

// StartFleet starts n sidecars, ten at a time, and waits until all are
// ready. On an error the fleet started so far is returned for Stop.
func StartFleet(o FleetOptions, n int) (*Fleet, error) {
	f := &Fleet{}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 60 * time.Second
	}
	for i := range n {
		sock := filepath.Join(o.Dir, fmt.Sprintf("%s-%d.sock", o.Name, i))
		logf, err := os.Create(filepath.Join(o.Dir, fmt.Sprintf("%s-%d.log", o.Name, i)))
		if err != nil {
			return f, err
		}
		f.Logs = append(f.Logs, logf)
		args := []string{"serve", "--dsn", o.DSN, "--socket", sock}
		if o.Args != nil {
			args = append(args, o.Args(i)...)
		} else {
			args = append(args, "--http=")
		}
		c := exec.Command(o.Bin, args...)
		c.Stdout, c.Stderr = logf, logf
		if len(o.Env) > 0 {
			c.Env = append(os.Environ(), o.Env...)
		}
		if err := Start(c); err != nil {
			return f, err
		}
		f.Cmds = append(f.Cmds, c)
		f.Socks = append(f.Socks, sock)
		if (i+1)%10 == 0 || i == n-1 {
			for j := i / 10 * 10; j <= i; j++ {
				if err := WaitReady(f.Socks[j], f.Cmds[j].Process, time.Now().Add(o.ReadyTimeout)); err != nil {
					return f, fmt.Errorf("%w; see %s", err, f.Logs[j].Name())
				}
			}
		}
	}
	return f, nil
}

// Stop stops every sidecar (SIGTERM, SIGKILL after 10 s) and closes the logs.
func (f *Fleet) Stop() {
	var wg sync.WaitGroup
	for _, c := range f.Cmds {
		wg.Add(1)
		go func() { defer wg.Done(); Stop(c, 10*time.Second) }()
	}
	wg.Wait()
	for _, l := range f.Logs {
		l.Close()
	}
}

// Counters sums the named INFO fields (integers) over the fleet.
func (f *Fleet) Counters(keys ...string) map[string]int64 {
	sum := map[string]int64{}
	for _, s := range f.Socks {
		c, err := Dial(s)
		if err != nil {
			continue
		}
		if info, err := c.Info(); err == nil {
			for _, k := range keys {
				v, _ := strconv.ParseInt(info[k], 10, 64)
				sum[k] += v
			}
		}
		c.Close()
	}
	return sum
}

// CPUTicks is the user+system clock ticks the fleet has used.
func (f *Fleet) CPUTicks() int64 {
	var t int64
	for _, c := range f.Cmds {
		t += CPUTicks(c.Process.Pid)
	}
	return t
}

// RSS is the fleet's resident memory in bytes (VmRSS summed).
func (f *Fleet) RSS() int64 {
	var t int64
	for _, c := range f.Cmds {
		if rss, err := ProcStatus(c.Process.Pid, "VmRSS"); err == nil {
			t += rss
		}
	}
	return t
}
