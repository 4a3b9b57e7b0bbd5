package main

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"pgmirror/examples/internal/demo"
)

// lifecycle is the running demo.
type lifecycle struct {
	env      *demo.Env
	start    time.Time
	sidecars []*demo.Sidecar
	obs      *observer

	mu     sync.Mutex
	killed map[string]bool
	failed bool // an expectation did not hold (printed as UNEXPECTED)
}

// say prints one event with the time since the start.
func (d *lifecycle) say(format string, args ...any) {
	d.env.Printf("[%5.1fs] %s", time.Since(d.start).Seconds(), fmt.Sprintf(format, args...))
}

// expect prints what did not hold, and marks the demo failed.
func (d *lifecycle) expect(ok bool, format string, args ...any) {
	if !ok {
		d.mu.Lock()
		d.failed = true
		d.mu.Unlock()
		d.say("UNEXPECTED: "+format, args...)
	}
}

// alive returns the sidecars not killed.
func (d *lifecycle) alive() []*demo.Sidecar {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*demo.Sidecar
	for _, s := range d.sidecars {
		if !d.killed[s.Name] {
			out = append(out, s)
		}
	}
	return out
}

// entry is what the observer last saw of one cache_entries row.
type entry struct {
	refreshing bool
	lockedAt   time.Time // refresh_started_at
}

// reportRun is one row of report_runs.
type reportRun struct {
	n       int64
	report  string
	kind    string
	by      string
	started time.Time
	took    time.Duration
}

// observer polls Postgres and prints what changed: report keys stored and
// deleted, refresh locks taken, reclaimed and released, computations
// running (pg_stat_activity) and finished (report_runs).
type observer struct {
	d  *lifecycle
	db *sql.DB

	mu        sync.Mutex
	entries   map[string]entry
	computing map[int]string // backend pid -> sidecar running expensive_report
	runs      []reportRun
	changed   chan struct{} // closed and replaced at every poll
}

func newObserver(d *lifecycle) *observer {
	o := &observer{d: d, db: d.env.DB, entries: map[string]entry{}, computing: map[int]string{}, changed: make(chan struct{})}
	d.obs = o
	return o
}

func (o *observer) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := o.poll(ctx); err != nil && ctx.Err() == nil {
			o.d.say("observer: %v", err)
		}
		o.mu.Lock()
		close(o.changed)
		o.changed = make(chan struct{})
		o.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(40 * time.Millisecond):
		}
	}
}

func (o *observer) poll(ctx context.Context) error {
	if err := o.pollEntries(ctx); err != nil {
		return err
	}
	if err := o.pollActivity(ctx); err != nil {
		return err
	}
	return o.pollRuns(ctx)
}

func (o *observer) pollEntries(ctx context.Context) error {
	rows, err := o.db.QueryContext(ctx, `SELECT key, is_refreshing, coalesce(refresh_started_at, 'epoch')
		FROM cache_entries WHERE key LIKE 'report:%'`)
	if err != nil {
		return err
	}
	defer rows.Close()
	seen := map[string]entry{}
	for rows.Next() {
		var k string
		var e entry
		if err := rows.Scan(&k, &e.refreshing, &e.lockedAt); err != nil {
			return err
		}
		seen[k] = e
	}
	if err := rows.Err(); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, e := range seen {
		before, had := o.entries[k]
		switch {
		case !had:
			o.d.say("%s is in cache_entries", k)
		case e.refreshing && !before.refreshing:
			o.d.say("refresh lock of %s taken (is_refreshing = true, refresh_started_at = %s)", k, clock(e.lockedAt))
		case e.refreshing && !e.lockedAt.Equal(before.lockedAt):
			o.d.say("refresh lock of %s reclaimed: it was taken at %s, %.1fs before; now refresh_started_at = %s",
				k, clock(before.lockedAt), e.lockedAt.Sub(before.lockedAt).Seconds(), clock(e.lockedAt))
		case !e.refreshing && before.refreshing:
			o.d.say("refresh lock of %s released with the new value", k)
		}
	}
	for k := range o.entries {
		if _, ok := seen[k]; !ok {
			o.d.say("%s is gone from cache_entries", k)
		}
	}
	o.entries = seen
	return nil
}

func (o *observer) pollActivity(ctx context.Context) error {
	rows, err := o.db.QueryContext(ctx, `SELECT pid, application_name FROM pg_stat_activity
		WHERE state = 'active' AND query LIKE '%expensive_report(%' AND pid <> pg_backend_pid()`)
	if err != nil {
		return err
	}
	defer rows.Close()
	now := map[int]string{}
	for rows.Next() {
		var pid int
		var app string
		if err := rows.Scan(&pid, &app); err != nil {
			return err
		}
		now[pid] = app
	}
	if err := rows.Err(); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for pid, app := range now {
		if _, ok := o.computing[pid]; !ok {
			o.d.say("%s is computing the expensive report (backend %d)", app, pid)
		}
	}
	o.computing = now
	return nil
}

func (o *observer) pollRuns(ctx context.Context) error {
	o.mu.Lock()
	last := int64(0)
	if len(o.runs) > 0 {
		last = o.runs[len(o.runs)-1].n
	}
	o.mu.Unlock()
	rows, err := o.db.QueryContext(ctx, `SELECT run, report, kind, computed_by, started_at, extract(epoch FROM took)
		FROM report_runs WHERE run > $1 ORDER BY run`, last)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var r reportRun
		var took float64
		if err := rows.Scan(&r.n, &r.report, &r.kind, &r.by, &r.started, &took); err != nil {
			return err
		}
		r.took = time.Duration(took * float64(time.Second))
		o.d.say("run #%d of report:%s committed: %s by %s, took %.2fs", r.n, r.report, r.kind, r.by, took)
		o.mu.Lock()
		o.runs = append(o.runs, r)
		o.mu.Unlock()
	}
	return rows.Err()
}

// waitFor polls cond after every poll of the observer until it holds, ctx
// ends or timeout passes.
func (o *observer) waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.After(timeout)
	for {
		o.mu.Lock()
		ok, ch := cond(), o.changed
		o.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// runCount returns how many runs of the report committed so far.
func (o *observer) runCount() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return int64(len(o.runs))
}

func clock(t time.Time) string { return t.Local().Format("15:04:05.000") }
