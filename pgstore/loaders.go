package pgstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lib/pq"

	"pgmirror/mirror"
)

// Loader is one row of cache_loaders.
type Loader struct {
	Prefix string
	Query  string
	TTL    time.Duration // 0: entries it computes never expire
}

// ErrLoaderFailed wraps the error of a loader's query; nothing was stored.
var ErrLoaderFailed = errors.New("loader failed")

// LoaderHooks are test hooks; nil in production.
type LoaderHooks struct {
	// AfterCompute runs after a loader's query returned, before the value
	// is stored (the key's lock is held).
	AfterCompute func(key string)
	// BeforeApply runs after a loader's store committed, before it is
	// applied to the mirror (the key's lock is released).
	BeforeApply func(key string)
}

// Loaders computes absent keys with the SQL of cache_loaders. It keeps the
// loader rows in memory (Reload reads them again) and implements
// mirror.Loader. A computation and its store run in one transaction under
// the key's advisory lock (pgmirror_key_lock), which refresh and watch
// invalidation take too, with a re-check after the lock is granted: across
// all sidecars a key is computed once at a time, and a computation can
// never store what it read before an invalidation of the key.
type Loaders struct {
	DB    *sql.DB
	Log   hclog.Logger
	Hooks *LoaderHooks
	// Gate bounds the computations running at once (with the store's
	// fetches; see LimitPool); nil bounds nothing.
	Gate *Gate
	// Timeout bounds each statement of a computation, enforced by the
	// server (statement_timeout, set for the computation's transaction:
	// it holds the key's lock, so the bound must hold even if this process
	// stalls), and the wait for a slot of Gate; 0 means
	// DefaultLoaderTimeout. A computation that times out stores nothing.
	Timeout time.Duration

	mu      sync.RWMutex
	loaders []Loader // longest prefix first
	runs    atomic.Int64
	fails   atomic.Int64
}

// NewLoaders returns Loaders over db. What a computation stores is applied
// to the mirror given to each call (Load, Refresh).
func NewLoaders(db *sql.DB, log hclog.Logger) *Loaders {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Loaders{DB: db, Log: log, Hooks: &LoaderHooks{}}
}

var _ mirror.Loader = (*Loaders)(nil)

// Reload reads cache_loaders again.
func (l *Loaders) Reload(ctx context.Context) error {
	rows, err := l.DB.QueryContext(ctx, `SELECT prefix, query, coalesce(extract(epoch FROM ttl) * 1000000, 0)::bigint
		FROM cache_loaders`)
	if err != nil {
		return fmt.Errorf("read cache_loaders: %w", err)
	}
	defer rows.Close()
	var list []Loader
	for rows.Next() {
		var ld Loader
		var ttlUS int64
		if err := rows.Scan(&ld.Prefix, &ld.Query, &ttlUS); err != nil {
			return fmt.Errorf("read cache_loaders: %w", err)
		}
		ld.TTL = time.Duration(ttlUS) * time.Microsecond
		list = append(list, ld)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read cache_loaders: %w", err)
	}
	sort.Slice(list, func(i, j int) bool { return len(list[i].Prefix) > len(list[j].Prefix) })
	l.mu.Lock()
	l.loaders = list
	l.mu.Unlock()
	l.Log.Debug("loaders reloaded", "loaders", len(list))
	return nil
}

// Find returns the loader of key: the one with the longest matching prefix.
func (l *Loaders) Find(key string) (Loader, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, ld := range l.loaders {
		if strings.HasPrefix(key, ld.Prefix) {
			return ld, true
		}
	}
	return Loader{}, false
}

// Covers implements mirror.Loader.
func (l *Loaders) Covers(key string) bool {
	_, ok := l.Find(key)
	return ok
}

// Runs returns how many computations ran, and how many of them failed.
func (l *Loaders) Runs() (runs, failures int64) { return l.runs.Load(), l.fails.Load() }

// Load implements mirror.Loader: it computes key, stores it, applies it to
// the mirror (to), and returns it. If another sidecar stored the key while
// this one waited for the lock, that value is returned instead and nothing
// runs.
func (l *Loaders) Load(ctx context.Context, to mirror.WriteApplier, key string) ([]byte, bool, error) {
	ld, ok := l.Find(key)
	if !ok {
		return nil, false, nil
	}
	if err := l.Gate.Acquire(ctx, l.timeout()); err != nil {
		return nil, false, fmt.Errorf("%w: prefix %q: %w", ErrLoaderFailed, ld.Prefix, err)
	}
	defer l.Gate.Release()
	ctx, cancel := context.WithTimeout(ctx, l.backstop())
	defer cancel()
	ticket := to.BeginWrite()
	res, err := l.load(ctx, ld, key)
	if err != nil || res.change == nil {
		to.AbandonWrite(ticket)
		return res.value, res.found, err
	}
	if h := l.Hooks.BeforeApply; h != nil {
		h(key)
	}
	to.ApplyWrite(ticket, res.xid, []mirror.Change{*res.change})
	return res.value, res.found, nil
}

func (l *Loaders) timeout() time.Duration {
	if l.Timeout > 0 {
		return l.Timeout
	}
	return DefaultLoaderTimeout
}

// backstop bounds a whole computation on this side, in case the server
// stops answering: its statements (lock, re-check, query, store) are each
// bounded by the server.
func (l *Loaders) backstop() time.Duration { return 4*l.timeout() + 2*time.Second }

// beginBounded starts a computation's transaction with the loader timeout
// as its statement_timeout.
func (l *Loaders) beginBounded(ctx context.Context) (*sql.Tx, error) {
	tx, err := l.DB.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	ms := strconv.FormatInt(max(l.timeout().Milliseconds(), 1), 10)
	if _, err := tx.ExecContext(ctx, `SELECT set_config('statement_timeout', $1, true)`, ms); err != nil {
		_ = tx.Rollback()
		return nil, err
	}
	return tx, nil
}

type loadResult struct {
	value  []byte
	found  bool
	xid    uint64
	change *mirror.Change // what was stored, if anything
}

func (l *Loaders) load(ctx context.Context, ld Loader, key string) (res loadResult, err error) {
	tx, err := l.beginBounded(ctx)
	if err != nil {
		return res, fmt.Errorf("loader %q: %w", ld.Prefix, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(pgmirror_key_lock($1))`, key); err != nil {
		return res, fmt.Errorf("loader %q: lock the key: %w", ld.Prefix, err)
	}
	// Re-check: another sidecar may have computed it while we waited.
	var cur mirror.Row
	var exp sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT value, version, `+expiryExpr+` FROM cache_entries
		WHERE key = $1 AND (expires_at IS NULL OR expires_at > clock_timestamp())`, key).Scan(&cur.Value, &cur.Version, &exp)
	if err == nil {
		err = tx.Commit()
		return loadResult{value: cur.Value, found: true}, err
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return res, fmt.Errorf("loader %q: re-check: %w", ld.Prefix, err)
	}
	l.runs.Add(1)
	value, found, err := compute(ctx, tx, ld, key, l.timeout())
	if err != nil {
		l.fails.Add(1)
		return res, err
	}
	if h := l.Hooks.AfterCompute; h != nil {
		h(key)
	}
	if !found {
		err = tx.Commit()
		return loadResult{}, err
	}
	c := mirror.Change{Op: mirror.OpSet, Key: key, Value: value}
	err = tx.QueryRowContext(ctx, `INSERT INTO cache_entries(key, value, expires_at)
		VALUES ($1, $2, CASE WHEN $3::bigint > 0 THEN clock_timestamp() + $3::bigint * interval '1 microsecond' END)
		ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
		RETURNING version, `+expiryExpr+`, pg_current_xact_id()::text::bigint`,
		key, value, ld.TTL.Microseconds()).Scan(&c.Version, &exp, &res.xid)
	if err != nil {
		return res, fmt.Errorf("loader %q: store: %w", ld.Prefix, err)
	}
	c.Expires = expiry(exp)
	if err = tx.Commit(); err != nil {
		return res, fmt.Errorf("loader %q: commit: %w", ld.Prefix, err)
	}
	return loadResult{value: value, found: true, xid: res.xid, change: &c}, nil
}

// compute runs a loader's query in tx, inside a savepoint so that its
// failure leaves tx usable. The first column of the first row is the value:
// bytea as is, text and json as their UTF-8 text, other types as their text
// form; no row (or a NULL) means the key is absent. timeout is the
// transaction's statement_timeout, for the error message.
func compute(ctx context.Context, tx *sql.Tx, ld Loader, key string, timeout time.Duration) (v []byte, found bool, err error) {
	if _, err := tx.ExecContext(ctx, `SAVEPOINT pgmirror_loader`); err != nil {
		return nil, false, err
	}
	defer func() {
		if err != nil {
			_, _ = tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT pgmirror_loader`)
			var pe *pq.Error
			if errors.As(err, &pe) && pe.Code == "57014" {
				err = fmt.Errorf("%w: prefix %q: the query ran longer than --loader-timeout (%v) and was cancelled; nothing was stored",
					ErrLoaderFailed, ld.Prefix, timeout)
				return
			}
			err = fmt.Errorf("%w: prefix %q: %v", ErrLoaderFailed, ld.Prefix, err)
		}
	}()
	rows, err := tx.QueryContext(ctx, ld.Query, strings.TrimPrefix(key, ld.Prefix))
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, false, err
	}
	if len(cols) == 0 {
		return nil, false, errors.New("the query returns no column")
	}
	if !rows.Next() {
		return nil, false, rows.Err()
	}
	dest := make([]any, len(cols))
	var first any
	dest[0] = &first
	for i := 1; i < len(dest); i++ {
		dest[i] = new(any)
	}
	if err := rows.Scan(dest...); err != nil {
		return nil, false, err
	}
	if err := rows.Close(); err != nil {
		return nil, false, err
	}
	switch x := first.(type) {
	case nil:
		return nil, false, nil
	case []byte:
		return x, true, nil
	case string:
		return []byte(x), true, nil
	case time.Time:
		return []byte(x.Format(time.RFC3339Nano)), true, nil
	default:
		return fmt.Append(nil, x), true, nil
	}
}
