package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/examples/internal/demo"
)

// lab is the running lab: its Postgres and its two sidecars.
type lab struct {
	env  *demo.Env
	apps []*demo.Sidecar
	ok   bool
}

// countQuery counts the statements run on table users since the last
// reset: the loader's SELECTs and the lab's UPDATEs. pg_stat_statements
// records a statement when it ends, before its transaction commits, so the
// count is exact as soon as a GET that ran the loader has answered.
const countQuery = `SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
	WHERE query ~* '\musers\M' AND query !~* 'pg_stat_statements'`

func (l *lab) queries(ctx context.Context) (int64, error) {
	var n int64
	err := l.env.DB.QueryRowContext(ctx, countQuery).Scan(&n)
	return n, err
}

// step runs fn and prints what it did and the queries on users it cost,
// against want.
func (l *lab) step(ctx context.Context, title string, want int64, fn func() (string, error)) error {
	if _, err := l.env.DB.ExecContext(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		return fmt.Errorf("reset pg_stat_statements: %w", err)
	}
	l.env.Printf("\n%s", title)
	what, err := fn()
	if err != nil {
		return fmt.Errorf("%s: %w", title, err)
	}
	got, err := l.queries(ctx)
	if err != nil {
		return fmt.Errorf("count queries: %w", err)
	}
	verdict := "ok"
	if got != want {
		verdict, l.ok = fmt.Sprintf("UNEXPECTED: the lab expects %d", want), false
	}
	l.env.Printf("   %s", what)
	l.env.Printf("   queries on users: %d  %s", got, verdict)
	return nil
}

// runSteps runs the lab's scenarios in order; ok is false if one cost
// another number of queries than expected.
func (l *lab) runSteps(ctx context.Context) (ok bool, err error) {
	l.ok = true
	a1, a2 := l.apps[0].Client, l.apps[1].Client
	steps := []struct {
		title string
		want  int64
		fn    func() (string, error)
	}{
		{"1. get_user_profile(1), cold: GET user:1 misses, the loader reads the row once", 1,
			func() (string, error) { return get(ctx, a1, "user:1") }},
		{"2. get_user_profile(1) again, 100 times: hits, served from the sidecar's memory", 0,
			func() (string, error) { return getN(ctx, a1, "user:1", 100) }},
		{"3. the same key on the other sidecar: the loaded value reached it by notification", 0,
			func() (string, error) { return get(ctx, a2, "user:1") }},
		{"4. update_user_plan(1, 'pro'): UPDATE users; the watch's trigger deletes user:1 in that transaction; then GET user:1", 2,
			func() (string, error) { return l.updateThenRead(ctx, a1, 1, "pro") }},
		{"5. get_user_profile(999): no such user, GET answers nil (the loader finds no row)", 1,
			func() (string, error) { return get(ctx, a1, "user:999") }},
		{"6. get_user_profile(999) again: the sidecar remembers for a while that the loader found no row", 0,
			func() (string, error) { return get(ctx, a1, "user:999") }},
		{"7. stampede: 50 concurrent cold GETs of user:2, 25 on each sidecar", 1,
			func() (string, error) { return stampede(ctx, l.apps, "user:2", 50) }},
		{"8. hot key invalidated: UPDATE users SET plan = 'team' WHERE id = 2, then 50 concurrent GETs", 2,
			func() (string, error) { return l.invalidateThenStampede(ctx, 2, "team") }},
	}
	for _, s := range steps {
		if err := l.step(ctx, s.title, s.want, s.fn); err != nil {
			return false, err
		}
	}
	if l.ok {
		l.env.Printf("\nlab: every step cost what the lab expects: hits 0 queries, a write invalidates, 50 cold reads 1 load")
	} else {
		l.env.Printf("\nlab: some step did not cost what the lab expects (UNEXPECTED above)")
	}
	return l.ok, nil
}

func get(ctx context.Context, c *redis.Client, key string) (string, error) {
	v, err := c.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return "GET " + key + " -> (nil)", nil
	}
	return "GET " + key + " -> " + v, err
}

func getN(ctx context.Context, c *redis.Client, key string, n int) (string, error) {
	var v string
	for range n {
		var err error
		if v, err = c.Get(ctx, key).Result(); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%d x GET %s -> %s", n, key, v), nil
}

// updateThenRead is update_user_plan followed by get_user_profile: the
// UPDATE commits in Postgres, and the sidecar serves the new row as soon as
// the invalidation reached it (milliseconds; the GETs until then are hits).
func (l *lab) updateThenRead(ctx context.Context, c *redis.Client, id int, plan string) (string, error) {
	key := fmt.Sprint("user:", id)
	if _, err := l.env.DB.ExecContext(ctx, `UPDATE users SET plan = $1, updated_at = now() WHERE id = $2`, plan, id); err != nil {
		return "", err
	}
	committed := time.Now()
	for {
		v, err := c.Get(ctx, key).Result()
		if err != nil {
			return "", err
		}
		if strings.Contains(v, `"plan" : "`+plan+`"`) {
			return fmt.Sprintf("GET %s -> %s (the new row, %v after the commit)", key, v, time.Since(committed).Round(time.Microsecond)), nil
		}
		if time.Since(committed) > 10*time.Second {
			return "", fmt.Errorf("%s still %s 10s after the UPDATE", key, v)
		}
	}
}

// stampede GETs key n times at once, spread over the sidecars, and checks
// that every reader got the same value.
func stampede(ctx context.Context, apps []*demo.Sidecar, key string, n int) (string, error) {
	var wg sync.WaitGroup
	vals := make([]string, n)
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			vals[i], errs[i] = apps[i%len(apps)].Client.Get(ctx, key).Result()
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	for _, v := range vals {
		if v != vals[0] {
			return "", fmt.Errorf("readers got different values: %q and %q", vals[0], v)
		}
	}
	return fmt.Sprintf("%d readers, all got %s", n, vals[0]), nil
}

// invalidateThenStampede updates the row of user:<id>, waits until neither
// sidecar holds the key any more (the invalidation reached both), then
// sends the stampede.
func (l *lab) invalidateThenStampede(ctx context.Context, id int, plan string) (string, error) {
	key := fmt.Sprint("user:", id)
	if _, err := l.env.DB.ExecContext(ctx, `UPDATE users SET plan = $1, updated_at = now() WHERE id = $2`, plan, id); err != nil {
		return "", err
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range l.apps {
		for {
			l, err := a.In.Mirror.Exists(key)
			if err != nil {
				return "", err
			}
			if !l.Found {
				break
			}
			if time.Now().After(deadline) {
				return "", fmt.Errorf("%s still holds %s 10s after the UPDATE", a.Name, key)
			}
			time.Sleep(time.Millisecond)
		}
	}
	out, err := stampede(ctx, l.apps, key, 50)
	if err == nil && !strings.Contains(out, plan) {
		err = fmt.Errorf("the stampede read a stale value: %s", out)
	}
	return "both sidecars dropped " + key + "; " + out, err
}
