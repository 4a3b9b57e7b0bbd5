package main

// pgmirror watch / unwatch: make an application table a source of the cache
// (migrations/0003_watch.sql does the work, in SQL, so a DBA can call the
// same functions from their own migrations).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"pgmirror/sidecar"
	"strings"

	"github.com/lib/pq"

	"pgmirror/pgstore"
)

// WatchSpec is what `pgmirror watch` or `pgmirror unwatch` was asked to do.
type WatchSpec = pgstore.WatchSpec

// Watch modes.
const (
	WatchCopy       = "copy"
	WatchInvalidate = "invalidate"
)

// parseWatch reads the flags of watch or unwatch: the connection and log
// settings as migrate has them (with their environment variables), plus the
// watch's own flags, which have no environment variables.
func (m *Main) parseWatch(cmd string, args []string) error {
	wf := &watchFlags{cmd: cmd, spec: WatchSpec{Mode: WatchCopy}, given: map[string]bool{}}
	cfg, unknown, err := sidecar.ParseConfig(cmd, args, m.Env, wf.register)
	if err != nil {
		if wf.failed != nil && !errors.Is(err, flag.ErrHelp) {
			return wf.failed
		}
		return err
	}
	var missing []string
	for _, name := range []string{"table", "key", "prefix"} {
		if !wf.given[name] && (name == "table" || cmd == "watch") {
			missing = append(missing, "--"+name)
		}
	}
	if len(missing) > 0 {
		return &sidecar.UsageError{Msg: fmt.Sprintf("pgmirror %s needs %s", cmd, strings.Join(missing, ", "))}
	}
	m.Config, m.Watch = cfg, wf.spec
	m.Logger = m.newLogger()
	for _, name := range unknown {
		m.Logger.Warn("ignoring environment variable that names no setting", "name", name)
	}
	return nil
}

// watchFlags are the own flags of watch or unwatch being parsed.
type watchFlags struct {
	cmd    string
	spec   WatchSpec
	given  map[string]bool
	failed *sidecar.ValueError // the first bad value, for its message
}

// value is a flag that records that it was given and the first bad value.
func (wf *watchFlags) value(name string, set func(string) error) flag.Value {
	return watchFlag{set: func(s string) error {
		wf.given[name] = true
		if err := set(s); err != nil {
			if wf.failed == nil {
				wf.failed = &sidecar.ValueError{Source: "flag --" + name, Value: s, Err: err}
			}
			return err
		}
		return nil
	}}
}

// nonEmpty sets *p to a value that is not blank.
func nonEmpty(p *string, what string) func(string) error {
	return func(s string) error {
		if strings.TrimSpace(s) == "" {
			return fmt.Errorf("want %s", what)
		}
		*p = s
		return nil
	}
}

// register adds the flags of wf.cmd to fs.
func (wf *watchFlags) register(fs *flag.FlagSet) {
	spec := &wf.spec
	fs.Var(wf.value("table", nonEmpty(&spec.Table, "a table name, like users or app.users")), "table", "")
	if wf.cmd != "watch" {
		return
	}
	fs.Var(wf.value("key", nonEmpty(&spec.Key, "a column name")), "key", "")
	fs.Var(wf.value("prefix", func(s string) error {
		if s == "" {
			return errors.New("want a non-empty prefix: the watch owns every key under it")
		}
		if err := sidecar.CheckKeyPrefix(s); err != nil {
			return err
		}
		spec.Prefix = s
		return nil
	}), "prefix", "")
	fs.Var(wf.value("columns", func(s string) error {
		var cols []string
		for _, c := range strings.Split(s, ",") {
			c = strings.TrimSpace(c)
			if c == "" {
				return errors.New("want a comma-separated list of column names, like name,plan")
			}
			cols = append(cols, c)
		}
		spec.Columns = cols
		return nil
	}), "columns", "")
	fs.Var(wf.value("mode", func(s string) error {
		switch mode := strings.ToLower(strings.TrimSpace(s)); mode {
		case WatchCopy, WatchInvalidate:
			spec.Mode = mode
			return nil
		}
		return errors.New("want copy or invalidate")
	}), "mode", "")
}

// watchFlag is a string flag with its own validation.
type watchFlag struct{ set func(string) error }

func (f watchFlag) String() string     { return "" }
func (f watchFlag) Set(s string) error { return f.set(s) }

// runWatch is `pgmirror watch` and `pgmirror unwatch`: one bounded attempt
// to reach Postgres, then pgmirror_watch or pgmirror_unwatch in a
// transaction; it prints what the function reports.
func (m *Main) runWatch(ctx context.Context) error {
	cmd := m.Command
	if err := m.reach(ctx); err != nil {
		return err
	}
	out, err := m.applyWatch(ctx)
	if err != nil {
		return fmt.Errorf("%s %s: %s", cmd, m.Watch.Table, m.redact(describeWatchError(err)))
	}
	m.Logger.Debug(cmd+" done", "table", m.Watch.Table)
	fmt.Fprintln(m.Stdout, out)
	return nil
}

// applyWatch calls the SQL function (pgstore.Watch or pgstore.Unwatch).
func (m *Main) applyWatch(ctx context.Context) (string, error) {
	if m.Command == "unwatch" {
		return pgstore.Unwatch(ctx, m.DB, m.Watch.Table)
	}
	return pgstore.Watch(ctx, m.DB, m.Watch)
}

// describeWatchError words a Postgres error for the command line: its
// message without the function's name, its detail and hint.
func describeWatchError(err error) string {
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) {
		return err.Error()
	}
	msg := pqErr.Message
	for _, fn := range []string{"pgmirror_watch: ", "pgmirror_unwatch: "} {
		msg = strings.TrimPrefix(msg, fn)
	}
	switch pqErr.Code {
	case "55P03": // lock_not_available
		msg = fmt.Sprintf("%s: the table stayed busy for %v; a watch needs a short lock on it that holds its writers back, "+
			"so it gives up rather than queue them: try again when the table is quieter", msg, pgstore.WatchLockTimeout)
	case "42P01": // undefined_table
		msg += " (name the table as SQL does: users, app.users, \"Users\")"
	}
	if pqErr.Detail != "" {
		msg += "; " + pqErr.Detail
	}
	if pqErr.Hint != "" {
		msg += " (" + strings.TrimSuffix(pqErr.Hint, ".") + ")"
	}
	return msg
}

// watchUsage is the head of the help of watch and unwatch; usage() adds the connection flags.
func watchUsage(topic string) string {
	if topic == "unwatch" {
		return `Usage: pgmirror unwatch --table T [flags]

Remove the watch of table T (pgmirror_unwatch(T) in SQL): its triggers are dropped, so its
writes no longer touch cache_entries. In copy mode the entries under its prefix are deleted
too (nothing would keep them current); in invalidate mode they stay until they expire.
A table that is not watched is left as it is (exit 0).

  --table name        the table, as SQL names it: users, app.users, "Users"
`
	}
	return `Usage: pgmirror watch --table T --key COLUMN --prefix P [--columns a,b,...] [--mode copy|invalidate] [flags]

Make table T a source of the cache: triggers on T keep the entries P || COLUMN::text in step
with its rows, in the application's own transactions (pgmirror_watch() in SQL; see
docs/operations.md for what it costs the application's writes).

  copy        each entry holds its row as JSON: row_to_json of --columns (default all
              columns) as UTF-8. Inserts and updates write it, deletes and TRUNCATE remove
              it, and the table is copied now. COLUMN must be unique. Cleanup keeps these.
  invalidate  inserts, updates and deletes delete the entries, under the loaders' per-key
              lock, so the next GET recomputes them with the loader of P (cache_loaders).

Updates that change none of --columns and not COLUMN write nothing. Running watch again
replaces the watch (and re-copies in copy mode). The role needs to own T (or hold TRIGGER
on it) and to write cache_entries: run it as migrate's role or a superuser, after
'pgmirror migrate'. The triggers run as whoever writes T; the roles that may write T now
(and members of pgmirror_writer) may update its entries: run watch again after granting
another role writes on T (docs/security.md).

  --table name        the table, as SQL names it: users, app.users, "Users"
  --key column        the key column, named as stored (case matters)
  --prefix text       the key prefix; it may not overlap another watch's
  --columns a,b,...   the columns of the value (copy) or whose change invalidates (invalidate)
  --mode copy|invalidate   (default copy)
`
}
