package jobs

import (
	"context"
	"math"
	"slices"
	"time"

	"pgmirror/pgstore"
)

// accessSkip is how recent a stored access time may be and still be left
// alone: a hundredth of the retention, at least one flush interval, so hot
// keys are rewritten about a hundred times per retention period, not every
// few seconds.
func (j *Jobs) accessSkip() time.Duration {
	return max(j.cfg.Retention/100, j.cfg.AccessFlushInterval)
}

// FlushAccess writes the access times of the keys read since the last
// flush: de-duplicated (the mirror keeps one mark per key), in statements of
// at most accessBatch keys. The access job calls it every interval, and
// Close once more.
func (j *Jobs) FlushAccess(ctx context.Context) {
	keys := j.mirror.TakeAccessed()
	if len(keys) == 0 {
		return
	}
	start := time.Now()
	var rows int64
	for batch := range slices.Chunk(keys, accessBatch) {
		n, err := j.store.FlushAccess(ctx, batch, j.accessSkip())
		if err != nil {
			// Lost access times only make a key look older to cleanup
			// and refresh; not worth retrying and holding memory for.
			j.log.Warn("flushing access times failed", "keys", len(batch), "error", err)
			continue
		}
		j.accessFlushes.Add(1)
		rows += n
	}
	j.accessRows.Add(rows)
	j.lastFlush.Store(time.Now().UnixNano())
	j.log.Debug("access times flushed", "keys", len(keys), "rows_updated", rows, "elapsed", time.Since(start))
}

// refresh recomputes the keys that are due, claiming each first so that
// across all sidecars each is recomputed once.
func (j *Jobs) refresh(ctx context.Context) {
	policy := pgstore.RefreshPolicy{Ahead: j.cfg.RefreshAhead, Window: j.cfg.RefreshWindow, LockStale: j.cfg.RefreshLockStale}
	for ctx.Err() == nil {
		keys, err := j.store.DueKeys(ctx, policy, refreshBatch)
		if err != nil {
			j.log.Warn("finding keys to refresh failed", "error", err)
			return
		}
		claimed := 0
		for _, key := range keys {
			token, ok, err := j.store.Claim(ctx, key, policy)
			if err != nil {
				j.log.Warn("claiming a key for refresh failed", "key", key, "error", err)
				continue
			}
			if !ok {
				continue // another sidecar refreshes it
			}
			claimed++
			out, err := j.loaders.Refresh(ctx, j.mirror, key, token)
			switch {
			case err != nil:
				j.failed.Add(1)
				j.log.Warn("refresh failed; the key stays refreshable", "key", key, "error", err)
			case out == pgstore.Refreshed:
				j.refreshed.Add(1)
			case out == pgstore.Removed:
				j.removed.Add(1)
			case out == pgstore.Fenced:
				j.fenced.Add(1)
				j.log.Info("refresh not stored: its claim was lost", "key", key)
			}
		}
		if len(keys) < refreshBatch || claimed == 0 {
			return // nothing more is due (or the rest is claimed elsewhere)
		}
	}
}

// cleanup deletes unused and long-expired keys in small transactions, while
// no other sidecar is cleaning.
func (j *Jobs) cleanup(ctx context.Context) {
	policy := pgstore.CleanupPolicy{Retention: j.cfg.Retention, ExpiredGrace: j.cfg.ExpiredGrace, Batch: cleanupBatch}
	var total int64
	for ctx.Err() == nil {
		n, ran, err := j.store.CleanupBatch(ctx, policy)
		if err != nil {
			j.log.Warn("cleanup failed", "error", err)
			break
		}
		total += n
		j.cleanups.Add(n)
		if !ran || n < int64(policy.Batch) {
			break
		}
	}
	if total > 0 {
		j.log.Info("cleanup deleted keys", "keys", total)
	}
}

// sampleQueue reads Postgres's notification queue usage for Stats, so that
// a scrape never waits for Postgres. A failed reading keeps the last one
// (its time tells its age); Postgres down is the listener's to report.
func (j *Jobs) sampleQueue(ctx context.Context) {
	usage, err := j.store.NotificationQueueUsage(ctx)
	if err != nil {
		if ctx.Err() == nil {
			j.log.Debug("reading the notification queue's usage failed", "error", err)
		}
		return
	}
	j.queueUsage.Store(math.Float64bits(usage))
	j.queueSampled.Store(time.Now().UnixNano())
	if usage >= 0.5 {
		j.log.Warn("Postgres's notification queue is over half full: a listener is not reading; "+
			"when it is full, every write fails (docs/operations.md)", "usage", usage)
	}
}
