// Package mirror is pgmirror's domain: the entries a sidecar serves, their
// versions and expiry, and the rules by which changes from Postgres are
// applied to the in-memory mirror. It reaches Postgres only through the
// interfaces it defines (Source, Loader, Writer), and tells the components
// that follow its content what changed through one registration (Handle).
package mirror

import "math"

// NoExpiry is the Expires value of an entry that never expires.
const NoExpiry int64 = math.MaxInt64

// MaxKeyBytes is the longest key, in bytes: cache_entries' check constraint
// (cache_entries_key_max_4000_bytes) refuses longer ones, so the socket
// server and the notification decoder refuse them too.
const MaxKeyBytes = 4000

// Op is the kind of a change notified by Postgres.
type Op byte

// The kinds of change. Their byte values are the record tags of the
// notification payload (see triggers.sql).
const (
	OpSet      Op = 'S' // key now holds Value
	OpFetch    Op = 'F' // key changed; its value was too large to travel and must be fetched
	OpDelete   Op = 'D' // key deleted
	OpTruncate Op = 'T' // every key deleted
	OpSentinel Op = 'N' // no change: a marker a sidecar sends itself (Token)
	OpLoaders  Op = 'L' // cache_loaders changed: reload the loaders
	// OpFlush: every key that starts with Key was deleted (FLUSHDB), but
	// for the keys under a prefix in Keep (copy-mode watches' entries).
	OpFlush Op = 'P'
	// OpMessage: an application's pub/sub message (PUBLISH, or
	// pgmirror_publish_channel from SQL): Key is the channel, Value the
	// message. It changes no key; the mirror hands it to its handlers
	// (KindMessage) once the batch is applied.
	OpMessage Op = 'M'
)

// String names the op for logs and metrics.
func (o Op) String() string {
	switch o {
	case OpSet:
		return "set"
	case OpFetch:
		return "fetch"
	case OpDelete:
		return "delete"
	case OpTruncate:
		return "truncate"
	case OpSentinel:
		return "sentinel"
	case OpLoaders:
		return "loaders"
	case OpFlush:
		return "flush"
	case OpMessage:
		return "message"
	}
	return "unknown"
}

// Batch is the changes of one notification: one statement's, or part of them.
type Batch struct {
	// SentAt is the writer's clock_timestamp() when the payload was built, in
	// epoch microseconds; the propagation lag is measured from it.
	SentAt int64
	// Xid is the writing transaction's id (pg_current_xact_id()); 0 for a
	// sentinel. It tells whether the changes are visible in a snapshot.
	Xid uint64
	// Changes in the order the payload lists them.
	Changes []Change
	// MACs identify the payloads of a batch whose signature was verified
	// (format 2): the first 8 bytes of each one's MAC. The mirror drops a
	// batch holding one it has applied since its last reload: a replay.
	// Nil for an unsigned batch.
	MACs []uint64
}

// Change is one committed change of cache_entries, as notified.
type Change struct {
	Op      Op
	Version int64    // identifies the write; never orders writes (commit order does)
	Key     string   // empty for OpTruncate and OpSentinel; OpFlush: the prefix
	Keep    []string // OpFlush: prefixes of keys the flush left in place
	Value   []byte   // OpSet only
	Expires int64    // OpSet and OpFetch: epoch microseconds, or NoExpiry
	Token   string   // OpSentinel only
	// Origin is, in a change of this sidecar's write (ApplyWrite), its
	// WriteOp.Origin; 0 in a notified change. Events carry it (KeyChange).
	Origin uint64
}
