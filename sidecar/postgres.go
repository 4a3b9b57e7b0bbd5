package sidecar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"pgmirror/migrations"
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

// connect waits until Postgres answers, retrying with exponential backoff, because a sidecar
// usually starts before or beside its database and must not crash-loop meanwhile.
func (s *Sidecar) connect(ctx context.Context) error {
	s.log.Info("connecting to Postgres", "dsn", s.Config.DSNForLogs())
	delay := connectBackoffMin
	for attempt := 1; ; attempt++ {
		serverVersion, err := ServerVersion(ctx, s.DB)
		if err == nil {
			s.log.Info("connected", "server_version", serverVersion, "attempt", attempt)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn("cannot connect to Postgres, will retry",
			"attempt", attempt, "error", s.Config.Redact(err.Error()), "retry_in", delay.String())
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

// ServerVersion runs one bounded connection attempt. lib/pq honours ctx only while dialing, so
// the query runs aside and a cancelled ctx returns at once even if the handshake hangs.
func ServerVersion(ctx context.Context, db *sql.DB) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, connectAttemptTimeout)
	defer cancel()
	type result struct {
		version string
		err     error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.err = db.QueryRowContext(ctx, "SHOW server_version").Scan(&r.version)
		done <- r
	}()
	select {
	case r := <-done:
		return r.version, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Migrate applies the embedded migrations and triggersSQL to db.
func Migrate(ctx context.Context, db *sql.DB, triggersSQL string, cfg Config, log hclog.Logger) (migrations.Result, error) {
	// An empty script would be recorded as installed and leave the sidecars without notifications.
	if strings.TrimSpace(triggersSQL) == "" {
		return migrations.Result{}, errors.New("migrate: this binary was built with an empty triggers.sql")
	}
	res, err := migrations.ApplyWith(ctx, db, triggersSQL, migrations.Options{
		Log:               log.Named("migrate"),
		AllowSharedSchema: cfg.AllowSharedSchema,
	})
	if err != nil {
		return res, fmt.Errorf("migrate: %s", cfg.Redact(err.Error()))
	}
	return res, nil
}
