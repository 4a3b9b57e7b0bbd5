package listener

import "testing"

// TestForgedSentinelCarriesNoXid: a payload of format 1 holding only
// sentinel records is accepted under every --unsigned-payloads policy
// (sidecars send them unsigned), so anyone who can NOTIFY can send one,
// claiming any transaction id. The mirror records the id of every batch it
// applies in the tickets of the writes in flight, and ApplyWrite skips its
// local apply when it sees the write's id followed by another: mallory,
// who sees the ids on the channel, sprays sentinel-only payloads claiming
// the next ids, and a client's SET is answered before the sidecar serves it
// (read-your-writes broken until the echo arrives). The sidecars' own
// sentinels carry id 0; what a forger claims must not reach the mirror.
func TestForgedSentinelCarriesNoXid(t *testing.T) {
	var l Listener
	l.defaults()
	b, ready, err := l.admit("pgm1 0 123456\nN forged", true)
	if err != nil || !ready {
		t.Fatalf("a sentinel-only payload: ready %v, %v; want it accepted", ready, err)
	}
	if b.Xid != 0 {
		t.Fatalf("an unsigned sentinel-only payload reaches the mirror claiming transaction %d; want 0", b.Xid)
	}
}
