package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/examples/internal/demo"
)

const reportKey = "report:sales"

// report is the value of a report key, as expensive_report computes it.
type report struct {
	Run        int64  `json:"run"`
	ComputedBy string `json:"computed_by"`
}

// scenario plays the four parts; an expectation that does not hold is
// printed as UNEXPECTED and makes the scenario's error.
func (d *lifecycle) scenario(ctx context.Context) error {
	for _, part := range []func(context.Context) error{d.coldLoad, d.refreshAhead, d.killHolder, d.cleanup} {
		if err := part(ctx); err != nil {
			return err
		}
	}
	loads := 0
	d.obs.mu.Lock()
	for _, r := range d.obs.runs {
		if r.kind == "load" {
			loads++
		}
	}
	d.obs.mu.Unlock()
	d.expect(loads == 1, "%d loads: a GET found the key expired and computed it", loads)
	d.mu.Lock()
	failed := d.failed
	d.mu.Unlock()
	if failed {
		return errors.New("an expectation did not hold (UNEXPECTED above)")
	}
	d.say("every part went as the design says: one computation per miss and per refresh across three sidecars, the stale lock reclaimed, the unused key cleaned up")
	return nil
}

func (d *lifecycle) header(text string) { d.env.Printf("\n== %s", text) }

// coldLoad: three clients miss at once, one per sidecar.
func (d *lifecycle) coldLoad(ctx context.Context) error {
	d.header("1. three clients GET " + reportKey + " at once, one on each sidecar; the key is absent")
	var wg sync.WaitGroup
	got := make([]report, len(d.sidecars))
	errs := make([]error, len(d.sidecars))
	for i, s := range d.sidecars {
		wg.Go(func() { got[i], errs[i] = getReport(ctx, s.Client) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if !d.obs.waitFor(ctx, 10*time.Second, func() bool { return len(d.obs.runs) >= 1 }) {
		return errors.New("no run of the report logged within 10s")
	}
	same := got[0].Run == got[1].Run && got[1].Run == got[2].Run
	runs := d.obs.runCount()
	d.expect(same && runs == 1, "runs %d, values of runs %d %d %d", runs, got[0].Run, got[1].Run, got[2].Run)
	d.say("all three clients got run #%d, computed once across the three sidecars (by %s); the others waited on the key's advisory lock and found it stored",
		got[0].Run, got[0].ComputedBy)
	go d.reader(ctx)
	return nil
}

// refreshAhead: one sidecar recomputes the key before it expires.
func (d *lifecycle) refreshAhead(ctx context.Context) error {
	d.header("2. refresh ahead: " + reportKey + " expires 15 s after it was stored; 11 s before that, one sidecar claims and recomputes it")
	r, err := d.nextRun(ctx, 1)
	if err != nil {
		return err
	}
	d.expect(r.kind == "refresh", "run #%d is a %s, not a refresh", r.n, r.kind)
	// The next refresh is due 4 s after this one stored: 3 s without a
	// run shows that the other two sidecars did not compute it again.
	quiet := !d.obs.waitFor(ctx, 3*time.Second, func() bool { return len(d.obs.runs) > 2 })
	if ctx.Err() != nil {
		return ctx.Err()
	}
	d.expect(quiet, "another run within 3 s of the refresh")
	d.say("refreshed ahead exactly once across three sidecars (by %s); readers never waited", r.by)
	return nil
}

// killHolder: SIGKILL the sidecar computing the next refresh; another
// reclaims its stale lock.
func (d *lifecycle) killHolder(ctx context.Context) error {
	d.header("3. kill the sidecar that holds the refresh lock, in the middle of its computation")
	var holder string
	var pid int
	ok := d.obs.waitFor(ctx, 30*time.Second, func() bool {
		if !d.obs.entries[reportKey].refreshing {
			return false
		}
		for p, app := range d.obs.computing {
			holder, pid = app, p
			return true
		}
		return false
	})
	if !ok {
		return errors.New("no sidecar started the next refresh within 30s")
	}
	var victim *demo.Sidecar
	for _, s := range d.sidecars {
		if s.Name == holder {
			victim = s
		}
	}
	if victim == nil {
		return fmt.Errorf("the report is computed by %q, not by one of the sidecars", holder)
	}
	d.mu.Lock()
	d.killed = map[string]bool{holder: true}
	d.mu.Unlock()
	if err := victim.Kill(); err != nil {
		return err
	}
	d.say("killed %s (pid %d, SIGKILL) while it held the refresh lock; its backend %d runs on until the query ends, then rolls back: nothing stored, the lock row stays is_refreshing = true",
		holder, victim.Cmd.Process.Pid, pid)
	n := d.obs.runCount()
	r, err := d.nextRun(ctx, n)
	if err != nil {
		return err
	}
	d.expect(r.kind == "refresh" && r.by != holder, "run #%d is a %s by %s", r.n, r.kind, r.by)
	if r.n > n+1 {
		d.say("run #%d was the killed computation: its number was drawn, its row rolled back", n+1)
	}
	d.say("%s reclaimed the stale lock (older than --refresh-lock-stale 2s) and refreshed %s before it expired", r.by, reportKey)
	return nil
}

// cleanup: a key unused for 8 days is deleted by the cleanup job.
func (d *lifecycle) cleanup(ctx context.Context) error {
	d.header("4. cleanup: report:2019 was last used 8 days ago and expired 2 hours ago")
	if err := d.env.Exec(ctx, `INSERT INTO cache_entries (key, value, expires_at, last_accessed_at)
		VALUES ('report:2019', '{"report":"2019"}', now() - interval '2 hours', now() - interval '8 days')`); err != nil {
		return err
	}
	d.say("inserted report:2019; it is outside --refresh-window (7 days), so no sidecar refreshes it")
	deadline := time.Now().Add(15 * time.Second)
	for {
		var n int
		if err := d.env.DB.QueryRowContext(ctx, `SELECT count(*) FROM cache_entries WHERE key = 'report:2019'`).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("report:2019 not cleaned up within 15s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	d.say("the cleanup job deleted report:2019 (unused for longer than --retention 168h); %s, used, stays", reportKey)
	return nil
}

// nextRun waits for the run after the first n and returns it.
func (d *lifecycle) nextRun(ctx context.Context, n int64) (reportRun, error) {
	if !d.obs.waitFor(ctx, 30*time.Second, func() bool { return int64(len(d.obs.runs)) > n }) {
		if ctx.Err() != nil {
			return reportRun{}, ctx.Err()
		}
		return reportRun{}, fmt.Errorf("no run #%d of the report within 30s", n+1)
	}
	d.obs.mu.Lock()
	defer d.obs.mu.Unlock()
	return d.obs.runs[n], nil
}

func getReport(ctx context.Context, c *redis.Client) (report, error) {
	var r report
	b, err := c.Get(ctx, reportKey).Bytes()
	if err != nil {
		return r, fmt.Errorf("GET %s: %w", reportKey, err)
	}
	return r, json.Unmarshal(b, &r)
}

// reader GETs the report from every live sidecar four times a second, as
// an application would, and says when all of them serve a newer run, and
// when a GET was slow. (A GET that computed the report, because the key had
// expired, shows as a run of kind load.)
func (d *lifecycle) reader(ctx context.Context) {
	var shown int64
	for ctx.Err() == nil {
		var runs []int64
		for _, s := range d.alive() {
			t0 := time.Now()
			r, err := getReport(ctx, s.Client)
			took := time.Since(t0)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				if !d.isKilled(s.Name) {
					d.say("reader: %s: %v", s.Name, err)
				}
				continue
			}
			if took > time.Second {
				d.say("reader: GET %s on %s took %v", reportKey, s.Name, took.Round(time.Millisecond))
			}
			runs = append(runs, r.Run)
		}
		if len(runs) > 0 && runs[0] > shown && allEqual(runs) {
			shown = runs[0]
			d.say("every live sidecar (%d) serves run #%d", len(runs), shown)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (d *lifecycle) isKilled(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.killed[name]
}

func allEqual(xs []int64) bool {
	for _, x := range xs {
		if x != xs[0] {
			return false
		}
	}
	return true
}
