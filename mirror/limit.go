package mirror

import (
	"strings"
	"sync"
	"time"
)

// Spacing of the reloads asked for from outside (RequestResync) and of
// repairs (RequestRepair).
const (
	// DefaultMinResyncInterval is the least time between two such reloads.
	DefaultMinResyncInterval = 5 * time.Second
	// resyncDutyFactor: the gap is also at least this many times the last
	// reload's duration, so requests in a loop keep a large mirror
	// reloading a fifth of the time at most.
	resyncDutyFactor = 4
	// maxRepairGap caps the backoff of repairs while payloads keep being
	// dropped: a stream of junk costs a reload this often, no more.
	maxRepairGap = 5 * time.Minute
	// repairPrefix starts the reason of a repair; such reloads compare key
	// ranges when the mirror is large, as periodic ones do.
	repairPrefix = "repair: "
)

// resyncLimiter coalesces and spaces out the reloads that a client, an
// operator or a dropped payload asks for. The first is granted at once;
// one that arrives within the gap after the last grant waits for the gap
// to pass, and every request meanwhile joins it. A stream of requests
// therefore costs one reload per gap, and never resets a reload in
// progress (unlike a gap in the stream, which makes it start over).
type resyncLimiter struct {
	mu         sync.Mutex
	last       time.Time     // when the last request was granted
	pending    string        // reason of the request waiting for the gap; "" if none
	timer      *time.Timer   // grants pending
	repairGap  time.Duration // the gap before the next repair, doubling while repairs continue
	lastRepair time.Time     // when the last repair was granted
	lastReload time.Duration // duration of the last reload, for the duty bound
}

// isRepair reports whether reason is a repair's.
func isRepair(reason string) bool { return strings.HasPrefix(reason, repairPrefix) }

// RequestResync asks for a full reload, as PGMIRROR.RESYNC and SIGHUP do.
// Requests are coalesced and spaced out: the first starts a reload at
// once; later ones within Options.MinResyncInterval (or four times the
// last reload's duration, if longer) of it wait for that gap and share one
// reload. A client that sends them in a loop cannot keep the mirror
// reloading.
func (m *Mirror) RequestResync(reason string) {
	m.requestLimited(reason)
}

// RequestRepair asks for a reload because the stream delivered a payload
// that had to be dropped (undecodable, unsigned, forged, out of sequence):
// if a bug made a genuine change undecodable, the reload repairs what it
// missed. Repairs are coalesced and spaced out as RequestResync's requests
// are, and back off further (doubling their gap up to 5 minutes) while
// payloads keep being dropped, so a stream of junk costs little. The
// handlers are told at once: the dropped payload may have carried changes.
func (m *Mirror) RequestRepair(why string) {
	m.emit(Event{Kind: KindFlush, Flush: FlushGap, Reason: repairPrefix + why})
	m.requestLimited(repairPrefix + why)
}

func (m *Mirror) requestLimited(reason string) {
	if m.opts.MinResyncInterval < 0 {
		m.resync(reason)
		return
	}
	l := &m.limiter
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending != "" {
		if isRepair(l.pending) && !isRepair(reason) {
			l.pending = reason // a full resync covers the repair
		}
		return
	}
	gap := max(m.opts.MinResyncInterval, resyncDutyFactor*l.lastReload)
	if isRepair(reason) {
		gap = max(gap, l.repairGap)
	}
	wait := time.Until(l.last.Add(gap))
	if l.last.IsZero() || wait <= 0 {
		m.grantLocked(reason)
		return
	}
	l.pending = reason
	l.timer = time.AfterFunc(wait, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if r := l.pending; r != "" {
			l.pending = ""
			m.grantLocked(r)
		}
	})
}

// grantLocked starts the reload asked for; l.mu is held.
func (m *Mirror) grantLocked(reason string) {
	l := &m.limiter
	now := time.Now()
	l.last = now
	if isRepair(reason) {
		base := m.opts.MinResyncInterval
		if l.repairGap == 0 || now.Sub(l.lastRepair) > 2*l.repairGap {
			l.repairGap = base // quiet for a while: start the backoff over
		} else {
			l.repairGap = min(2*l.repairGap, maxRepairGap)
		}
		l.lastRepair = now
		m.stats.repairs.Add(1)
	}
	m.resync(reason)
}

// reloadTook records a reload's duration for the duty bound.
func (m *Mirror) reloadTook(d time.Duration) {
	m.limiter.mu.Lock()
	m.limiter.lastReload = d
	m.limiter.mu.Unlock()
}

// stopLimiter cancels a request waiting for its gap.
func (m *Mirror) stopLimiter() {
	m.limiter.mu.Lock()
	defer m.limiter.mu.Unlock()
	if m.limiter.timer != nil {
		m.limiter.timer.Stop()
	}
	m.limiter.pending = ""
}
