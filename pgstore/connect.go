package pgstore

import (
	"context"
	"database/sql"
	"time"

	"github.com/hashicorp/go-hclog"

	"pgmirror/pgstore/hung"
)

// Timings of connecting to Postgres.
const (
	// connectBackoffMin is the first wait after a failed connection attempt; it doubles each time.
	connectBackoffMin = 100 * time.Millisecond
	// connectBackoffMax caps the wait, so a recovered Postgres is noticed within seconds.
	connectBackoffMax = 5 * time.Second
	// connectAttemptTimeout bounds one attempt, including a server that accepts and never answers.
	connectAttemptTimeout = 10 * time.Second
)

// Connect waits until Postgres answers on db, retrying with exponential
// backoff (100ms doubling up to 5s), because a sidecar usually starts before
// or beside its database and must not crash-loop meanwhile. It logs on log
// each failed attempt, its error passed through redact (nil: as it is), and
// the success; it returns ctx.Err() once ctx is done.
func Connect(ctx context.Context, db *sql.DB, log hclog.Logger, redact func(string) string) error {
	if redact == nil {
		redact = func(s string) string { return s }
	}
	delay := connectBackoffMin
	for attempt := 1; ; attempt++ {
		serverVersion, err := ServerVersion(ctx, db)
		if err == nil {
			log.Info("connected", "server_version", serverVersion, "attempt", attempt)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("cannot connect to Postgres, will retry",
			"attempt", attempt, "error", redact(err.Error()), "retry_in", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, connectBackoffMax)
	}
}

// ServerVersion runs one connection attempt, bounded by ctx and by 10
// seconds, and returns the server's version. It returns at once when ctx
// is done, even if the handshake or the query hangs (package hung).
func ServerVersion(ctx context.Context, db *sql.DB) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, connectAttemptTimeout)
	defer cancel()
	type result struct {
		version string
		err     error
	}
	r, ok := hung.Aside(ctx, 0, func() (r result) {
		r.err = db.QueryRowContext(ctx, "SHOW server_version").Scan(&r.version)
		return r
	}, nil)
	if !ok {
		return "", ctx.Err()
	}
	return r.version, r.err
}
