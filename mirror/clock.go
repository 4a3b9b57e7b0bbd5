package mirror

import (
	"context"
	"sync/atomic"
	"time"
)

// clock estimates the database clock from the local one. Expiry is judged
// by the database clock; the estimate leans late (offset plus the whole
// uncertainty), so keys expire early rather than late.
type clock struct {
	lead atomic.Int64 // microseconds to add to the local clock: offset + half the round trip
	rtt  atomic.Int64 // round trip of the sample in use, microseconds
}

// dbNow is the latest the database clock can read now, in epoch microseconds.
func (c *clock) dbNow() int64 {
	return time.Now().UnixMicro() + c.lead.Load()
}

// sample measures the offset once; a sample with a longer round trip than
// the one in use replaces it only when the old one is older than keep.
func (c *clock) sample(ctx context.Context, src Source, fresh bool) (time.Duration, error) {
	t0 := time.Now()
	db, err := src.Now(ctx)
	t1 := time.Now()
	if err != nil {
		return 0, err
	}
	rtt := t1.Sub(t0).Microseconds()
	mid := t0.UnixMicro() + rtt/2
	if fresh || c.rtt.Load() == 0 || rtt <= c.rtt.Load() {
		c.lead.Store(db - mid + rtt/2 + 1)
		c.rtt.Store(max(rtt, 1))
	}
	return time.Duration(rtt) * time.Microsecond, nil
}

// clockLoop measures the clock at start and every ClockInterval (best of a
// few samples each time); it also keeps the value budget and the
// collector's target up to date, and the access stamps decodable.
func (m *Mirror) clockLoop(ctx context.Context) {
	measure := func() {
		for i := 0; i < 3; i++ {
			if _, err := m.clock.sample(ctx, m.src, i == 0); err != nil {
				if ctx.Err() == nil {
					m.log.Debug("measuring the database clock failed", "error", err)
				}
				return
			}
		}
	}
	measure()
	t := time.NewTicker(m.opts.ClockInterval)
	defer t.Stop()
	age := time.NewTicker(ageInterval)
	defer age.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-age.C:
			m.ageStamps() // idle.go
		case <-t.C:
			measure()
			m.updateBudget()
			m.tuneGC()
		}
	}
}

// ClockLead returns how far ahead of the local clock the mirror judges the
// database clock (offset plus uncertainty).
func (m *Mirror) ClockLead() time.Duration {
	return time.Duration(m.clock.lead.Load()) * time.Microsecond
}

// MeasureClock samples the database clock now (Open does it in the background).
func (m *Mirror) MeasureClock(ctx context.Context) error {
	_, err := m.clock.sample(ctx, m.src, true)
	return err
}

// IndexBytes estimates the memory of the key index, with the values it holds.
func (m *Mirror) IndexBytes() int64 {
	return m.ix.bytes()
}

// updateBudget gives the value cache what the index leaves of MaxMemory.
func (m *Mirror) updateBudget() {
	budget := max(m.opts.MaxMemory-m.IndexBytes(), minValueBudget)
	if m.lastMaxCost.Swap(budget) != budget {
		m.values.UpdateMaxCost(budget)
	}
}
