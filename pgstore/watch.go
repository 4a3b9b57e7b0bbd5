package pgstore

// Watches: an application table as a source of the cache. The work is done
// in SQL (migrations/0003_watch.sql and later), so that a DBA can call the
// same functions from their own migrations; these run them for
// `pgmirror watch` and `pgmirror unwatch`.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// WatchSpec is a watch to install: pgmirror_watch's arguments.
type WatchSpec struct {
	// Table names the table as SQL does: users, app.users, "Users".
	Table string
	// Key is the column whose text form follows the prefix in every key, as stored (case matters).
	Key string
	// Prefix starts every key of the watch.
	Prefix string
	// Columns are the columns of the JSON value (copy) or whose change invalidates (invalidate); nil: all.
	Columns []string
	// Mode is "copy" or "invalidate".
	Mode string
}

// WatchLockTimeout bounds how long Watch and Unwatch wait for the lock on
// the table (CREATE/DROP TRIGGER), so that a busy table does not queue its
// own writers behind the waiting DDL for long; past it Postgres fails the
// call with lock_not_available (55P03).
const WatchLockTimeout = 10 * time.Second

// Watch installs the watch spec, or replaces the table's watch, with
// pgmirror_watch in a transaction of its own, and returns what the function
// reports. A Postgres error is returned as it is (a *pq.Error), for the
// caller to word.
func Watch(ctx context.Context, db *sql.DB, spec WatchSpec) (string, error) {
	return inWatchTx(ctx, db, func(tx *sql.Tx) (out string, err error) {
		var columns any // NULL: every column
		if spec.Columns != nil {
			columns = pq.Array(spec.Columns)
		}
		err = tx.QueryRowContext(ctx, `SELECT pgmirror_watch($1::regclass, $2, $3, $4::name[], $5)`,
			spec.Table, spec.Key, spec.Prefix, columns, spec.Mode).Scan(&out)
		return out, err
	})
}

// Unwatch removes the watch of table with pgmirror_unwatch in a
// transaction of its own, and returns what the function reports; errors as
// Watch's.
func Unwatch(ctx context.Context, db *sql.DB, table string) (string, error) {
	return inWatchTx(ctx, db, func(tx *sql.Tx) (out string, err error) {
		err = tx.QueryRowContext(ctx, `SELECT pgmirror_unwatch($1::regclass)`, table).Scan(&out)
		return out, err
	})
}

// inWatchTx runs call in a transaction with WatchLockTimeout, after
// checking that the watch functions are installed, and commits.
func inWatchTx(ctx context.Context, db *sql.DB, call func(*sql.Tx) (string, error)) (out string, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	var installed bool
	if err = tx.QueryRowContext(ctx, `SELECT to_regprocedure('pgmirror_watch(regclass,name,text,name[],text)') IS NOT NULL
		AND to_regprocedure('pgmirror_unwatch(regclass)') IS NOT NULL`).Scan(&installed); err != nil {
		return "", err
	}
	if !installed {
		return "", errors.New("pgmirror_watch() is not in this database's search_path: run `pgmirror migrate` first " +
			"(the schema predates watches), or point --dsn at pgmirror's schema")
	}
	if _, err = tx.ExecContext(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = '%dms'`, WatchLockTimeout.Milliseconds())); err != nil {
		return "", err
	}
	if out, err = call(tx); err != nil {
		return "", err
	}
	if err = tx.Commit(); err != nil {
		return "", fmt.Errorf("commit: %w", err)
	}
	return out, nil
}
