package pgstore

// Transactions of several write commands: MULTI/EXEC and scripts. See Tx.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/lib/pq"

	"pgmirror/mirror"
)

// Tx is one Postgres transaction that holds the advisory locks of a set of
// keys, declared at Begin and taken in the one order every writer takes
// them (so it deadlocks neither with the Writer's batches nor with another
// Tx), runs any number of reads and write commands under them, and commits
// publishing the final state of every key it changed as ONE unit: every
// sidecar applies the whole transaction at once (migrations/0011_tx.sql),
// and this sidecar's mirror applies it before Commit returns.
//
// Each Write runs as pgmirror_write does one command: in its own
// subtransaction, so a command that fails (INCR of a non-integer) fails
// alone and the others stay. Its result is final but its changes are not
// visible to other sessions or sidecars until Commit. A Tx is used by one
// goroutine; it must end with Commit or Rollback. While it is open, the
// Writer's group commit holds back commands on its keys (they wait in the
// queue, not in Postgres).
type Tx struct {
	w       *Writer
	conn    *sql.Conn
	tx      *sql.Tx
	keys    map[string]bool // declared (locked)
	lockSet []string
	changes []mirror.Change
	changed []string
	ticket  *mirror.WriteTicket // taken before the locks, as a batch takes it before its statement
	dead    error               // a statement failed: the transaction is rolled back
	done    bool
	// channels and messages are the pub/sub messages of the transaction
	// (Publish), sent at Commit after its changes (channels.go).
	channels []string
	messages [][]byte
}

// TxRow is a key's row as a Tx reads it.
type TxRow struct {
	Found   bool  // a row exists (Live says whether it has expired)
	Live    bool  // the row exists and has not expired by clock_timestamp()
	Version int64 // the row's version
	Expires int64 // epoch microseconds, mirror.NoExpiry for none
	PTTL    int64 // milliseconds left by clock_timestamp() (Live rows), -1 for no expiry
	Value   []byte
}

// ErrTxUndeclared is the error of a Tx command on a key not declared at Begin.
var ErrTxUndeclared = errors.New("key not declared to the transaction")

// Begin starts a transaction on a connection of its own and takes the
// advisory locks of keys (may be empty; duplicates are fine), waiting for
// batches and transactions that hold any of them. ctx bounds the wait and
// every later statement of the Tx that is given no context of its own.
func (w *Writer) Begin(ctx context.Context, keys []string) (*Tx, error) {
	ks := slices.Clone(keys)
	slices.Sort(ks)
	ks = slices.Compact(ks)
	t := &Tx{w: w, keys: make(map[string]bool, len(ks)), lockSet: ks}
	for _, k := range ks {
		t.keys[k] = true
	}
	w.hold(ks, 1)
	t.ticket = w.apply.BeginWrite()
	conn, err := w.pingedConn(ctx)
	if err != nil {
		w.hold(ks, -1)
		w.apply.AbandonWrite(t.ticket)
		return nil, &writeError{kind: mirror.ErrWriteUnavailable, reason: err.Error()}
	}
	t.conn = conn
	if t.tx, err = conn.BeginTx(ctx, nil); err == nil {
		_, err = t.tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(l)
			FROM (SELECT DISTINCT pgmirror_key_lock(k) AS l FROM unnest($1::text[]) k ORDER BY 1) s`, pq.Array(ks))
	}
	if err != nil {
		t.release()
		return nil, &writeError{kind: mirror.ErrWriteUnavailable, reason: oneLine(failed(err).err.Error())}
	}
	return t, nil
}

// hold adds (d = 1) or removes (d = -1) keys held by a Tx to the keys in
// flight, so the group commit does not start batches that would wait for them.
func (w *Writer) hold(keys []string, d int) {
	w.mu.Lock()
	for _, k := range keys {
		if w.inflight[k] += d; w.inflight[k] <= 0 {
			delete(w.inflight, k)
		}
	}
	w.mu.Unlock()
	if d < 0 {
		w.signal()
	}
}

// Declared reports whether key was declared at Begin.
func (t *Tx) Declared(key string) bool { return t.keys[key] }

// usable returns why no statement can run on t, or nil.
func (t *Tx) usable() error {
	if t.done {
		return errors.New("pgstore: transaction already ended")
	}
	if t.dead != nil {
		return t.dead
	}
	return nil
}

// fail records a statement's failure: the transaction is lost.
func (t *Tx) fail(err error) error {
	t.dead = &writeError{kind: mirror.ErrWriteUnavailable, reason: "transaction failed, nothing was written: " +
		oneLine(failed(err).err.Error())}
	return t.dead
}

// Write runs one write command in the transaction. Like Writer.Write, a
// command that fails alone returns its error in the result (res.Err); an
// error return means the transaction failed (nothing will commit: roll it
// back) or a key was not declared (ErrTxUndeclared; the Tx is unharmed).
func (t *Tx) Write(ctx context.Context, op mirror.WriteOp) (mirror.WriteResult, error) {
	if err := t.usable(); err != nil {
		return mirror.WriteResult{}, err
	}
	if msg := checkOp(&op); msg != "" {
		return mirror.WriteResult{Err: errors.New(msg)}, nil
	}
	for _, k := range op.Keys {
		if !t.keys[k] {
			return mirror.WriteResult{}, fmt.Errorf("%w: %q", ErrTxUndeclared, k)
		}
	}
	r := &writeReq{op: op, cost: 1}
	for _, v := range op.Values {
		r.size += len(v)
	}
	batch := []*writeReq{r}
	ops, vals, refs, err := encodeBatch(batch)
	if err != nil {
		return mirror.WriteResult{}, err
	}
	var maxValue any
	if t.w.opts.MaxValueSize > 0 {
		maxValue = t.w.opts.MaxValueSize
	}
	rows, err := t.tx.QueryContext(ctx, `SELECT cmd, rec, reply, reply_int, reply_bulk, reply_err,
		st_key, st_version, st_expires, st_deleted, st_value, xact_id
		FROM pgmirror_tx_write($1::jsonb, $2::bytea, $3::bigint)`, ops, vals, maxValue)
	if err != nil {
		return mirror.WriteResult{}, t.fail(err)
	}
	out, err := readOutcome(rows, batch, refs)
	if err != nil {
		return mirror.WriteResult{}, t.fail(err)
	}
	t.changes = append(t.changes, out.changes...)
	for _, c := range out.changes {
		t.changed = append(t.changed, c.Key)
	}
	return out.results[0], nil
}

// Rows reads the rows of keys (declared ones) as they are now, locking
// them (FOR UPDATE): a writer that takes no advisory lock (plain SQL) and
// holds one of them is waited for, and its change is read. Expired rows are
// returned with Live false; keys without a row are missing from the map.
func (t *Tx) Rows(ctx context.Context, keys []string) (map[string]TxRow, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if !t.keys[k] {
			return nil, fmt.Errorf("%w: %q", ErrTxUndeclared, k)
		}
	}
	rows, err := t.tx.QueryContext(ctx, `SELECT key, value, version, `+expiryExpr+`,
		expires_at IS NULL OR expires_at > clock_timestamp(),
		CASE WHEN expires_at IS NULL OR expires_at = 'infinity'::timestamptz THEN -1
		     ELSE greatest(floor(extract(epoch FROM expires_at - clock_timestamp()) * 1000), 0)::bigint END
		FROM cache_entries WHERE key = ANY($1) ORDER BY key FOR UPDATE`, pq.Array(keys))
	if err != nil {
		return nil, t.fail(err)
	}
	defer rows.Close()
	out := make(map[string]TxRow, len(keys))
	for rows.Next() {
		var (
			k   string
			r   TxRow
			exp sql.NullInt64
		)
		if err := rows.Scan(&k, &r.Value, &r.Version, &exp, &r.Live, &r.PTTL); err != nil {
			return nil, t.fail(err)
		}
		r.Found, r.Expires = true, expiry(exp)
		if r.Value == nil {
			r.Value = []byte{}
		}
		out[k] = r
	}
	if err := rows.Err(); err != nil {
		return nil, t.fail(err)
	}
	return out, nil
}

// Read returns a declared key's row (see Rows): the transaction's own
// earlier writes included.
func (t *Tx) Read(ctx context.Context, key string) (TxRow, error) {
	rows, err := t.Rows(ctx, []string{key})
	if err != nil {
		return TxRow{}, err
	}
	return rows[key], nil
}

// Commit publishes the final state of every key the transaction changed
// as one unit, commits, and applies the changes to the mirror before
// returning. A transaction that changed nothing commits without
// publishing. The error wraps mirror.ErrWriteUnavailable when nothing was
// committed, mirror.ErrWriteUnknown when the outcome is unknown (the keys
// are then re-read, as after a batch's unknown outcome).
func (t *Tx) Commit(ctx context.Context) error {
	if err := t.usable(); err != nil {
		t.Rollback()
		return err
	}
	defer t.release()
	if len(t.changed) == 0 {
		t.w.apply.AbandonWrite(t.ticket)
		t.ticket = nil
		if err := t.sendMessages(ctx); err != nil {
			return err
		}
		if err := t.tx.Commit(); err != nil {
			return &writeError{kind: mirror.ErrWriteUnavailable, reason: oneLine(err.Error())}
		}
		return nil
	}
	ticket := t.ticket
	t.ticket = nil // ended here
	var xid sql.NullInt64
	err := t.tx.QueryRowContext(ctx, `SELECT pgmirror_tx_publish($1::text[])`, pq.Array(t.changed)).Scan(&xid)
	if err != nil {
		t.w.apply.AbandonWrite(ticket)
		return &writeError{kind: mirror.ErrWriteUnavailable, reason: "transaction failed, nothing was written: " +
			oneLine(failed(err).err.Error())}
	}
	if err := t.sendMessages(ctx); err != nil {
		t.w.apply.AbandonWrite(ticket)
		return err
	}
	if err := t.tx.Commit(); err != nil {
		t.w.apply.AbandonWrite(ticket)
		out := failed(err)
		if !out.unknown {
			return &writeError{kind: mirror.ErrWriteUnavailable, reason: oneLine(err.Error())}
		}
		t.w.unknown.Add(1)
		batch := []*writeReq{{op: mirror.WriteOp{Keys: t.changed}}}
		t.w.reread(batch)
		return &writeError{kind: mirror.ErrWriteUnknown, reason: "connection to Postgres failed while committing: " +
			oneLine(err.Error())}
	}
	t.w.apply.ApplyWrite(ticket, uint64(xid.Int64), t.changes)
	t.w.settle(ticket, uint64(xid.Int64))
	return nil
}

// Rollback ends the transaction without committing anything; after Commit
// (or a second time) it does nothing.
func (t *Tx) Rollback() {
	if t.done {
		return
	}
	t.release()
}

// release ends the transaction (rolled back unless committed), returns the
// connection and lets the group commit take the keys again.
func (t *Tx) release() {
	if t.done {
		return
	}
	t.done = true
	if t.ticket != nil {
		t.w.apply.AbandonWrite(t.ticket)
	}
	if t.tx != nil {
		_ = t.tx.Rollback() // after Commit: sql.ErrTxDone
	}
	_ = t.conn.Close()
	t.w.hold(t.lockSet, -1)
}
