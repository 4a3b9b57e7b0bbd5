// Command fanout measures what LISTEN/NOTIFY costs as the number of
// listening sidecars grows, on one Postgres:
//
// For each N of -sidecars it starts N `pgmirror serve` processes on -dsn
// (each its own socket and so its own LISTEN connection) and, for N > 0, a
// bare pq.Listener (the "floor": it counts the notifications and their
// bytes and reads each payload's sent_at), so N sidecars are N+1 listeners.
// Then, on the same processes:
//
//   - idle: no writes, for Postgres's background CPU;
//   - paced: -rate single-row upserts per second (INSERT ... ON CONFLICT DO
//     UPDATE, 100-byte values, one per transaction) over -paced-conns
//     connections;
//   - unpaced: -writers connections upserting as fast as they can.
//
// In both write phases every -probe-every'th write is a probe: a new key
// probe:... whose arrival each sidecar reports through a keyspace
// notification (one PSUBSCRIBE __keyspace@0__:probe:* connection per
// sidecar), so nothing polls. After the window the writes stop, a sentinel
// key is written, and once every sidecar has it, each sidecar's values of
// every key written are compared with the table (MGET).
//
// Postgres CPU is the user+system time of the postmaster and all its
// children from /proc (plus the children it reaped), before and after each
// window. "Per delivered notification" divides it by notifications x
// listeners.
//
// Two comparisons run on the fleets of their size:
//
//   - at -update-at sidecars: a -update-rows-row UPDATE with the packed
//     statement triggers (on a connection that wrote a row before, as a
//     pooled one has, and on a new one) against a per-row notify trigger
//     installed for the comparison only (the statement trigger
//     pgmirror_20_notify_update is dropped and put back by `pgmirror
//     migrate`): time from commit until every sidecar has converged,
//     notifications, Postgres CPU, the sidecars' local queue overflows;
//   - at -grouped-at sidecars: -grouped-rate writes/s sent through the
//     sidecars' sockets (SET, go-redis, so the sidecars' group commit batches
//     them; once through sidecars with default flags and once through others
//     started with --write-linger=-grouped-linger) against the same writes
//     sent one per transaction in SQL: Postgres CPU per write, notifications
//     per write, mean batch size.
//
// It writes the results as JSON (-out) and a Markdown report (-report),
// prints the report, and with -benchmarks replaces the section "make
// bench-fanout results" of that file.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/lib/pq"

	"pgmirror/bench/internal/benchutil"
)

type config struct {
	bin, dsn, dir, pgdata string
	out, report, bench    string
	machine, commands     string
	sidecars              []int
	sidecarArgs           []string
	quick                 bool

	rate, pacedConns, writers int
	keys, probeEvery          int
	idle, paced, unpaced      time.Duration
	warmup                    time.Duration
	settleTimeout             time.Duration
	updateTimeout             time.Duration
	plain                     bool

	memPerSidecar   int64
	connsPerSidecar int
	memReserve      int64

	updateAt, updateRows, updateReps int

	groupedAt, groupedRate, groupedTargets, groupedConns, groupedReps int
	grouped                                                           time.Duration
	groupedLinger                                                     string
}

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("fanout: ")
	var cfg config
	var sidecars, sidecarArgs string
	var memPerSidecar, memReserve int
	flag.StringVar(&cfg.bin, "bin", "bin/pgmirror", "pgmirror binary")
	flag.StringVar(&cfg.dsn, "dsn", "", "Postgres DSN of a migrated database (its cache_entries is emptied)")
	flag.StringVar(&cfg.dir, "dir", "", "directory for sockets and logs")
	flag.StringVar(&cfg.pgdata, "pgdata", "", "the server's data directory (postmaster.pid: whose CPU to count)")
	flag.StringVar(&cfg.out, "out", "", "write the results as JSON here")
	flag.StringVar(&cfg.report, "report", "", "write the Markdown report here")
	flag.StringVar(&cfg.bench, "benchmarks", "", "replace the section \"make bench-fanout results\" of this file with the report")
	flag.StringVar(&cfg.machine, "machine", "", "tab-separated machine description (name, value lines) for the report")
	flag.StringVar(&cfg.commands, "commands", "", "the commands as run, for the report")
	flag.StringVar(&sidecars, "sidecars", "0,1,10,50,200", "numbers of sidecars, comma-separated (0: no listener at all)")
	flag.StringVar(&sidecarArgs, "sidecar-args", "--max-memory=32MiB", "extra flags of every sidecar, space-separated")
	flag.BoolVar(&cfg.quick, "quick", false, "a smoke run (marks the report as such)")
	flag.IntVar(&cfg.rate, "rate", 1000, "paced writes per second")
	flag.IntVar(&cfg.pacedConns, "paced-conns", 4, "connections of the paced writer")
	flag.IntVar(&cfg.writers, "writers", 8, "concurrent writers of the unpaced phase")
	flag.IntVar(&cfg.keys, "keys", 1000, "keys the writes cycle over (w:000000 ...)")
	flag.IntVar(&cfg.probeEvery, "probe-every", 20, "every n-th write is a probe (a new key)")
	flag.DurationVar(&cfg.idle, "idle", 3*time.Second, "idle window (Postgres's background CPU)")
	flag.DurationVar(&cfg.paced, "paced", 10*time.Second, "paced window")
	flag.DurationVar(&cfg.unpaced, "unpaced", 10*time.Second, "unpaced window")
	flag.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "writes before each window")
	flag.DurationVar(&cfg.settleTimeout, "settle-timeout", 60*time.Second, "wait this long at most for every sidecar to see a phase's sentinel")
	flag.DurationVar(&cfg.updateTimeout, "update-timeout", 20*time.Second, "wait this long at most for every sidecar to converge after an UPDATE")
	flag.BoolVar(&cfg.plain, "plain", true, "with 0 sidecars, also run the unpaced writers on a copy of the table without triggers")
	flag.IntVar(&memPerSidecar, "mem-per-sidecar-mib", 48, "memory a sidecar and its Postgres backends are assumed to need (caps N)")
	flag.IntVar(&memReserve, "mem-reserve-mib", 4096, "memory left free for everything else (caps N)")
	flag.IntVar(&cfg.connsPerSidecar, "conns-per-sidecar", 3, "Postgres connections a sidecar is assumed to hold (caps N by max_connections)")
	flag.IntVar(&cfg.updateAt, "update-at", 10, "run the UPDATE comparison on the fleet of this many sidecars (0: skip)")
	flag.IntVar(&cfg.updateRows, "update-rows", 10000, "rows of the UPDATE")
	flag.IntVar(&cfg.updateReps, "update-reps", 5, "repetitions of each UPDATE variant (interleaved)")
	flag.IntVar(&cfg.groupedAt, "grouped-at", 50, "run the grouped-writes comparison on the fleet of this many sidecars (0: skip)")
	flag.IntVar(&cfg.groupedRate, "grouped-rate", 1000, "writes per second of the grouped comparison")
	flag.IntVar(&cfg.groupedTargets, "grouped-targets", 2, "sidecars the grouped writes go through")
	flag.IntVar(&cfg.groupedConns, "grouped-conns", 8, "client connections per target sidecar (and concurrent writers per target)")
	flag.IntVar(&cfg.groupedReps, "grouped-reps", 2, "repetitions of each variant of the grouped comparison (interleaved)")
	flag.DurationVar(&cfg.grouped, "grouped", 10*time.Second, "window of each grouped-comparison run")
	flag.StringVar(&cfg.groupedLinger, "grouped-linger", "5ms", "also write through other sidecars started with this --write-linger (\"\": skip)")
	flag.Parse()
	if cfg.dsn == "" || cfg.dir == "" || cfg.pgdata == "" {
		log.Fatal("-dsn, -dir and -pgdata are required")
	}
	for _, s := range strings.Split(sidecars, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 {
			log.Fatalf("bad -sidecars %q", sidecars)
		}
		cfg.sidecars = append(cfg.sidecars, n)
	}
	cfg.sidecarArgs = strings.Fields(sidecarArgs)
	cfg.memPerSidecar = int64(memPerSidecar) << 20
	cfg.memReserve = int64(memReserve) << 20
	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	db, err := sql.Open("postgres", cfg.dsn)
	if err != nil {
		log.Fatal(err)
	}
	conns := max(cfg.writers, cfg.pacedConns, cfg.groupedTargets*cfg.groupedConns) + 4
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	defer db.Close()
	pm, err := benchutil.PostmasterPID(cfg.pgdata)
	if err != nil {
		log.Fatal(err)
	}

	res := &Results{Started: time.Now().UTC(), Quick: cfg.quick, Config: flagValues()}
	if err := prepare(ctx, db); err != nil {
		log.Fatal(err)
	}
	for _, n := range cfg.sidecars {
		r, err := runFleet(ctx, cfg, db, pm, n)
		if err != nil {
			log.Fatalf("%d sidecars: %v", n, err)
		}
		res.Runs = append(res.Runs, r)
	}
	res.Fits = fits(res.Runs)
	res.Seconds = time.Since(res.Started).Seconds()
	if cfg.out != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(cfg.out, append(b, '\n'), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	md := render(cfg, res)
	fmt.Print(md)
	if cfg.report != "" {
		if err := os.WriteFile(cfg.report, []byte(md), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	if cfg.bench != "" {
		if err := replaceSection(cfg.bench, md); err != nil {
			log.Fatal(err)
		}
		log.Printf("replaced the section %q of %s", sectionTitle, cfg.bench)
	}
}

// flagValues lists the flags as set, for the results.
func flagValues() map[string]string {
	m := map[string]string{}
	flag.VisitAll(func(f *flag.Flag) { m[f.Name] = f.Value.String() })
	return m
}

// prepare creates the table without triggers for the plain baseline.
func prepare(ctx context.Context, db *sql.DB) error {
	_, err := db.ExecContext(ctx, `
		DROP TABLE IF EXISTS fanout_plain;
		CREATE TABLE fanout_plain (LIKE cache_entries INCLUDING ALL);`)
	return err
}
