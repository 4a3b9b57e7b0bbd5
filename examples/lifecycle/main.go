// Command lifecycle shows the Postgres cache design of the seed article
// ("Key-value cache using Postgres": TTL, last_accessed_at, a refresh lock
// taken with a conditional UPDATE, reclaimed when stale, and a cleanup job)
// as pgmirror runs it, with three sidecars and a loader of a slow
// "expensive report":
//
//  1. three clients GET the report at once, one per sidecar: it is computed
//     once across the three;
//  2. before it expires, exactly one of the three refreshes it ahead, and
//     readers never wait;
//  3. the sidecar holding the refresh lock is killed (SIGKILL) in the middle
//     of the computation; once the lock is older than --refresh-lock-stale,
//     another sidecar reclaims it and refreshes the report;
//  4. a report unused for 8 days is deleted by the cleanup job.
//
// It prints each event as it happens (seen in cache_entries, pg_stat_activity
// and the report's own run log), then keeps running with what to try until
// Ctrl-C, which stops the sidecars (child processes of this one) and
// Postgres and removes their directories.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"pgmirror/examples/internal/demo"
)

// schema is the expensive report: a function that takes reportTime, logs
// each run in report_runs (committed with the value it computed, so a run
// whose sidecar died leaves no row), and its loader.
const schema = `
CREATE TABLE report_runs (
    run         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    report      text NOT NULL,
    kind        text NOT NULL,        -- load: a GET of an absent key; refresh: the refresh worker
    computed_by text NOT NULL,        -- the sidecar (its application_name)
    started_at  timestamptz NOT NULL,
    took        interval NOT NULL
);
CREATE FUNCTION expensive_report(name text) RETURNS json LANGUAGE plpgsql AS $fn$
DECLARE
    started timestamptz := clock_timestamp();
    how text;
    n bigint;
BEGIN
    SELECT CASE WHEN is_refreshing THEN 'refresh' ELSE 'load' END INTO how
        FROM cache_entries WHERE key = 'report:' || name;
    PERFORM pg_sleep(1.5); -- the expensive part
    INSERT INTO report_runs (report, kind, computed_by, started_at, took)
        VALUES (name, coalesce(how, 'load'), current_setting('application_name'), started, clock_timestamp() - started)
        RETURNING run INTO n;
    RETURN json_build_object('report', name, 'run', n, 'computed_by', current_setting('application_name'),
        'computed_at', to_char(clock_timestamp(), 'HH24:MI:SS.MS'), 'total', 1000 + n * 37 % 1000);
END
$fn$;
INSERT INTO cache_loaders (prefix, query, ttl) VALUES ('report:', 'SELECT expensive_report($1)', '15 seconds');
`

// sidecarFlags are the `pgmirror serve` flags of the three sidecars: the
// design's intervals, shortened from minutes to seconds so that a whole
// cycle fits in a demo.
var sidecarFlags = []string{
	"--refresh-interval", "1s", // the batch worker runs every second
	"--refresh-ahead", "11s", // and recomputes keys expiring within 11 s (the ttl is 15 s)
	"--refresh-lock-stale", "2s", // a refresh lock older than 2 s is reclaimed (the seed's 5 minutes)
	"--cleanup-interval", "1s", // cleanup every second
	"--retention", "168h", // deletes keys unused for 7 days (the seed's interval)
	"--expired-grace", "1h", // and keys expired for an hour
}

func main() {
	demo.RunChildIfAsked()
	ctx, stop := demo.Context()
	defer stop()
	if err := run(ctx, os.Stdout); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "lifecycle:", err)
		os.Exit(1)
	}
}

// run sets everything up, plays the scenario, then prints events until ctx
// is cancelled (Ctrl-C), and stops everything.
func run(ctx context.Context, out io.Writer) (err error) {
	env, err := demo.Start(ctx, out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := env.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if err := env.Exec(ctx, schema); err != nil {
		return err
	}
	d := &lifecycle{env: env, start: time.Now()}
	env.Printf("lifecycle: loader report: -> SELECT expensive_report($1) (1.5 s, logs each run in report_runs), ttl 15 s")
	env.Printf("lifecycle: starting three sidecars (child processes): pgmirror serve %s", strings.Join(sidecarFlags, " "))
	for i := 1; i <= 3; i++ {
		s, err := env.StartChild(ctx, fmt.Sprint("sidecar-", i), sidecarFlags...)
		if err != nil {
			return err
		}
		d.sidecars = append(d.sidecars, s)
		env.Printf("lifecycle: %s ready, pid %d, socket %s", s.Name, s.Cmd.Process.Pid, s.Socket)
	}
	obs := newObserver(d)
	go obs.run(ctx)
	if err := d.scenario(ctx); err != nil {
		return err
	}
	d.tryLines()
	<-ctx.Done()
	return nil
}

// tryLines says what to try while the demo keeps printing events.
func (d *lifecycle) tryLines() {
	e := d.env
	e.Printf("\nlifecycle: done; still running, printing events. Try, in another terminal:")
	for _, s := range d.alive() {
		e.Printf("  redis-cli -s %s GET report:sales", s.Socket)
	}
	e.Printf("  redis-cli -s %s GET report:q4          # a new report: computed once, refreshed while it is used", d.alive()[0].Socket)
	e.Printf("  psql %q -c 'TABLE report_runs'", e.DSN)
	e.Printf("  psql %q -c 'SELECT key, expires_at, last_accessed_at, is_refreshing, refresh_started_at FROM cache_entries'", e.DSN)
	e.Printf("Ctrl-C stops the sidecars and Postgres.")
}
