// Package demo starts what a `make demo-*` program needs and stops all of it
// again: a throwaway Postgres (internal/pgtest, in a temporary directory,
// unix socket and a free TCP port) with pgmirror's migrations, SQL files,
// watches and loaders, and pgmirror sidecars, in this process or in child
// processes (a child can be killed, as a crashed pod is). The first signal
// (Ctrl-C) cancels Context's context; Close then stops the sidecars, the
// children and Postgres and removes the directories, so nothing is left
// behind.
package demo

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	_ "github.com/lib/pq" // driver "postgres"

	"pgmirror/internal/pgtest"
	"pgmirror/migrations"
	"pgmirror/pgstore"
)

// Env is one demo's Postgres and everything started on it.
type Env struct {
	PG  *pgtest.Server
	DSN string  // key=value, over the unix socket in PG's directory
	DB  *sql.DB // a pool for the demo's own SQL
	// Dir holds the sidecars' sockets and logs, in PG's directory; Close removes it.
	Dir string
	Out io.Writer // where Printf writes

	mu      sync.Mutex
	closers []func() error // run last first by Close
	closed  bool
	outMu   sync.Mutex
}

// Context is cancelled by the first SIGINT or SIGTERM; stop restores the
// default handling (a second Ctrl-C then kills the process).
func Context() (ctx context.Context, stop context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// Start starts a throwaway Postgres and applies pgmirror's migrations and
// the repository's triggers.sql. Whatever it returns, nothing is left
// running on error; on success the caller must Close the Env.
func Start(ctx context.Context, out io.Writer) (e *Env, err error) {
	triggers, err := os.ReadFile(RepoFile("triggers.sql"))
	if err != nil {
		return nil, fmt.Errorf("demo: %w (run it from the repository)", err)
	}
	e = &Env{Out: out}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Close())
			e = nil
		}
	}()
	e.onClose(func() error { pgtest.Release(); return nil }) // the initdb template Start keeps, after the cluster
	if e.PG, err = pgtest.Start(pgtest.Options{}); err != nil {
		return e, fmt.Errorf("demo: start Postgres: %w", err)
	}
	e.onClose(e.PG.Close)
	e.DSN = e.PG.DSN("postgres")
	// Inside Postgres's directory: should this process die without its
	// Close (SIGKILL), the next throwaway cluster's sweep removes it too.
	if e.Dir, err = os.MkdirTemp(e.PG.SocketDir(), "demo-"); err != nil {
		return e, fmt.Errorf("demo: %w", err)
	}
	e.onClose(func() error { return os.RemoveAll(e.Dir) })
	if e.DB, err = sql.Open("postgres", e.DSN); err != nil {
		return e, err
	}
	e.onClose(e.DB.Close)
	mctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := migrations.Apply(mctx, e.DB, string(triggers), hclog.NewNullLogger()); err != nil {
		return e, fmt.Errorf("demo: migrate: %w", err)
	}
	e.Printf("demo: Postgres ready in %s (data directory %s), migrated; sockets and logs in %s", e.PG.SocketDir(), e.PG.DataDir(), e.Dir)
	e.Printf("demo: psql %q", e.DSN)
	return e, nil
}

// onClose registers fn to run at Close, before what was registered earlier.
func (e *Env) onClose(fn func() error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closers = append(e.closers, fn)
}

// Close stops everything the Env started, last started first, and removes
// its directories. Safe to call twice.
func (e *Env) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	closers := e.closers
	e.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		errs = append(errs, closers[i]())
	}
	if e.PG != nil {
		e.Printf("demo: stopped; removed %s and %s", e.PG.SocketDir(), e.Dir)
	}
	return errors.Join(errs...)
}

// Printf writes one line to Out (a newline is added), safe from any goroutine.
func (e *Env) Printf(format string, args ...any) {
	e.outMu.Lock()
	defer e.outMu.Unlock()
	fmt.Fprintf(e.Out, strings.TrimSuffix(format, "\n")+"\n", args...)
}

// Exec runs SQL statements (one string may hold several) on the demo's database.
func (e *Env) Exec(ctx context.Context, query string, args ...any) error {
	if _, err := e.DB.ExecContext(ctx, query, args...); err != nil {
		return fmt.Errorf("demo: %s: %w", firstLine(query), err)
	}
	return nil
}

// ExecFile runs an SQL file of the repository (a path relative to its root).
func (e *Env) ExecFile(ctx context.Context, name string) error {
	b, err := os.ReadFile(RepoFile(name))
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if _, err := e.DB.ExecContext(ctx, string(b)); err != nil {
		return fmt.Errorf("demo: %s: %w", name, err)
	}
	return nil
}

// Watch is `pgmirror watch`: it makes table a source of the cache.
func (e *Env) Watch(ctx context.Context, spec pgstore.WatchSpec) error {
	if _, err := pgstore.Watch(ctx, e.DB, spec); err != nil {
		return fmt.Errorf("demo: watch %s: %w", spec.Table, err)
	}
	return nil
}

// AppDSN is DSN with application_name set, so that pg_stat_activity and
// current_setting('application_name') tell which sidecar ran a statement.
func (e *Env) AppDSN(name string) string { return e.DSN + " application_name=" + name }

// RepoFile is the path of name, relative to the repository's root: the
// first directory above the working directory holding pgmirror's go.mod.
func RepoFile(name string) string {
	dir, err := os.Getwd()
	if err != nil {
		return name
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.HasPrefix(string(b), "module pgmirror\n") {
			return filepath.Join(d, name)
		}
		if d == filepath.Dir(d) {
			return name
		}
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " ..."
	}
	return s
}
