package mirror

import (
	"context"
	"time"
)

// DefaultReplayWindow is how many payload MACs the mirror remembers between
// reloads by default: a map of 2^19 numbers, about 10 MB when full.
const DefaultReplayWindow = 1 << 19

// KeyringRereadGap bounds how often the keyring is read again when a
// payload names a key the mirror does not know: a forger can name any kid.
const KeyringRereadGap = time.Second

// droppedShare is the share of the replay window that MACs of dropped
// payloads (RememberDropped) may take: a forger can send those at will, and
// must neither fill the window (a full window asks for a reload at once)
// nor crowd out the MACs of applied payloads.
const droppedShare = 4

// replayGuard recognises an authentic payload delivered a second time,
// which anyone who can LISTEN and NOTIFY can do: re-sending an old change
// would set a key back to a state it left long ago.
//
// A replay is dropped when the snapshot of the last reload whose sentinel
// arrived sees its transaction (the original was delivered before that
// sentinel, and the reload read its effect), or when one of its MACs was
// applied since that reload's snapshot was taken. The listener LISTENs
// before any load, so every original after that snapshot was delivered
// here, and its MAC remembered.
//
// The MACs are kept in generations, one per reload begun: a reload's
// generation starts before its snapshot is taken, so once its sentinel
// arrives every MAC of an older generation belongs to a transaction the
// snapshot sees, and the older generations are dropped. Everything runs
// under the mirror's applyMu.
//
// The same holds for a payload that was delivered but dropped because it
// named a key the mirror did not hold yet (RememberDropped): once the key
// is read, a replay of it would otherwise pass as new, although the
// original was delivered (and its change missed) long before. Its MAC,
// unverified, is remembered like an applied one, within a share of the
// window (droppedShare); past that share one is lost, which lost records,
// so that learning a key before the next reload resyncs instead.
type replayGuard struct {
	vis     *Visibility // the last reload's snapshot, once its sentinel arrived
	gens    []macGen    // oldest first; never empty
	size    int         // MACs in gens
	dropped int         // MACs of dropped payloads in gens (counted in size too)
	max     int
	full    bool   // a MAC could not be kept: a reload was asked for
	lost    bool   // a dropped payload's MAC could not be kept, in generation lostGen or later
	lostGen uint64 // see lost
}

// macGen is the MACs applied from one reload's start to the next.
type macGen struct {
	id      uint64
	macs    map[uint64]struct{}
	dropped int // of macs, those of dropped payloads
}

func newReplayGuard(max int) replayGuard {
	return replayGuard{max: max, gens: []macGen{{macs: map[uint64]struct{}{}}}}
}

// newGen starts a generation and returns its id; call it before taking a
// reload's snapshot.
func (g *replayGuard) newGen() uint64 {
	id := g.gens[len(g.gens)-1].id + 1
	g.gens = append(g.gens, macGen{id: id, macs: map[uint64]struct{}{}})
	return id
}

// switchTo makes vis, the snapshot of the reload whose generation is gen,
// the reference, once that reload's sentinel arrived: older generations go.
func (g *replayGuard) switchTo(vis *Visibility, gen uint64) {
	g.vis = vis
	i := 0
	for i < len(g.gens)-1 && g.gens[i].id < gen {
		g.size -= len(g.gens[i].macs)
		g.dropped -= g.gens[i].dropped
		i++
	}
	g.gens = g.gens[i:]
	g.full = false
	if g.lost && g.lostGen < gen {
		g.lost = false // the snapshot sees the payloads whose MACs were lost
	}
}

// seen reports whether mac is remembered.
func (g *replayGuard) seen(mac uint64) bool {
	for i := range g.gens {
		if _, ok := g.gens[i].macs[mac]; ok {
			return true
		}
	}
	return false
}

// remember keeps the MAC of a dropped payload, within its share of the
// window; it reports false when it could not.
func (g *replayGuard) remember(mac uint64) bool {
	if g.seen(mac) {
		return true
	}
	cur := &g.gens[len(g.gens)-1]
	if g.size >= g.max || g.dropped >= max(g.max/droppedShare, 1) {
		if !g.lost {
			g.lost, g.lostGen = true, cur.id
		}
		return false
	}
	cur.macs[mac] = struct{}{}
	cur.dropped++
	g.dropped++
	g.size++
	return true
}

// admit reports whether b may be applied, and remembers its MACs if so.
// overflow is true the first time a MAC could not be kept since the last
// switch: a reload must follow, which makes room.
func (g *replayGuard) admit(b *Batch) (ok, overflow bool) {
	if b.Xid != 0 && g.vis != nil && g.vis.Sees(b.Xid) {
		return false, false
	}
	for _, mac := range b.MACs {
		if g.seen(mac) {
			return false, false
		}
	}
	cur := g.gens[len(g.gens)-1].macs
	for _, mac := range b.MACs {
		if g.size >= g.max {
			overflow = !g.full
			g.full = true
			break
		}
		cur[mac] = struct{}{}
		g.size++
	}
	return true, overflow
}

// Keyring returns the keys that sign notifications as last read: at the
// last reload, or by RefreshKeyring. Nil before the first read.
func (m *Mirror) Keyring() *Keyring { return m.keyring.Load() }

// RefreshKeyring reads the keys again, for a payload that names a key the
// mirror does not know (the triggers rotated it), and returns them; at most
// once a second, since a forger can name any key: within a second of the
// last read it returns the keys as they are.
func (m *Mirror) RefreshKeyring(ctx context.Context) *Keyring {
	m.keyMu.Lock()
	defer m.keyMu.Unlock()
	if time.Since(m.keyRead) < KeyringRereadGap {
		return m.keyring.Load()
	}
	m.keyRead = time.Now()
	kr, err := m.src.Keyring(ctx)
	if err != nil {
		m.log.Warn("cannot read the notification keys; payloads under a new key are dropped until a reload reads them",
			"error", err)
		return m.keyring.Load()
	}
	old := m.keyring.Load()
	m.keyring.Store(&kr)
	if m.dropLost.Load() && maxKid(&kr) > maxKid(old) {
		// A payload under a key not held then was dropped and its MAC
		// could not be kept: now that a new key is known, a replay of it
		// would pass. A resync's snapshot sees it, and so refuses it.
		m.log.Warn("learnt a new notification key after more dropped payloads than the replay window keeps; resyncing")
		m.StreamGap("new key after dropped payloads' MACs were lost")
	}
	return &kr
}

// RememberDropped remembers the MAC prefix of a payload dropped because it
// names a key newer than any the mirror holds: if the key is genuine and
// read later, a replay of the payload is then refused like a replay of an
// applied one (see replayGuard). It counts toward the replay window.
func (m *Mirror) RememberDropped(mac uint64) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.replay.remember(mac)
	m.dropLost.Store(m.replay.lost)
}

// maxKid returns the highest key id of kr, 0 for none.
func maxKid(kr *Keyring) int64 {
	var n int64
	if kr != nil {
		for _, k := range kr.Keys {
			n = max(n, k.ID)
		}
	}
	return n
}

// readKeyring reads the keys at a reload's start. A sidecar that cannot
// read them (its role lacks the grant) goes on without: it cannot verify
// a signed payload, so it drops them all and follows the table by the
// repairs that asks for, and says so at every reload.
func (m *Mirror) readKeyring(ctx context.Context) {
	m.keyMu.Lock()
	defer m.keyMu.Unlock()
	m.keyRead = time.Now()
	kr, err := m.src.Keyring(ctx)
	if err != nil && ctx.Err() != nil {
		// Stopping (or the reload given up): not a missing grant.
		m.log.Debug("reading the keys that sign notifications stopped", "error", err)
		return
	}
	if err != nil {
		m.log.Error("cannot read the keys that sign notifications: every signed notification is dropped, and the "+
			"mirror follows the table only by reloads", "error", err)
		if m.keyring.Load() == nil {
			// Unknown whether the triggers sign: assume they do, so
			// unsigned payloads are not trusted meanwhile.
			m.keyring.Store(&Keyring{Signed: true, Read: time.Now()})
		}
		return
	}
	if old := m.keyring.Load(); old == nil || old.Signed != kr.Signed {
		m.log.Info("notification signing", "signed", kr.Signed, "keys", len(kr.Keys))
	}
	m.keyring.Store(&kr)
}
