// Command warmstart measures a sidecar's warm start: the time from starting
// `pgmirror serve` on a populated cache_entries to its "ready" log line, and
// its resident memory (VmRSS) once ready, against the raw data size (the sum
// of the key and value bytes).
package main

import (
	"bufio"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	_ "github.com/lib/pq"

	"pgmirror/bench/internal/benchutil"
)

// Run is one warm start.
type Run struct {
	ReadySeconds  float64 `json:"ready_seconds"`      // process start to the "ready" log line
	LoadTook      string  `json:"load_took"`          // as the sidecar logs it
	RSSReady      int64   `json:"rss_ready"`          // VmRSS at ready
	RSSSettled    int64   `json:"rss_settled"`        // VmRSS 3 s after ready
	HWM           int64   `json:"rss_peak"`           // VmHWM 3 s after ready
	Entries       int64   `json:"entries"`            // INFO entries
	IndexBytes    int64   `json:"index_bytes"`        // INFO, the mirror's own accounting
	ValueBytes    int64   `json:"value_bytes"`        // INFO
	ValuesDropped string  `json:"value_sets_dropped"` // INFO
}

// Result is every run and the raw data size.
type Result struct {
	Rows      int64  `json:"rows"`
	RawBytes  int64  `json:"raw_bytes"`
	MaxMemory string `json:"max_memory"`
	Runs      []Run  `json:"runs"`
	Median    Run    `json:"median"`
}

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("warmstart: ")
	bin := flag.String("bin", "bin/pgmirror", "pgmirror binary")
	dsn := flag.String("dsn", "", "Postgres DSN of a migrated, populated database")
	dir := flag.String("dir", "", "directory for the socket and logs")
	runs := flag.Int("runs", 3, "warm starts")
	maxMem := flag.String("max-memory", "1GiB", "--max-memory of the sidecar")
	out := flag.String("out", "", "write the results as JSON here")
	flag.Parse()
	if *dsn == "" || *dir == "" {
		log.Fatal("-dsn and -dir are required")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}
	db, err := sql.Open("postgres", *dsn)
	if err != nil {
		log.Fatal(err)
	}
	res := Result{MaxMemory: *maxMem}
	err = db.QueryRow(`SELECT count(*), coalesce(sum(octet_length(key) + octet_length(value)), 0) FROM cache_entries`).
		Scan(&res.Rows, &res.RawBytes)
	db.Close()
	if err != nil {
		log.Fatal(err)
	}
	for i := range *runs {
		r, err := start(*bin, *dsn, *dir, *maxMem, i)
		if err != nil {
			log.Fatal(err)
		}
		if r.Entries != res.Rows {
			log.Fatalf("run %d: sidecar holds %d entries, the table %d", i, r.Entries, res.Rows)
		}
		log.Printf("run %d: ready in %.2f s (load %s), VmRSS %d MiB at ready, %d MiB settled (raw %d MiB)",
			i, r.ReadySeconds, r.LoadTook, r.RSSReady>>20, r.RSSSettled>>20, res.RawBytes>>20)
		res.Runs = append(res.Runs, r)
	}
	res.Median = median(res.Runs)
	if *out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

func start(bin, dsn, dir, maxMem string, i int) (Run, error) {
	var r Run
	sock := filepath.Join(dir, fmt.Sprintf("warm%d.sock", i))
	logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("warm%d.log", i)))
	if err != nil {
		return r, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", "--dsn", dsn, "--socket", sock, "--http=", "--max-memory", maxMem)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return r, err
	}
	cmd.Stdout = logf
	t0 := time.Now()
	if err := benchutil.Start(cmd); err != nil {
		return r, err
	}
	defer benchutil.Stop(cmd, 10*time.Second)

	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if strings.Contains(line, " ready: ") {
				select {
				case ready <- line:
				default:
				}
			}
		}
		_, _ = io.Copy(logf, stderr)
		close(ready)
	}()
	var line string
	select {
	case l, ok := <-ready:
		if !ok {
			return r, fmt.Errorf("run %d: pgmirror exited before ready; see %s", i, logf.Name())
		}
		line = l
	case <-time.After(120 * time.Second):
		return r, fmt.Errorf("run %d: not ready after 120 s", i)
	}
	r.ReadySeconds = time.Since(t0).Seconds()
	pid := cmd.Process.Pid
	r.RSSReady, _ = benchutil.ProcStatus(pid, "VmRSS")
	if _, v, ok := strings.Cut(line, "load_took="); ok {
		r.LoadTook = strings.Fields(v)[0]
	}
	time.Sleep(3 * time.Second)
	r.RSSSettled, _ = benchutil.ProcStatus(pid, "VmRSS")
	r.HWM, _ = benchutil.ProcStatus(pid, "VmHWM")
	c, err := benchutil.Dial(sock)
	if err != nil {
		return r, err
	}
	defer c.Close()
	info, err := c.Info()
	if err != nil {
		return r, err
	}
	r.Entries, _ = strconv.ParseInt(info["entries"], 10, 64)
	r.IndexBytes, _ = strconv.ParseInt(info["index_bytes"], 10, 64)
	r.ValueBytes, _ = strconv.ParseInt(info["value_bytes"], 10, 64)
	r.ValuesDropped = info["value_sets_dropped"]
	return r, nil
}

// median takes each field's median across the runs.
func median(runs []Run) Run {
	if len(runs) == 0 {
		return Run{}
	}
	mid := func(get func(Run) float64) float64 {
		xs := make([]float64, len(runs))
		for i, r := range runs {
			xs[i] = get(r)
		}
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	m := runs[len(runs)/2]
	m.ReadySeconds = mid(func(r Run) float64 { return r.ReadySeconds })
	m.RSSReady = int64(mid(func(r Run) float64 { return float64(r.RSSReady) }))
	m.RSSSettled = int64(mid(func(r Run) float64 { return float64(r.RSSSettled) }))
	m.HWM = int64(mid(func(r Run) float64 { return float64(r.HWM) }))
	return m
}
