package listener

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"slices"
	"sync"
	"time"

	"pgmirror/mirror"
)

// UnsignedPolicy says whether payloads of format 1, which carry no MAC, are
// applied (--unsigned-payloads). Sentinels and the delivery probe, which a
// sidecar sends itself and which change nothing, are accepted under every
// policy.
type UnsignedPolicy string

// The policies.
const (
	// UnsignedAuto accepts unsigned payloads only while the database's
	// triggers do not sign: its keyring, read at every load, holds no key.
	// Once a signed payload can be verified, unsigned ones are refused; and
	// so are those before the first load (which includes their effect).
	UnsignedAuto UnsignedPolicy = "auto"
	// UnsignedAccept always accepts them: for a fleet mid-upgrade only.
	UnsignedAccept UnsignedPolicy = "accept"
	// UnsignedReject never accepts them: after the rollout.
	UnsignedReject UnsignedPolicy = "reject"
)

// Reasons a payload is dropped, the values of the reason label of
// pgmirror_notifications_rejected_total.
const (
	RejectMalformed  = "malformed"   // no known format, or a field or record that does not decode
	RejectUnsigned   = "unsigned"    // format 1 with changes, refused by the policy
	RejectUnknownKey = "unknown_key" // signed with a key the sidecar does not hold: made up, or older than the previous one
	RejectBadMAC     = "bad_mac"     // the MAC does not verify: forged or altered
	RejectParts      = "parts"       // a part out of sequence, or a publish whose parts stopped before the last
)

// RejectReasons lists the reasons, in the order Stats reports them.
var RejectReasons = []string{RejectMalformed, RejectUnsigned, RejectUnknownKey, RejectBadMAC, RejectParts}

// Defaults of the verification.
const (
	// DefaultMaxHeldBytes bounds the payloads held while the parts of one
	// publish arrive; past it, what is held is applied as one batch and the
	// rest follows, so a statement of millions of rows costs bounded memory
	// (and is not applied all at once).
	DefaultMaxHeldBytes = 64 << 20
	// keyringReadTimeout bounds reading the keys for an unknown kid.
	keyringReadTimeout = 5 * time.Second
	// rejectWarnEvery spaces out the warnings about dropped payloads.
	rejectWarnEvery = 10 * time.Second
)

// auth decodes, authenticates and assembles payloads, one at a time (the
// listener hands it notifications in arrival order, from either of its two
// goroutines, never both at once; the mutex makes that safe to rely on).
type auth struct {
	mu   sync.Mutex
	ring *mirror.Keyring     // the keyring macs were built for
	macs map[int64]hash.Hash // a keyed HMAC per key of ring
	held *assembly           // the parts of one publish received so far
	// kept is the last payload dropped for a key newer than the keyring
	// read before it arrived; check verifies it after the next read.
	kept *keptDrop
	// keptKids are the key ids of the payloads dropped like kept since the
	// last check, those at most maxRotationsAhead above the newest held: a
	// forger who replaces kept with junk under the same id cannot hide that
	// a payload under a key the next read reveals was dropped.
	keptKids map[int64]struct{}
	check    *time.Timer // runs checkDropped; nil when none is due
	stopped  bool        // run returned (Close): schedule no check
}

// keptDrop is a payload dropped for an unknown key newer than those held,
// kept (one, at most a payload's 8000 bytes) to tell, once the keyring has
// been read again, whether it was genuine: a change the mirror missed.
type keptDrop struct {
	h     Header    // its header; h.Signed holds the whole signed text
	xid   uint64    // the transaction it claims, for the log
	at    time.Time // when it arrived
	tries int       // checks that found no keyring read after at
}

// rejectIdx is the index of reason's counter: its place in RejectReasons.
func rejectIdx(reason string) int { return slices.Index(RejectReasons, reason) }

// assembly is the verified parts 1..next-1 of one publish.
type assembly struct {
	xid   uint64
	parts int
	next  int
	bytes int
	batch mirror.Batch
}

// mac returns the keyed HMAC of key kid of ring, built once per keyring.
func (a *auth) mac(ring *mirror.Keyring, kid int64, key []byte) hash.Hash {
	if a.ring != ring {
		a.ring, a.macs = ring, map[int64]hash.Hash{}
	}
	m, ok := a.macs[kid]
	if !ok {
		m = hmac.New(sha256.New, key)
		a.macs[kid] = m
	}
	return m
}

// errDeferred means a payload needs the keyring read again, which only the
// apply loop does.
var errDeferred = errors.New("needs the keyring read")

// admit takes one payload: it returns a batch ready to apply (ready), or
// nothing when the payload is a part held until its publish is complete
// or was dropped (and reported). mayRead allows reading the keyring for a
// key the sidecar does not know; without it such a payload is left
// untouched and errDeferred returned.
func (l *Listener) admit(payload string, mayRead bool) (b mirror.Batch, ready bool, err error) {
	a := &l.auth
	a.mu.Lock()
	defer a.mu.Unlock()
	h, body, err := decodeHeader(payload)
	if err != nil {
		l.dropHeld("a malformed payload arrived")
		l.reject(RejectMalformed, err, len(payload))
		return b, false, nil
	}
	b.SentAt, b.Xid = h.sentAt, h.xid
	if h.Format == 1 {
		if _, err := decodeBody(body, &b, false); err != nil {
			l.dropHeld("a malformed payload arrived")
			l.reject(RejectMalformed, err, len(payload))
			return b, false, nil
		}
		l.dropHeld("an unsigned payload arrived")
		if sentinelsOnly(b.Changes) {
			// Unsigned, so its transaction id is whatever the sender
			// claimed (a sidecar's own sentinels claim none): keep it out
			// of the write tickets, which it could otherwise convince that
			// a write's echo arrived.
			b.Xid = 0
			return b, true, nil
		}
		switch ok, ring := l.acceptUnsigned(); {
		case ok:
			return b, true, nil
		case ring == nil:
			// Before the first load has read the keys: whether the
			// triggers sign is unknown, and the load's snapshot, taken
			// after this payload was committed, includes its effect.
			l.rejected[rejectIdx(RejectUnsigned)].Add(1)
			l.Logger.Debug("dropped an unsigned notification that arrived before the first load", "bytes", len(payload))
		default:
			l.reject(RejectUnsigned, errors.New("unsigned payload (format 1) refused by --unsigned-payloads"), len(payload))
		}
		return b, false, nil
	}
	ring := l.Sink.Keyring()
	key := ring.Key(h.KeyID)
	if key == nil {
		if !mayRead {
			return b, false, errDeferred
		}
		arrived := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), keyringReadTimeout)
		ring = l.Sink.RefreshKeyring(ctx)
		cancel()
		if key = ring.Key(h.KeyID); key == nil {
			l.dropHeld("a payload under an unknown key arrived")
			l.droppedUnknownKey(&h, ring, arrived)
			l.reject(RejectUnknownKey, fmt.Errorf("payload signed with key %d, which is not among the keys read (pending, current, previous)", h.KeyID), len(payload))
			return b, false, nil
		}
	}
	if !h.verifyWith(a.mac(ring, h.KeyID, key)) {
		l.dropHeld("a payload with a bad MAC arrived")
		l.reject(RejectBadMAC, fmt.Errorf("MAC does not verify under key %d", h.KeyID), len(payload))
		return b, false, nil
	}
	if ring.Pending != 0 && h.KeyID == ring.Pending {
		// A rotation made the pending key current: read the keys again
		// (off this path), to hold the next pending key before a second
		// rotation uses it, and to stop accepting the key it deleted.
		l.scheduleCheck(ring)
	}
	if _, err := decodeBody(body, &b, true); err != nil {
		// Authentic but undecodable: a bug, which the repair covers.
		l.dropHeld("an undecodable payload arrived")
		l.reject(RejectMalformed, err, len(payload))
		return b, false, nil
	}
	b.MACs = []uint64{h.MACPrefix()}
	return l.assemble(&h.Header, b, len(payload))
}

// droppedUnknownKey deals with a payload dropped because the keyring ring,
// read at or before its arrival, lacks its key; a.mu is held.
//
// A key id at or below the newest held can never verify (ids only grow, and
// a key older than the previous one is deleted): nothing to do. A higher one
// may be a genuine key the sidecar has not read yet, when the keyring was
// read too recently to be read again (a forger can choose that moment by
// naming a made-up key just before): its MAC goes to the replay guard, so a
// replay of it after the key is read is refused, and the payload is kept
// until the keyring is read again; if it verifies then, a genuine change
// was missed, and the sink resyncs at once, as for a lost notification,
// instead of waiting for the spaced-out repair reload.
func (l *Listener) droppedUnknownKey(h *parsedHeader, ring *mirror.Keyring, arrived time.Time) {
	if ring != nil && h.KeyID <= newestKid(ring) {
		return
	}
	l.Sink.RememberDropped(h.MACPrefix())
	if ring != nil && ring.Read.After(arrived) {
		return // read after it arrived, and without its key: not genuine
	}
	a := &l.auth
	a.kept = &keptDrop{h: h.Header, xid: h.xid, at: arrived}
	if ring == nil || h.KeyID-newestKid(ring) <= maxRotationsAhead {
		if a.keptKids == nil {
			a.keptKids = map[int64]struct{}{}
		}
		a.keptKids[h.KeyID] = struct{}{} // at most maxRotationsAhead ids (or a few before the first read)
	}
	l.scheduleCheck(ring)
}

// maxRotationsAhead: the key ids above the newest held that checkDropped
// treats as possibly genuine even when the kept payload does not verify.
const maxRotationsAhead = 4

// scheduleCheck arranges for checkDropped to run once the keyring may be
// read again after ring was (at once if it may now); a.mu is held.
func (l *Listener) scheduleCheck(ring *mirror.Keyring) {
	a := &l.auth
	if a.check != nil || a.stopped {
		return
	}
	wait := mirror.KeyringRereadGap
	if ring != nil {
		wait = time.Until(ring.Read.Add(mirror.KeyringRereadGap))
	}
	a.check = time.AfterFunc(max(wait, 0)+20*time.Millisecond, l.checkDropped)
}

// maxKeptChecks bounds the checks of a kept payload that find no keyring
// read after its arrival (the database unreachable): the repair reload its
// drop asked for covers it then.
const maxKeptChecks = 5

// checkDropped reads the keyring again (it is rate-limited) and verifies
// the kept payload, if any, under it: a genuine one means its change was
// missed.
func (l *Listener) checkDropped() {
	ctx, cancel := context.WithTimeout(context.Background(), keyringReadTimeout)
	ring := l.Sink.RefreshKeyring(ctx)
	cancel()
	a := &l.auth
	a.mu.Lock()
	a.check = nil
	k := a.kept
	if k == nil || a.stopped {
		a.mu.Unlock()
		return
	}
	if ring == nil || !ring.Read.After(k.at) {
		if k.tries++; k.tries < maxKeptChecks {
			l.scheduleCheck(ring)
		} else {
			a.kept, a.keptKids = nil, nil
		}
		a.mu.Unlock()
		return
	}
	a.kept = nil
	key := ring.Key(k.h.KeyID)
	genuine := key != nil && k.h.verifyWith(a.mac(ring, k.h.KeyID, key))
	var revealed []int64
	for kid := range a.keptKids {
		if ring.Key(kid) != nil {
			revealed = append(revealed, kid)
		}
	}
	a.keptKids = nil
	a.mu.Unlock()
	switch {
	case genuine:
		l.genuineDrops.Add(1)
		l.Logger.Warn("a notification dropped because its key had not been read yet was genuine: its change was missed; resyncing",
			"kid", k.h.KeyID, "xid", k.xid)
		l.Sink.StreamGap("a genuine notification under a key not read yet was dropped")
	case len(revealed) > 0:
		// The last such payload was junk, but one before it named a key
		// that exists: it may have been genuine. Once per key learnt this
		// way (payloads under it are no longer dropped), so junk cannot
		// make this frequent.
		l.Logger.Warn("notifications under a key not read yet were dropped, and the key exists; resyncing", "kids", revealed)
		l.Sink.StreamGap("notifications under a key not read yet were dropped")
	}
}

// stopChecks cancels a pending check, when run returns.
func (l *Listener) stopChecks() {
	a := &l.auth
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped = true
	a.kept, a.keptKids = nil, nil
	if a.check != nil {
		a.check.Stop()
		a.check = nil
	}
}

// newestKid returns the highest key id of ring.
func newestKid(ring *mirror.Keyring) int64 {
	var n int64
	for _, k := range ring.Keys {
		n = max(n, k.ID)
	}
	return n
}

// assemble adds a verified part; a.mu is held. The parts of one publish
// arrive together and in order (Postgres delivers a transaction's
// notifications contiguously), so anything else means parts were lost or a
// part was replayed on its own: dropped.
func (l *Listener) assemble(h *Header, b mirror.Batch, size int) (mirror.Batch, bool, error) {
	a := &l.auth
	if h.Part == 1 {
		l.dropHeld("a new publish began")
		if h.Parts == 1 {
			return b, true, nil
		}
		a.held = &assembly{xid: b.Xid, parts: h.Parts, next: 2, bytes: size, batch: b}
		return mirror.Batch{}, false, nil
	}
	held := a.held
	if held == nil || held.xid != b.Xid || held.parts != h.Parts || held.next != h.Part {
		l.dropHeld("a part out of sequence arrived")
		l.reject(RejectParts, fmt.Errorf("part %d/%d of transaction %d out of sequence", h.Part, h.Parts, b.Xid), size)
		return mirror.Batch{}, false, nil
	}
	held.next++
	held.bytes += size
	held.batch.Changes = append(held.batch.Changes, b.Changes...)
	held.batch.MACs = append(held.batch.MACs, b.MACs...)
	if h.Part == h.Parts {
		a.held = nil
		return held.batch, true, nil
	}
	if held.bytes > l.MaxHeldBytes {
		// Too large to hold whole: apply what is held, keep the sequence.
		out := held.batch
		held.batch = mirror.Batch{SentAt: out.SentAt, Xid: out.Xid}
		held.bytes = 0
		return out, true, nil
	}
	return mirror.Batch{}, false, nil
}

// dropHeld abandons held parts, when something else arrives before the
// publish's last part: they can never be completed.
func (l *Listener) dropHeld(why string) {
	if held := l.auth.held; held != nil {
		l.auth.held = nil
		l.reject(RejectParts, fmt.Errorf("%s before part %d/%d of transaction %d", why, held.next, held.parts, held.xid), held.bytes)
	}
}

// resetHeld forgets held parts after a gap in the stream, which resyncs anyway.
func (l *Listener) resetHeld() {
	l.auth.mu.Lock()
	l.auth.held = nil
	l.auth.mu.Unlock()
}

// acceptUnsigned applies the policy to a payload of format 1 with changes,
// and returns the keyring it consulted (nil before the first load read it).
func (l *Listener) acceptUnsigned() (bool, *mirror.Keyring) {
	ring := l.Sink.Keyring()
	switch l.Unsigned {
	case UnsignedAccept:
		return true, ring
	case UnsignedReject:
		return false, ring
	}
	return ring != nil && !ring.Signed, ring
}

// sentinelsOnly reports whether changes are sentinel records only: what a
// sidecar sends itself (reload sentinels, the delivery probe), a random
// token that changes nothing.
func sentinelsOnly(changes []mirror.Change) bool {
	for _, c := range changes {
		if c.Op != mirror.OpSentinel {
			return false
		}
	}
	return true
}

// reject counts a dropped payload, warns (at most every 10 s, with the
// count since the last warning), and asks the sink for a repair, which the
// sink coalesces and spaces out: a dropped payload never resets a reload in
// progress, and a stream of junk costs little.
func (l *Listener) reject(reason string, err error, size int) {
	l.rejected[rejectIdx(reason)].Add(1)
	if reason == RejectMalformed {
		l.decodeErrors.Add(1)
	}
	n := l.rejectedSinceWarn.Add(1)
	now := time.Now().UnixNano()
	last := l.lastRejectWarn.Load()
	if now-last >= int64(rejectWarnEvery) && l.lastRejectWarn.CompareAndSwap(last, now) {
		l.rejectedSinceWarn.Add(-n)
		l.Logger.Warn("dropped a notification; a repair reload is scheduled", "reason", reason, "error", err,
			"bytes", size, "dropped_since_last_warning", n)
	} else {
		l.Logger.Debug("dropped a notification", "reason", reason, "error", err, "bytes", size)
	}
	l.Sink.RequestRepair("notification dropped: " + reason)
}
