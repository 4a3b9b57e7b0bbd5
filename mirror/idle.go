package mirror

import (
	"context"
	"time"
)

// Access times, for OBJECT IDLETIME and CLIENT NO-TOUCH.
//
// Each entry keeps when this sidecar last read it (or applied a new state
// of it) in 12 bits of its meta word, between the key's length and the
// flags, so tracking costs no memory. Like Redis's LRU clock it wraps, so
// it has two tiers: a fine stamp is the second (of the database clock as
// the mirror estimates it) modulo 2048; a coarse stamp, marked by its top
// bit, the 64-second unit modulo 2048. The sweep (every ageInterval, from
// the clock loop) turns fine stamps older than fineLimit seconds into
// coarse ones and holds coarse ones at coarseLimit units, so a stamp is
// always decoded within its range: idle times are exact to the second up
// to ~17 minutes, at most 63 seconds over beyond, and saturate at about
// 18 hours (coarseLimit units).
const (
	stampShift         = 12
	stampMask   uint32 = (1<<12 - 1) << stampShift
	stampCoarse uint32 = 1 << 11 // within the 12-bit stamp
	stampSpan          = 1 << 11 // fine seconds or coarse units, modulo
	coarseShift        = 6       // a coarse unit is 64 seconds
	fineLimit          = 1024    // seconds
	coarseLimit        = 1024    // coarse units
	ageInterval        = time.Minute
)

// The key's length must fit below the stamp.
const _ = keyLenMask - MaxKeyBytes

// fineStamp is the meta bits of an access at second sec.
func fineStamp(sec int64) uint32 { return uint32(sec&(stampSpan-1)) << stampShift }

// stampAge decodes a stamp (meta bits) into an age in seconds at second now.
func stampAge(stamp uint32, now int64) int64 {
	s := stamp >> stampShift
	if s&stampCoarse == 0 {
		return (now - int64(s)) & (stampSpan - 1)
	}
	// Measured from the start of the access's unit: never less than the
	// fine age it replaced, at most 63 seconds more than the true age.
	units := (now>>coarseShift - int64(s&^stampCoarse)) & (stampSpan - 1)
	return units<<coarseShift + now&(1<<coarseShift-1)
}

// agedStamp is what the sweep makes of stamp at second now: a coarse stamp
// for a fine one past fineLimit, a coarse one held at coarseLimit; else
// stamp unchanged.
func agedStamp(stamp uint32, now int64) uint32 {
	s := stamp >> stampShift
	if s&stampCoarse == 0 {
		age := (now - int64(s)) & (stampSpan - 1)
		if age < fineLimit {
			return stamp
		}
		return (stampCoarse | uint32(((now-age)>>coarseShift)&(stampSpan-1))) << stampShift
	}
	units := (now>>coarseShift - int64(s&^stampCoarse)) & (stampSpan - 1)
	if units <= coarseLimit {
		return stamp
	}
	return (stampCoarse | uint32((now>>coarseShift-coarseLimit)&(stampSpan-1))) << stampShift
}

// touch records an access at stamp (fineStamp of now): the access-time
// flush's mark and the idle clock. It writes only when either changes.
func (e *entry) touch(stamp uint32) {
	for {
		m := e.meta.Load()
		if m&flagAccessed != 0 && m&stampMask == stamp {
			return
		}
		if e.meta.CompareAndSwap(m, m&^stampMask|stamp|flagAccessed) {
			return
		}
	}
}

// ageStamps is the sweep that keeps every stamp decodable.
func (m *Mirror) ageStamps() {
	now := m.clock.dbNow() / 1e6
	for i := range m.ix.shards {
		sh := &m.ix.shards[i]
		sh.mu.RLock()
		sh.t.all(func(e *entry) bool {
			for {
				old := e.meta.Load()
				st := agedStamp(old&stampMask, now)
				if st == old&stampMask || e.meta.CompareAndSwap(old, old&^stampMask|st) {
					return true
				}
			}
		})
		sh.mu.RUnlock()
	}
}

// IdleTime returns the seconds since this sidecar last read key, or
// applied a new state of it (a write, here or elsewhere, or a reload);
// found is false for a missing key. It is not an access itself.
func (m *Mirror) IdleTime(key string) (secs int64, found bool, err error) {
	if err := m.readable(); err != nil {
		return 0, false, err
	}
	now := m.clock.dbNow()
	l := m.lookup(key, now, false)
	if !l.Found {
		return 0, false, nil
	}
	return stampAge(l.stamp, now/1e6), true, nil
}

// noTouchKey marks a context whose reads are not accesses.
type noTouchKey struct{}

// WithoutTouch returns ctx for reads that do not count as accesses (Redis's
// CLIENT NO-TOUCH): Get and GetMulti under it neither mark keys for the
// access-time flush nor reset their idle time. Touch always counts.
func WithoutTouch(ctx context.Context) context.Context {
	return context.WithValue(ctx, noTouchKey{}, true)
}

// touches reports whether reads under ctx count as accesses.
func touches(ctx context.Context) bool { return ctx.Value(noTouchKey{}) == nil }
