package pgstore

import (
	"context"
	"fmt"
	"time"

	"pgmirror/pgstore/hung"
)

// queueUsageTimeout bounds one reading of the notification queue's usage.
const queueUsageTimeout = 5 * time.Second

// NotificationQueueUsage reads pg_notification_queue_usage(): the fraction
// (0 to 1) of Postgres's notification queue that notifications not yet read
// by every listener take. When it is full, every transaction that notifies
// fails at commit (docs/operations.md, "Limits of LISTEN/NOTIFY"). The call
// is bounded by ctx and by 5 seconds, and returns then even if the driver
// still waits for a connection that hangs (package hung).
func (s *Store) NotificationQueueUsage(ctx context.Context) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, queueUsageTimeout)
	defer cancel()
	type result struct {
		usage float64
		err   error
	}
	r, ok := hung.Aside(ctx, 0, func() (r result) {
		r.err = s.DB.QueryRowContext(ctx, `SELECT pg_notification_queue_usage()`).Scan(&r.usage)
		return r
	}, nil)
	if !ok {
		return 0, fmt.Errorf("read pg_notification_queue_usage(): %w", ctx.Err())
	}
	if r.err != nil {
		return 0, fmt.Errorf("read pg_notification_queue_usage(): %w", r.err)
	}
	return r.usage, nil
}
