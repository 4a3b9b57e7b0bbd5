// Package listener owns pgmirror's connection to the notification stream:
// the payload formats the triggers of triggers.sql write and their decoder,
// the authentication of what arrives, and the pq.Listener lifecycle that
// feeds the changes to the mirror.
//
// Anyone who can connect to the database can NOTIFY on channel pgmirror,
// so nothing is applied for arriving there. A payload of format 2 carries
// an HMAC-SHA256 of its header and body under a key of pgmirror_secret,
// which only pgmirror's roles can read; the listener verifies it (in
// constant time) under the current, the previous or the pending key (the
// one the next rotation switches to), which it gets from its Sink (the
// mirror reads them at every load, and again, at most once a second, for a
// key it does not know or after the first payload under the pending key).
// A payload dropped for a key newer than those held has its MAC remembered
// by the sink, against replays, and is verified once the keys are read
// again: a genuine one means a missed change, and a resync at once. The payloads of one publish are
// numbered part/parts and arrive contiguously: the listener holds parts
// 1..n-1 and hands the sink all n as one batch. Records of kinds it does
// not know are skipped. Replays of authentic payloads are recognised by
// the mirror, which knows its last reload's snapshot.
//
// Format 1 carries no MAC: sidecars send it as sentinels (records N only,
// a random token), which are accepted always, and triggers older than
// migration 0005 send it, which UnsignedPolicy decides about.
//
// A payload that does not decode or authenticate is dropped, counted by
// reason (Stats.Rejected) and reported to the sink as a repair request,
// which the sink coalesces and spaces out: never a gap in the stream, which
// would make a reload in progress start over (so junk cannot keep a sidecar
// loading), and still a reload, should a bug make genuine payloads fail.
package listener
