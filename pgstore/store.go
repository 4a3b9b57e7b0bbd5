// Package pgstore is pgmirror's SQL data access: it reads cache_entries in a
// consistent snapshot and by key, sends sentinels on the notification
// channel, reads the database clock, and checks at start-up that it talks to
// a primary with pgmirror's schema. Store implements mirror.Source, and
// holds the SQL of the background jobs (access times, refresh claims,
// cleanup). Beside it: the Writer (sidecar writes through pgmirror_write),
// Loaders, the connection pool's limits, Connect (waiting for Postgres with
// backoff), and Watch and Unwatch. Its subpackage hung is the one way out of
// a Postgres connection that hangs, shared with the listener.
package pgstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lib/pq"

	"pgmirror/listener"
	"pgmirror/migrations"
	"pgmirror/mirror"
)

// Store reads and notifies through a connection pool; it is safe for
// concurrent use.
type Store struct {
	DB  *sql.DB
	Log hclog.Logger // nil: no logging
	// Gate bounds the fetches running at once (with the loaders; see
	// LimitPool); nil bounds nothing. A fetch waits at most GateWait
	// (0: DefaultLoaderTimeout) for a slot.
	Gate     *Gate
	GateWait time.Duration

	pubq publishQueue // PublishChannel's statements (channels.go)
}

var _ mirror.Source = (*Store)(nil)

// New returns a Store on db; log may be nil.
func New(db *sql.DB, log hclog.Logger) *Store {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Store{DB: db, Log: log}
}

func (s *Store) log() hclog.Logger {
	if s.Log == nil {
		return hclog.NewNullLogger()
	}
	return s.Log
}

// Sentinel implements mirror.Source: it sends a payload of format 1 holding
// one sentinel record, in an autocommit statement of its own.
func (s *Store) Sentinel(ctx context.Context, token string) error {
	payload := listener.Encode(listener.Payload{
		SentAt:  time.Now().UnixMicro(),
		Changes: []mirror.Change{{Op: mirror.OpSentinel, Token: token}},
	})
	// Every sidecar decodes what arrives on the channel, and a payload it
	// refuses costs it a resync, so a bad token must never leave this process.
	if _, err := listener.Decode(payload); err != nil {
		return fmt.Errorf("sentinel %.20q: %w", token, err)
	}
	if _, err := s.DB.ExecContext(ctx, `SELECT pg_notify($1, $2)`, listener.Channel, payload); err != nil {
		return fmt.Errorf("sentinel: %w", err)
	}
	return nil
}

// Now implements mirror.Source.
func (s *Store) Now(ctx context.Context) (int64, error) {
	var us int64
	err := s.DB.QueryRowContext(ctx, `SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint`).Scan(&us)
	if err != nil {
		return 0, fmt.Errorf("read the database clock: %w", err)
	}
	return us, nil
}

// ErrStandby is the error CheckPrimary wraps when the server is a hot standby.
var ErrStandby = errors.New("connected to a hot standby (pg_is_in_recovery() is true)")

// CheckPrimary returns an error wrapping ErrStandby when the server is in
// recovery, where LISTEN does not work and nothing would ever be notified.
func (s *Store) CheckPrimary(ctx context.Context) error {
	return s.checkPrimary(ctx, `SELECT pg_is_in_recovery()`)
}

// checkPrimary takes the query so that tests can play a standby.
func (s *Store) checkPrimary(ctx context.Context, query string) error {
	var standby bool
	if err := s.DB.QueryRowContext(ctx, query).Scan(&standby); err != nil {
		return fmt.Errorf("check for a primary: %w", err)
	}
	if standby {
		return fmt.Errorf("%w: the listener needs the primary; point --dsn/--listen-dsn at the primary "+
			"or use target_session_attrs=read-write", ErrStandby)
	}
	return nil
}

// CheckSchema returns an error saying what to do when cache_entries is not
// in the search_path or its pgmirror triggers are missing or disabled.
func (s *Store) CheckSchema(ctx context.Context) error {
	var (
		table             bool
		missing, disabled []string
	)
	// One round trip; to_regclass resolves the name through the search_path
	// exactly as every other statement of pgmirror will.
	err := s.DB.QueryRowContext(ctx, `
		SELECT c.oid IS NOT NULL,
			ARRAY(SELECT n FROM unnest($1::text[]) n WHERE NOT EXISTS
				(SELECT FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = n) ORDER BY n),
			ARRAY(SELECT t.tgname::text FROM pg_trigger t
				WHERE t.tgrelid = c.oid AND t.tgname = ANY($1) AND t.tgenabled = 'D' ORDER BY 1)
		FROM (SELECT to_regclass('cache_entries')::oid AS oid) c`, pq.Array(migrations.TriggerNames)).
		Scan(&table, pq.Array(&missing), pq.Array(&disabled))
	if err != nil {
		return fmt.Errorf("check the schema: %w", err)
	}
	switch {
	case !table:
		return errors.New("cache_entries not found in the search_path: run `pgmirror migrate` (or serve --migrate)")
	case len(missing) > 0:
		return fmt.Errorf("the pgmirror triggers on cache_entries are missing (%s), so changes are not notified: "+
			"run `pgmirror migrate`, which reinstalls them", strings.Join(missing, ", "))
	case len(disabled) > 0:
		return fmt.Errorf("the pgmirror triggers on cache_entries are disabled (%s), so changes are not notified: "+
			"run `pgmirror migrate`, which re-enables them", strings.Join(disabled, ", "))
	}
	// Membership decides whether this sidecar may run pgmirror_write and
	// silence the per-statement triggers during its batches (docs/security.md);
	// a schema older than migration 0006 has no such role.
	var role string
	var member bool
	err = s.DB.QueryRowContext(ctx, `SELECT session_user, to_regrole('pgmirror_sidecar') IS NULL
		OR pg_has_role(session_user, 'pgmirror_sidecar', 'MEMBER')`).Scan(&role, &member)
	if err != nil {
		return fmt.Errorf("check the schema: %w", err)
	}
	if !member {
		s.log().Warn("the sidecar's role is not a member of pgmirror_sidecar: writes fail unless it was granted EXECUTE "+
			"on pgmirror_write, and each command of a write batch is notified on its own; run GRANT pgmirror_sidecar TO the role",
			"role", role)
	}
	return nil
}

// NextXid implements mirror.Source: the xmax of a snapshot taken now, one
// past the newest transaction that has completed.
func (s *Store) NextXid(ctx context.Context) (uint64, error) {
	var xid uint64
	err := s.DB.QueryRowContext(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&xid)
	if err != nil {
		return 0, fmt.Errorf("read the next transaction id: %w", err)
	}
	return xid, nil
}

// Keyring implements mirror.Source: the keys of pgmirror_secret, newest
// first: the pending key (migration 0008), which the next rotation makes
// current, the current key and the previous one. Reading the pending key
// ahead of its use is what lets a sidecar verify the first payloads after a
// rotation without reading again (which a forger can time). A database that lacks the table (migration 0005 not applied) gives a
// keyring without keys: its triggers send unsigned payloads.
func (s *Store) Keyring(ctx context.Context) (mirror.Keyring, error) {
	kr := mirror.Keyring{Read: time.Now()}
	var exists, pending bool
	if err := s.DB.QueryRowContext(ctx, `SELECT to_regclass('pgmirror_secret') IS NOT NULL,
		EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass('pgmirror_secret')
			AND attname = 'activated_at' AND NOT attisdropped)`).Scan(&exists, &pending); err != nil {
		return kr, fmt.Errorf("look for pgmirror_secret: %w", err)
	}
	if !exists {
		return kr, nil
	}
	q := `SELECT kid, key, false FROM pgmirror_secret ORDER BY kid DESC LIMIT 3` // before migration 0008
	if pending {
		q = `SELECT kid, key, activated_at IS NULL FROM pgmirror_secret ORDER BY kid DESC LIMIT 3`
	}
	rows, err := s.DB.QueryContext(ctx, q)
	if err != nil {
		var pqErr *pq.Error
		if errors.As(err, &pqErr) && pqErr.Code == "42501" { // insufficient_privilege
			return kr, fmt.Errorf("read pgmirror_secret: %s: the sidecar's role cannot read the keys that sign "+
				"notifications, so it cannot tell them from forgeries; grant it the role pgmirror_sidecar "+
				"(GRANT pgmirror_sidecar TO <the sidecar's role>)", pqErr.Message)
		}
		return kr, fmt.Errorf("read pgmirror_secret: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k mirror.Key
		var isPending bool
		if err := rows.Scan(&k.ID, &k.Secret, &isPending); err != nil {
			return kr, fmt.Errorf("read pgmirror_secret: %w", err)
		}
		if isPending && kr.Pending == 0 {
			kr.Pending = k.ID
		}
		kr.Keys = append(kr.Keys, k)
	}
	if err := rows.Err(); err != nil {
		return kr, fmt.Errorf("read pgmirror_secret: %w", err)
	}
	kr.Signed = len(kr.Keys) > 0
	return kr, nil
}

// EstimateRows implements mirror.Source with the planner's row estimate,
// which costs nothing to read; -1 before the table was first analyzed.
func (s *Store) EstimateRows(ctx context.Context) (int64, error) {
	var n int64
	err := s.DB.QueryRowContext(ctx, `SELECT coalesce((SELECT reltuples::bigint FROM pg_class
		WHERE oid = to_regclass('cache_entries')), -1)`).Scan(&n)
	if err != nil {
		return -1, fmt.Errorf("estimate rows: %w", err)
	}
	return n, nil
}
