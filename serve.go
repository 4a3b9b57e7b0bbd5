package main

import (
	"context"
	"errors"

	"pgmirror/sidecar"
)

// runServe is `pgmirror serve`: the sidecar runs until ctx is cancelled or one of its
// components fails.
func (m *Main) runServe(ctx context.Context) error {
	sc, err := sidecar.New(m.Config, sidecar.Options{Logger: m.Logger, Version: version, TriggersSQL: triggersSQL})
	if err != nil {
		return err
	}
	m.sidecar.Store(sc)
	if err := sc.Open(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			m.Logger.Info("shutting down before Postgres was reached", "reason", context.Cause(ctx))
			return nil
		}
		return err
	}
	select {
	case <-ctx.Done():
		m.Logger.Info("shutting down", "reason", context.Cause(ctx))
		return nil
	case err := <-sc.Err():
		return err
	}
}
