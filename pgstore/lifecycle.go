package pgstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/lib/pq"

	"pgmirror/mirror"
)

// The SQL of the background jobs (package jobs): access times, the refresh
// lock with fencing, and cleanup. Every lock is transaction-level, so all
// of it works through a transaction pooler.

// CleanupLockID is the advisory lock that lets one sidecar clean at a time.
const CleanupLockID int64 = 0x7067_6d69_7272_0001

// FlushAccess sets last_accessed_at to now for keys, in one statement,
// skipping rows whose stored time is newer than skipNewer ago (so a fleet
// does not rewrite hot rows every few seconds). It touches neither value
// nor expiry, so it takes no version and notifies nothing. It returns the
// rows updated.
func (s *Store) FlushAccess(ctx context.Context, keys []string, skipNewer time.Duration) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	res, err := s.DB.ExecContext(ctx, `UPDATE cache_entries SET last_accessed_at = now()
		FROM unnest($1::text[]) AS hit(key)
		WHERE cache_entries.key = hit.key AND cache_entries.last_accessed_at < now() - $2::bigint * interval '1 microsecond'`,
		pq.Array(keys), skipNewer.Microseconds())
	if err != nil {
		return 0, fmt.Errorf("flush access times of %d keys: %w", len(keys), err)
	}
	return res.RowsAffected()
}

// RefreshPolicy selects the keys the refresh worker recomputes.
type RefreshPolicy struct {
	Ahead     time.Duration // recompute keys expiring within this
	Window    time.Duration // only keys accessed within this
	LockStale time.Duration // a refresh lock older than this is reclaimed
}

// DueKeys returns up to limit keys that have a loader, are expired or
// expire within Ahead, were accessed within Window, and are not being
// refreshed (or their lock is stale), soonest expiry first.
func (s *Store) DueKeys(ctx context.Context, p RefreshPolicy, limit int) ([]string, error) {
	rows, err := s.DB.QueryContext(ctx, `SELECT e.key FROM cache_entries e
		WHERE e.expires_at <= clock_timestamp() + $1::bigint * interval '1 microsecond'
		  AND e.last_accessed_at >= now() - $2::bigint * interval '1 microsecond'
		  AND (NOT e.is_refreshing OR e.refresh_started_at < clock_timestamp() - $3::bigint * interval '1 microsecond')
		  AND EXISTS (SELECT 1 FROM cache_loaders l WHERE starts_with(e.key, l.prefix))
		ORDER BY e.expires_at LIMIT $4`,
		p.Ahead.Microseconds(), p.Window.Microseconds(), p.LockStale.Microseconds(), limit)
	if err != nil {
		return nil, fmt.Errorf("find keys to refresh: %w", err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// Claim takes the refresh lock of key with one atomic conditional UPDATE:
// it succeeds if the key is still due (another sidecar may have refreshed
// it since DueKeys) and nobody holds the lock or the holder's lock is older
// than LockStale. The returned token (the lock's start time, microseconds)
// fences the final write. ok is false otherwise.
func (s *Store) Claim(ctx context.Context, key string, p RefreshPolicy) (token int64, ok bool, err error) {
	err = s.DB.QueryRowContext(ctx, `UPDATE cache_entries
		SET is_refreshing = true, refresh_started_at = clock_timestamp()
		WHERE key = $1 AND expires_at <= clock_timestamp() + $3::bigint * interval '1 microsecond'
		  AND (NOT is_refreshing OR refresh_started_at IS NULL
		       OR refresh_started_at < clock_timestamp() - $2::bigint * interval '1 microsecond')
		RETURNING (extract(epoch FROM refresh_started_at) * 1000000)::bigint`,
		key, p.LockStale.Microseconds(), p.Ahead.Microseconds()).Scan(&token)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("claim %q for refresh: %w", key, err)
	}
	return token, true, nil
}

// Release gives a claim back without a new value (the loader failed), so
// the key is refreshable at once; a claim that is no longer ours is left.
func (s *Store) Release(ctx context.Context, key string, token int64) error {
	_, err := s.DB.ExecContext(ctx, `UPDATE cache_entries SET is_refreshing = false, refresh_started_at = NULL
		WHERE key = $1 AND is_refreshing AND (extract(epoch FROM refresh_started_at) * 1000000)::bigint = $2`, key, token)
	if err != nil {
		return fmt.Errorf("release the refresh lock of %q: %w", key, err)
	}
	return nil
}

// RefreshOutcome is what one refresh did.
type RefreshOutcome int

// The outcomes.
const (
	Refreshed RefreshOutcome = iota // new value and expiry stored
	Removed                         // the loader found no row: the entry is deleted
	Fenced                          // the claim was lost (reclaimed as stale, or the key changed): nothing stored
)

// Refresh recomputes key with its loader under the key's advisory lock and
// stores value and expiry, releasing the claim, in one statement that
// succeeds only if the claim (token) still holds: a refresher whose lock was
// reclaimed cannot overwrite newer data. On a loader error the claim is
// released at once and the error returned. The change is applied to the
// mirror (to).
func (l *Loaders) Refresh(ctx context.Context, to mirror.WriteApplier, key string, token int64) (RefreshOutcome, error) {
	ld, ok := l.Find(key)
	if !ok {
		return Fenced, fmt.Errorf("refresh %q: no loader covers it any more", key)
	}
	if err := l.Gate.Acquire(ctx, l.timeout()); err != nil {
		if rerr := (&Store{DB: l.DB}).Release(ctx, key, token); rerr != nil {
			l.Log.Warn("releasing a refresh that found no connection", "key", key, "error", rerr)
		}
		return Fenced, fmt.Errorf("refresh %q: %w", key, err)
	}
	defer l.Gate.Release()
	ctx, cancel := context.WithTimeout(ctx, l.backstop())
	defer cancel()
	ticket := to.BeginWrite()
	out, xid, change, err := l.refresh(ctx, ld, key, token)
	if err != nil || change == nil {
		to.AbandonWrite(ticket)
		return out, err
	}
	to.ApplyWrite(ticket, xid, []mirror.Change{*change})
	return out, nil
}

func (l *Loaders) refresh(ctx context.Context, ld Loader, key string, token int64) (out RefreshOutcome, xid uint64, change *mirror.Change, err error) {
	tx, err := l.beginBounded(ctx)
	if err != nil {
		return Fenced, 0, nil, fmt.Errorf("refresh %q: %w", key, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(pgmirror_key_lock($1))`, key); err != nil {
		return Fenced, 0, nil, fmt.Errorf("refresh %q: lock the key: %w", key, err)
	}
	l.runs.Add(1)
	value, found, err := compute(ctx, tx, ld, key, l.timeout())
	if err != nil {
		l.fails.Add(1)
		_ = tx.Rollback()
		if rerr := (&Store{DB: l.DB}).Release(ctx, key, token); rerr != nil {
			l.Log.Warn("releasing a failed refresh", "key", key, "error", rerr)
		}
		return Fenced, 0, nil, err
	}
	if h := l.Hooks.AfterCompute; h != nil {
		h(key)
	}
	const claimHolds = `key = $1 AND is_refreshing AND (extract(epoch FROM refresh_started_at) * 1000000)::bigint = $2`
	c := mirror.Change{Op: mirror.OpSet, Key: key, Value: value}
	var exp sql.NullInt64
	if found {
		err = tx.QueryRowContext(ctx, `UPDATE cache_entries SET value = $3,
			expires_at = CASE WHEN $4::bigint > 0 THEN clock_timestamp() + $4::bigint * interval '1 microsecond' END,
			is_refreshing = false, refresh_started_at = NULL
			WHERE `+claimHolds+` RETURNING version, `+expiryExpr+`, pg_current_xact_id()::text::bigint`,
			key, token, value, ld.TTL.Microseconds()).Scan(&c.Version, &exp, &xid)
		out = Refreshed
	} else {
		c = mirror.Change{Op: mirror.OpDelete, Key: key}
		err = tx.QueryRowContext(ctx, `DELETE FROM cache_entries WHERE `+claimHolds+`
			RETURNING version, pg_current_xact_id()::text::bigint`, key, token).Scan(&c.Version, &xid)
		out = Removed
	}
	if errors.Is(err, sql.ErrNoRows) {
		err = tx.Commit() // nothing written: the claim is lost
		return Fenced, 0, nil, err
	}
	if err != nil {
		return Fenced, 0, nil, fmt.Errorf("refresh %q: store: %w", key, err)
	}
	c.Expires = expiry(exp)
	if err = tx.Commit(); err != nil {
		return Fenced, 0, nil, fmt.Errorf("refresh %q: commit: %w", key, err)
	}
	return out, xid, &c, nil
}

// CleanupPolicy says what cleanup deletes.
type CleanupPolicy struct {
	Retention    time.Duration // keys not accessed for this long
	ExpiredGrace time.Duration // keys expired for this long
	Batch        int           // rows per transaction
}

// CleanupBatch deletes up to p.Batch keys unused for the retention period
// or expired longer than the grace, in one short transaction that holds
// CleanupLockID: ran is false when another sidecar is cleaning right now.
// Keys under the prefix of a copy-mode watch (pgmirror_watches) are never
// deleted: they mirror a table, and no loader could bring them back.
func (s *Store) CleanupBatch(ctx context.Context, p CleanupPolicy) (deleted int64, ran bool, err error) {
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, fmt.Errorf("cleanup: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit, a no-op
	// pgmirror_watches comes with migration 0003; a sidecar may run before
	// the schema is migrated (a rolling upgrade), and then no key is kept.
	var watches bool
	if err := tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock($1), to_regclass('pgmirror_watches') IS NOT NULL`,
		CleanupLockID).Scan(&ran, &watches); err != nil {
		return 0, false, fmt.Errorf("cleanup: lock: %w", err)
	}
	if !ran {
		return 0, false, nil
	}
	keep := ""
	if watches {
		// A handful of rows, scanned per candidate: cheap next to the delete.
		keep = ` AND NOT EXISTS (SELECT 1 FROM pgmirror_watches w
		                         WHERE w.mode = 'copy' AND starts_with(cache_entries.key, w.prefix))`
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM cache_entries WHERE key IN (
		SELECT key FROM cache_entries
		WHERE (last_accessed_at < now() - $1::bigint * interval '1 microsecond'
		    OR expires_at < clock_timestamp() - $2::bigint * interval '1 microsecond')`+keep+`
		LIMIT $3 FOR UPDATE SKIP LOCKED)`,
		p.Retention.Microseconds(), p.ExpiredGrace.Microseconds(), p.Batch)
	if err != nil {
		return 0, true, fmt.Errorf("cleanup: delete: %w", err)
	}
	if deleted, err = res.RowsAffected(); err != nil {
		return 0, true, err
	}
	return deleted, true, tx.Commit()
}
