package mirror

import (
	"context"
	"slices"
	"time"
)

// Row is one row of cache_entries read outside the notification stream.
type Row struct {
	Key     string
	Value   []byte
	Version int64
	Expires int64 // epoch microseconds, or NoExpiry
}

// Visibility says which transactions a snapshot saw, as pg_current_snapshot()
// reports it: every xid below Xmin, and those below Xmax but not in Xip.
type Visibility struct {
	Xmin, Xmax uint64
	Xip        []uint64 // in progress when the snapshot was taken; sorted
}

// Sees reports whether the snapshot includes the committed transaction xid.
func (v Visibility) Sees(xid uint64) bool {
	if xid < v.Xmin {
		return true
	}
	if xid >= v.Xmax {
		return false
	}
	_, found := slices.BinarySearch(v.Xip, xid)
	return !found
}

// Loader computes keys that have no row, with the SQL of cache_loaders.
type Loader interface {
	// Covers reports whether a loader computes key.
	Covers(key string) bool
	// Load computes key, stores it in cache_entries, applies what it
	// stored to the mirror through to (the mirror passes itself), and
	// returns it; found is false when the loader found no row.
	Load(ctx context.Context, to WriteApplier, key string) (value []byte, found bool, err error)
}

// WriteApplier is how a write of this sidecar that did not come through
// the Writer (a loader's store, a refresh) reaches the mirror: a ticket
// taken before its transaction is sent, then ApplyWrite once it committed,
// or AbandonWrite if it did not (or stored nothing). *Mirror implements it.
type WriteApplier interface {
	BeginWrite() *WriteTicket
	AbandonWrite(t *WriteTicket)
	ApplyWrite(t *WriteTicket, xid uint64, changes []Change)
}

var _ WriteApplier = (*Mirror)(nil)

// Source is what the mirror needs from Postgres. The package pgstore
// implements it; the package's unit tests fake it.
type Source interface {
	// Snapshot reads every row of cache_entries in one REPEATABLE READ
	// snapshot: it first reports the snapshot's visibility (an error from
	// visible ends the snapshot and is returned), then passes each row to
	// row (stopping at the first error row returns). Rows come in no
	// particular order; a row's Value is not retained by the source.
	Snapshot(ctx context.Context, visible func(Visibility) error, row func(Row) error) error
	// RangeSnapshot opens one REPEATABLE READ snapshot, reports its
	// visibility, computes the BucketSum of each of n key ranges (Bucket,
	// RowHash), asks pick which ranges to read, and passes their rows, read
	// in the same snapshot, to row.
	RangeSnapshot(ctx context.Context, n int, visible func(Visibility) error,
		pick func(sums []BucketSum) ([]int, error), row func(Row) error) error
	// Fetch returns the current rows of keys; absent keys are left out.
	Fetch(ctx context.Context, keys []string) ([]Row, error)
	// Sentinel commits a notification carrying token on the pgmirror
	// channel, so that its arrival proves every change committed before the
	// call has been delivered.
	Sentinel(ctx context.Context, token string) error
	// Now returns the database clock, clock_timestamp(), in epoch microseconds.
	Now(ctx context.Context) (int64, error)
	// EstimateRows returns the planner's estimate of the table's rows, for
	// progress reports; a negative number when there is none.
	EstimateRows(ctx context.Context) (int64, error)
	// NextXid returns the server's next transaction id: every transaction
	// that committed before the call has a lower one.
	NextXid(ctx context.Context) (uint64, error)
	// Keyring reads the keys that sign notifications (pgmirror_secret); a
	// database whose triggers do not sign yet gives a Keyring without keys.
	Keyring(ctx context.Context) (Keyring, error)
}

// Key is one of the keys that sign notification payloads: a row of
// pgmirror_secret.
type Key struct {
	ID     int64  // kid
	Secret []byte // the HMAC-SHA256 key
}

// Keyring is what a sidecar knows of the keys that sign notifications.
type Keyring struct {
	// Keys are, newest first, the pending key (which the next rotation
	// makes current, read ahead of its use), the current key, which the
	// triggers sign with, and the one before it, whose payloads may still
	// be on their way after a rotation. Payloads under any other key are
	// refused. A database migrated before 0008 has no pending key.
	Keys []Key
	// Pending is the id of the pending key, 0 when there is none (a
	// database migrated before 0008). A genuine payload under it means a
	// rotation made it current: the sidecar then reads the keys again, to
	// learn the next pending key and forget the one the rotation deleted.
	Pending int64
	// Signed reports that the triggers sign what they send (format 2):
	// pgmirror_secret exists and holds a key.
	Signed bool
	// Read is when the keys were read.
	Read time.Time
}

// Key returns the secret of key id, or nil when the keyring lacks it.
func (k *Keyring) Key(id int64) []byte {
	if k == nil {
		return nil
	}
	for _, key := range k.Keys {
		if key.ID == id {
			return key.Secret
		}
	}
	return nil
}
