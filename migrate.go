package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"pgmirror/migrations"
	"pgmirror/pgstore"
	"pgmirror/sidecar"
)

// migratePingTimeout bounds how long migrate, watch and unwatch wait for Postgres before failing.
const migratePingTimeout = 10 * time.Second

// runMigrate is `pgmirror migrate`: one bounded attempt to reach Postgres, then the migrations.
func (m *Main) runMigrate(ctx context.Context) error {
	if err := m.reach(ctx); err != nil {
		return err
	}
	res, err := sidecar.Migrate(ctx, m.DB, triggersSQL, m.Config, m.Logger)
	if err != nil {
		return err
	}
	printMigrateResult(m.Stdout, res)
	return nil
}

// reach opens DB and makes one bounded attempt to reach Postgres, for the one-shot commands.
func (m *Main) reach(ctx context.Context) error {
	db, _, err := sidecar.OpenDB(m.Config)
	if err != nil {
		return err
	}
	m.DB = db
	pingCtx, cancel := context.WithTimeout(ctx, migratePingTimeout)
	defer cancel()
	if _, err := pgstore.ServerVersion(pingCtx, db); err != nil {
		return fmt.Errorf("%s: cannot reach Postgres (%s): %s", m.Command, m.Config.DSNForLogs(), m.redact(err.Error()))
	}
	return nil
}

// printMigrateResult tells the operator what migrate did, one step a line.
func printMigrateResult(w io.Writer, res migrations.Result) {
	if !res.Changed() {
		fmt.Fprintln(w, "nothing to do: schema up to date")
		return
	}
	for _, file := range res.Applied {
		fmt.Fprintf(w, "applied %s\n", file)
	}
	if res.TriggersUpdated {
		fmt.Fprintln(w, "triggers.sql installed")
	} else {
		fmt.Fprintln(w, "triggers.sql up to date")
	}
	for _, fix := range res.Secured {
		fmt.Fprintf(w, "secured: %s\n", fix)
	}
}
