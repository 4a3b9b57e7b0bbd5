package pgstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// A sidecar talks to Postgres through one pool whose size is its whole
// budget of connections (--max-db-conns; the listener's connection comes on
// top). Clients drive two kinds of queries whose number only they decide:
// loader computations (which hold their connection for as long as the
// loader's SQL runs) and fetches of values the mirror lacks. Both pass a
// Gate whose capacity leaves ReservedConns of the pool to the writer, the
// reloads and the jobs, so that a burst of slow loaders can neither take
// every connection of the server (other users would be refused) nor starve
// writes and reloads.

// Defaults of the connection budget.
const (
	// DefaultMaxConns is the default pool size: the writer's batch, a
	// reload (snapshot and sentinel) and the jobs keep 4 of them, which
	// leaves 6 for loaders and fetches; hits use none. 10 per sidecar
	// keeps a fleet's worst case predictable (max_connections is often
	// 100: see docs/operations.md, Connections).
	DefaultMaxConns = 10
	// DefaultLoaderTimeout bounds one loader computation (enforced by
	// the server: statement_timeout) and the wait for a loader slot.
	DefaultLoaderTimeout = 5 * time.Second
)

// ReservedConns is how many connections of the pool loaders and fetches
// never take: the writer's batches in flight, a reload's snapshot and its
// sentinel, and one for the jobs and the clock.
func ReservedConns(writeInFlight int) int { return max(writeInFlight, 1) + 3 }

// idleConnTimeout closes a pooled connection left idle this long.
const idleConnTimeout = 5 * time.Minute

// LimitPool makes maxConns the most connections db opens, and returns the
// Gate loaders and fetches share: maxConns less the reserved connections.
func LimitPool(db *sql.DB, maxConns, writeInFlight int) (*Gate, error) {
	free := maxConns - ReservedConns(writeInFlight)
	if free < 1 {
		return nil, fmt.Errorf("%d connections leave none for loaders and fetches: the writer (%d batches in flight), "+
			"a reload and the jobs keep %d", maxConns, writeInFlight, ReservedConns(writeInFlight))
	}
	db.SetMaxOpenConns(maxConns)
	// Keep every connection the pool opened (database/sql keeps 2 idle by
	// default): a new connection costs a connect and, on its first batch,
	// compiling pgmirror_write's PL/pgSQL (~90 ms measured), so closing the
	// ones above 2 each time concurrent transactions or loaders return them
	// made every batch after a burst slow. Idle ones are closed after a while.
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxIdleTime(idleConnTimeout)
	return NewGate(free), nil
}

// ErrBusy wraps the error of a loader or fetch that found every connection
// it may use taken for longer than it may wait.
var ErrBusy = errors.New("all connections for loaders and fetches are in use")

// Gate bounds the loader computations and fetches running at once. A nil
// Gate bounds nothing.
type Gate struct {
	slots chan struct{}
}

// NewGate returns a Gate of n slots.
func NewGate(n int) *Gate { return &Gate{slots: make(chan struct{}, max(n, 1))} }

// Cap is the number of slots; 0 for a nil Gate.
func (g *Gate) Cap() int {
	if g == nil {
		return 0
	}
	return cap(g.slots)
}

// InUse is the number of slots taken.
func (g *Gate) InUse() int {
	if g == nil {
		return 0
	}
	return len(g.slots)
}

// Acquire takes a slot, waiting at most wait (0: as long as ctx allows); the
// error wraps ErrBusy when the wait ran out, or is ctx's.
func (g *Gate) Acquire(ctx context.Context, wait time.Duration) error {
	if g == nil {
		return nil
	}
	select {
	case g.slots <- struct{}{}:
		return nil
	default:
	}
	var expired <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		expired = t.C
	}
	select {
	case g.slots <- struct{}{}:
		return nil
	case <-expired:
		return fmt.Errorf("%w (%d) for %v; retry, or raise --max-db-conns", ErrBusy, cap(g.slots), wait)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Release gives back a slot Acquire took.
func (g *Gate) Release() {
	if g != nil {
		<-g.slots
	}
}
