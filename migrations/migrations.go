// Package migrations owns pgmirror's schema: the numbered SQL files embedded
// beside this file, the trigger script (triggers.sql, passed in by the caller
// because it lives at the repository root), and Apply, which brings a
// database up to date in one transaction under an advisory lock and checks
// and fixes the privileges of pgmirror's functions (privileges.go).
package migrations

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/lib/pq"
)

//go:embed *.sql
var files embed.FS

// LockID is the key of the transaction-level advisory lock that serialises
// concurrent migrate runs ("pgmirror" in ASCII).
const LockID int64 = 0x7067_6d69_7272_6f72

// TriggersName is the name under which triggers.sql is recorded.
const TriggersName = "triggers.sql"

// TriggerNames are the triggers triggers.sql installs on cache_entries.
var TriggerNames = []string{
	"pgmirror_10_stamp_insert",
	"pgmirror_10_stamp_update",
	"pgmirror_20_notify_insert",
	"pgmirror_20_notify_update",
	"pgmirror_20_notify_delete",
	"pgmirror_20_notify_truncate",
}

// Result says what Apply did.
type Result struct {
	// Schema is the schema the objects live in.
	Schema string
	// Applied lists the migration files applied by this run, in order.
	Applied []string
	// TriggersUpdated is true when triggers.sql was (re)installed by this run.
	TriggersUpdated bool
	// Secured lists the privilege fixes of this run (owners handed to
	// OwnerRole, search_path fixed, EXECUTE revoked from PUBLIC).
	Secured []string
}

// Changed reports whether the run changed the database.
func (r Result) Changed() bool { return len(r.Applied) > 0 || r.TriggersUpdated || len(r.Secured) > 0 }

// Options adjust ApplyWith; the zero value is what Apply does.
type Options struct {
	// Log receives a line per step; nil discards them.
	Log hclog.Logger
	// AllowSharedSchema lets migrate use a schema in which roles other than
	// pgmirror's may create objects (see SharedSchemaError), for a
	// deployment that trusts every such role.
	AllowSharedSchema bool
}

// Migration is one embedded, numbered SQL file.
type Migration struct {
	Name string // file name, e.g. 0001_cache_entries.sql
	SQL  string
}

// Checksum identifies the file's content, so an edited migration is noticed.
func (m Migration) Checksum() string {
	sum := sha256.Sum256([]byte(m.SQL))
	return hex.EncodeToString(sum[:])
}

// All returns the embedded migrations in the order they apply.
func All() ([]Migration, error) {
	names, err := fs.Glob(files, "*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]Migration, 0, len(names))
	for _, name := range names {
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Name: name, SQL: string(b)})
	}
	return out, nil
}

// Apply brings db up to date: pending migrations and, when its content
// changed, the trigger script, all in one transaction under a
// transaction-level advisory lock (so it works through a transaction pooler),
// so concurrent runs from many pods serialise and all succeed. Objects are
// created in the connection's current schema (the first of its search_path).
func Apply(ctx context.Context, db *sql.DB, triggers string, log hclog.Logger) (Result, error) {
	return ApplyWith(ctx, db, triggers, Options{Log: log})
}

// ApplyWith is Apply with options. Before anything it refuses (with a
// *SharedSchemaError) a schema that roles other than pgmirror's may CREATE
// in, unless opts.AllowSharedSchema; after the files it secures every
// SECURITY DEFINER function of pgmirror (search_path, PUBLIC, owner), so
// the rules hold whatever created them.
func ApplyWith(ctx context.Context, db *sql.DB, triggers string, opts Options) (res Result, err error) {
	log := opts.Log
	if log == nil {
		log = hclog.NewNullLogger()
	}
	all, err := All()
	if err != nil {
		return res, fmt.Errorf("read embedded migrations: %w", err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return res, fmt.Errorf("begin migration transaction: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, LockID); err != nil {
		return res, fmt.Errorf("take the migration lock: %w", err)
	}
	if res.Schema, err = prepare(ctx, tx); err != nil {
		return res, err
	}
	creators, err := schemaCreators(ctx, tx, res.Schema)
	if err != nil {
		return res, err
	}
	if len(creators) > 0 {
		if !opts.AllowSharedSchema {
			return res, &SharedSchemaError{Schema: res.Schema, Roles: creators}
		}
		log.Warn("other roles may create objects in pgmirror's schema; going on as allowed", "schema", res.Schema,
			"roles", strings.Join(creators, ","))
	}
	done, err := recorded(ctx, tx)
	if err != nil {
		return res, err
	}
	for _, m := range all {
		sum, ok := done[m.Name]
		if ok {
			if sum != m.Checksum() {
				return res, fmt.Errorf("migration %s was changed after it was applied (recorded checksum %.12s, file %.12s): "+
					"applied migrations must not be edited; put the change in a new numbered file", m.Name, sum, m.Checksum())
			}
			continue
		}
		log.Info("applying migration", "file", m.Name, "schema", res.Schema)
		if err = run(ctx, tx, m.Name, m.SQL, m.Checksum()); err != nil {
			return res, err
		}
		res.Applied = append(res.Applied, m.Name)
	}
	trig := Migration{Name: TriggersName, SQL: triggers}
	intact, err := triggersIntact(ctx, tx)
	if err != nil {
		return res, err
	}
	if done[TriggersName] != trig.Checksum() || !intact {
		log.Info("installing triggers", "file", TriggersName, "schema", res.Schema, "repair", !intact)
		if err = run(ctx, tx, TriggersName, triggers, trig.Checksum()); err != nil {
			return res, err
		}
		res.TriggersUpdated = true
	}
	if res.Secured, err = secure(ctx, tx, res.Schema, log); err != nil {
		return res, fmt.Errorf("secure pgmirror's functions: %w", describe(err))
	}
	if err = tx.Commit(); err != nil {
		return res, fmt.Errorf("commit migrations: %w", err)
	}
	return res, nil
}

// prepare checks the database, pins search_path for the transaction to the
// target schema (then pg_temp, as SECURITY DEFINER functions need) and creates
// the bookkeeping table.
func prepare(ctx context.Context, tx *sql.Tx) (string, error) {
	var schema sql.NullString
	var encoding string
	err := tx.QueryRowContext(ctx, `SELECT current_schema(), pg_encoding_to_char(encoding)
		FROM pg_database WHERE datname = current_database()`).Scan(&schema, &encoding)
	if err != nil {
		return "", fmt.Errorf("inspect database: %w", err)
	}
	if !schema.Valid {
		return "", fmt.Errorf("no schema to create objects in: search_path names no existing schema; " +
			"create one or set search_path (e.g. options='-c search_path=myschema' in the DSN)")
	}
	if encoding != "UTF8" {
		return "", fmt.Errorf("database encoding is %s: pgmirror needs a UTF8 database (keys are UTF-8 text)", encoding)
	}
	if _, err := tx.ExecContext(ctx, `SET LOCAL search_path TO `+pq.QuoteIdentifier(schema.String)+`, pg_temp`); err != nil {
		return "", fmt.Errorf("set search_path: %w", err)
	}
	_, err = tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS pgmirror_schema_migrations (
		name       text PRIMARY KEY,
		checksum   text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`)
	if err != nil {
		return "", fmt.Errorf("create pgmirror_schema_migrations: %w", err)
	}
	return schema.String, nil
}

// triggersIntact reports whether every pgmirror trigger exists on
// cache_entries and fires always; a dropped or disabled one is reinstalled
// even when triggers.sql did not change.
func triggersIntact(ctx context.Context, tx *sql.Tx) (bool, error) {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT count(*) FROM pg_trigger
		WHERE tgrelid = to_regclass('cache_entries') AND tgname = ANY($1) AND tgenabled = 'A'`,
		pq.Array(TriggerNames)).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("inspect the triggers: %w", err)
	}
	return n == len(TriggerNames), nil
}

// recorded returns the checksum of every applied file by name.
func recorded(ctx context.Context, tx *sql.Tx) (map[string]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT name, checksum FROM pgmirror_schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("read applied migrations: %w", err)
	}
	defer rows.Close()
	done := map[string]string{}
	for rows.Next() {
		var name, sum string
		if err := rows.Scan(&name, &sum); err != nil {
			return nil, err
		}
		done[name] = sum
	}
	return done, rows.Err()
}

// run executes one SQL file (several statements, simple protocol) and records it.
func run(ctx context.Context, tx *sql.Tx, name, body, sum string) error {
	if strings.TrimSpace(body) == "" {
		return fmt.Errorf("%s is empty", name)
	}
	if _, err := tx.ExecContext(ctx, body); err != nil {
		return fmt.Errorf("apply %s: %w", name, describe(err))
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO pgmirror_schema_migrations (name, checksum) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()`, name, sum)
	if err != nil {
		return fmt.Errorf("record %s: %w", name, err)
	}
	return nil
}

// describe adds to a Postgres error its detail and hint, which say what to
// do (the CREATE ROLE a superuser must run, say), and for a missing
// privilege who must run migrate.
func describe(err error) error {
	var pe *pq.Error
	if !errors.As(err, &pe) {
		return err
	}
	var extra []string
	if pe.Detail != "" {
		extra = append(extra, pe.Detail)
	}
	if pe.Hint != "" {
		extra = append(extra, pe.Hint)
	} else if pe.Code == "42501" { // insufficient_privilege
		extra = append(extra, "run pgmirror migrate as the role that owns pgmirror's objects (the owner of cache_entries), "+
			"or as a superuser, which hands them to "+OwnerRole)
	}
	if len(extra) == 0 {
		return err
	}
	return fmt.Errorf("%w (%s)", err, strings.Join(extra, "; "))
}
