package sidecar

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/go-hclog"

	"pgmirror/migrations"
	"pgmirror/pgstore"
)

// connect waits until Postgres answers, retrying with backoff, because a sidecar usually
// starts before or beside its database and must not crash-loop meanwhile.
func (s *Sidecar) connect(ctx context.Context) error {
	s.log.Info("connecting to Postgres", "dsn", s.Config.DSNForLogs())
	return pgstore.Connect(ctx, s.DB, s.log, s.Config.Redact)
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
