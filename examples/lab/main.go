// Command lab runs the scenarios of the cache-aside lab ("Cache-Aside with
// Postgres + Redis": a hit skips the database, a write invalidates, a
// stampede of cold reads costs one query) on pgmirror, and prints the
// Postgres queries each step cost, counted exactly with pg_stat_statements.
//
// The lab's application code (read the cache, on a miss SELECT the row and
// populate the cache; after an UPDATE delete the cached copy; a per-key lock
// with a double-check against stampedes) is replaced by two lines of SQL: a
// loader (cache_loaders) that computes user:<id> from the users table, once
// across all sidecars however many clients miss at once, and a watch of
// users in invalidate mode, whose trigger deletes user:<id> in the
// transaction that changes the row. The app only GETs.
//
// It starts everything itself (a throwaway Postgres, two sidecars in this
// process) and removes it all when it ends or on Ctrl-C. Exit status 0: every
// step cost what the lab expects; 1: one did not, or something failed.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"pgmirror/examples/internal/demo"
	"pgmirror/pgstore"
)

// schema is the lab's users table with its five seeded rows, the loader of
// user:<id>, and nothing else: the watch is installed by the program.
const schema = `
CREATE TABLE users (
    id         int PRIMARY KEY,
    name       text NOT NULL,
    email      text NOT NULL,
    plan       text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO users (id, name, email, plan) VALUES
    (1, 'Ada Lovelace', 'ada@example.com', 'free'),
    (2, 'Alan Turing', 'alan@example.com', 'free'),
    (3, 'Grace Hopper', 'grace@example.com', 'pro'),
    (4, 'Katherine Johnson', 'katherine@example.com', 'free'),
    (5, 'Edsger Dijkstra', 'edsger@example.com', 'team');
INSERT INTO cache_loaders (prefix, query, ttl) VALUES ('user:',
    'SELECT json_build_object(''id'', id, ''name'', name, ''email'', email, ''plan'', plan)::text FROM users WHERE id::text = $1',
    '60 seconds');
`

func main() {
	ctx, stop := demo.Context()
	defer stop()
	ok, err := run(ctx, os.Stdout)
	if err != nil && ctx.Err() != nil {
		os.Exit(130) // interrupted: run stopped everything
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// run starts the lab's Postgres and sidecars, runs every step, and stops
// everything. ok is false if a step cost another number of queries than
// the lab expects.
func run(ctx context.Context, out io.Writer) (ok bool, err error) {
	env, err := demo.Start(ctx, out)
	if err != nil {
		return false, err
	}
	defer func() {
		if cerr := env.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if err := env.Exec(ctx, schema); err != nil {
		return false, err
	}
	if err := env.Watch(ctx, pgstore.WatchSpec{Table: "users", Key: "id", Prefix: "user:", Mode: "invalidate"}); err != nil {
		return false, err
	}
	l := &lab{env: env}
	for _, name := range []string{"app-1", "app-2"} {
		s, err := env.StartSidecar(ctx, name)
		if err != nil {
			return false, err
		}
		l.apps = append(l.apps, s)
	}
	env.Printf("lab: users seeded (5 rows); loader user: -> SELECT ... FROM users WHERE id = $1 (ttl 60s); users watched in invalidate mode")
	env.Printf("lab: sidecars app-1 (%s) and app-2 (%s) ready", l.apps[0].Socket, l.apps[1].Socket)
	env.Printf("lab: each step prints the statements Postgres ran on table users (pg_stat_statements), as the lab's db.query_count")
	return l.runSteps(ctx)
}
