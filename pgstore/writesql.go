package pgstore

// The statement side of the Writer: a batch encoded as pgmirror_write's
// arguments, run on a connection Postgres has not closed (and again on
// another one when it was not sent whole), within bounds that hold even when
// the driver hangs, its rows decoded into replies and mirror changes, and,
// after an unknown outcome, the keys re-read.

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/lib/pq"

	"pgmirror/mirror"
	"pgmirror/pgstore/hung"
)

// runBounded runs the batch's statement within Timeout (plus a short
// grace), even when the driver would block on a dead connection.
func (w *Writer) runBounded(batch []*writeReq) outcome {
	if n := w.stuck.Load(); n >= maxStuck {
		return outcome{err: fmt.Errorf("no answer from Postgres: %d earlier batches still wait for it", n)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.opts.Timeout)
	defer cancel()
	var sent atomic.Bool
	out, ok := hung.Aside(ctx, abandonAfter, func() outcome { return w.execute(ctx, batch, &sent) },
		func() { w.stuck.Add(-1) })
	if ok {
		return out
	}
	// The driver ignores the context while it reads from a peer that does
	// not answer. The statement goes on until the driver gives up; its
	// result is dropped.
	w.stuck.Add(1)
	if sent.Load() {
		return outcome{err: fmt.Errorf("no answer from Postgres within %v", w.opts.Timeout), unknown: true}
	}
	return outcome{err: fmt.Errorf("could not connect to Postgres within %v", w.opts.Timeout)}
}

// writeQuery runs a batch; its columns are read by readOutcome.
const writeQuery = `SELECT cmd, rec, reply, reply_int, reply_bulk, reply_err,
	st_key, st_version, st_expires, st_deleted, st_value, xact_id
	FROM pgmirror_write($1::jsonb, $2::bytea, $3::bigint)`

// writeArgs are writeQuery's arguments for one batch.
type writeArgs struct {
	ops      string // jsonb, sent as text: binary jsonb would need a version byte
	vals     []byte // bytea: raw on the Writer's own pool, hex otherwise
	maxValue any    // bigint or NULL
	refs     []opRef
}

// execute runs the batch's statement; sent is set once a byte of it may
// have left. A statement that surely did not reach Postgres whole is sent
// again on another connection.
func (w *Writer) execute(ctx context.Context, batch []*writeReq, sent *atomic.Bool) outcome {
	var (
		a   writeArgs
		err error
	)
	if a.ops, a.vals, a.refs, err = encodeBatch(batch); err != nil {
		return outcome{err: err}
	}
	if w.opts.MaxValueSize > 0 {
		a.maxValue = w.opts.MaxValueSize
	}
	for attempt := 1; ; attempt++ {
		conn, wire, err := w.conn(ctx)
		if err != nil {
			return outcome{err: err}
		}
		out, retry := w.send(ctx, conn, wire, sent, batch, &a)
		if !retry || attempt >= connAttempts || ctx.Err() != nil {
			return out
		}
		sent.Store(false)
		w.log.Debug("a batch was not sent whole before its connection broke; sending it on another",
			"error", oneLine(out.err.Error()))
	}
}

// send runs the statement on conn, then returns conn to the pool; retry
// tells that it failed without reaching Postgres whole (wire, nil outside
// the Writer's own pool, says so).
func (w *Writer) send(ctx context.Context, conn *sql.Conn, wire *wireConn, sent *atomic.Bool, batch []*writeReq,
	a *writeArgs) (out outcome, retry bool) {
	defer conn.Close()
	if wire != nil {
		wire.arm(sent)
	} else {
		sent.Store(true)
	}
	rows, err := conn.QueryContext(ctx, writeQuery, a.ops, a.vals, a.maxValue)
	if err == nil {
		out, err = readOutcome(rows, batch, a.refs)
		_ = rows.Close()
	}
	if wire == nil {
		if err != nil {
			return failed(err), false
		}
		return out, false
	}
	st := wire.disarm()
	w.roundTrips.Add(uint64(st.trips))
	switch {
	case err == nil:
		return out, false
	case st.unsent():
		return outcome{err: fmt.Errorf("connection lost before the batch was sent: %w", err)}, true
	}
	return failed(err), false
}

// writeRow is one row of writeQuery.
type writeRow struct {
	cmd                    sql.NullInt32
	rec                    string
	reply, rErr, key       sql.NullString
	rInt, ver, exp, xactID sql.NullInt64
	rBulk, val             sql.Null[[]byte]
	del                    sql.NullBool
}

// readOutcome reads the rows of a batch's statement to their end, which
// confirms the commit: a reply per command, the changes each made, and
// the transaction's id.
func readOutcome(rows *sql.Rows, batch []*writeReq, refs []opRef) (outcome, error) {
	out := outcome{results: make([]mirror.WriteResult, len(batch))}
	replied := make([]bool, len(batch))
	xactSeen := false
	for rows.Next() {
		var r writeRow
		if err := rows.Scan(&r.cmd, &r.rec, &r.reply, &r.rInt, &r.rBulk, &r.rErr, &r.key, &r.ver, &r.exp, &r.del, &r.val,
			&r.xactID); err != nil {
			return out, err
		}
		if r.rec == "xact" {
			xactSeen = true
			out.xid = uint64(r.xactID.Int64)
			continue
		}
		if !r.cmd.Valid || r.cmd.Int32 < 0 || int(r.cmd.Int32) >= len(refs) {
			return out, fmt.Errorf("pgmirror_write: row for command %v of %d", r.cmd.Int32, len(refs))
		}
		ref := refs[r.cmd.Int32]
		i := ref.req
		if blk := batch[i].blk; blk != nil {
			blk.row(ref.step, &r, &out)
			continue
		}
		res := &out.results[i]
		switch r.rec {
		case "reply":
			replied[i] = true
			r.setReply(res)
		case "flush":
			c := mirror.Change{Op: mirror.OpFlush, Key: r.key.String, Version: r.ver.Int64, Origin: batch[i].op.Origin}
			out.changes = append(out.changes, c)
		case "keep":
			if n := len(out.changes); n > 0 && out.changes[n-1].Op == mirror.OpFlush {
				out.changes[n-1].Keep = append(out.changes[n-1].Keep, r.key.String)
			}
		case "state":
			c := stateChange(&batch[i].op, res, r.key.String, r.ver.Int64, expiry(r.exp), r.del.Bool, r.val)
			c.Origin = batch[i].op.Origin
			res.States = append(res.States, c)
			out.changes = append(out.changes, c)
		}
	}
	if err := rows.Err(); err != nil {
		return out, err
	}
	// Close reads up to ReadyForQuery; only then is the commit confirmed.
	if err := rows.Close(); err != nil {
		return out, err
	}
	if !xactSeen {
		return out, errors.New("pgmirror_write returned no transaction row")
	}
	for i, r := range batch {
		if r.blk != nil {
			if err := r.blk.ended(); err != nil {
				return out, err
			}
			continue
		}
		if !replied[i] {
			out.results[i] = mirror.WriteResult{Err: errors.New("ERR internal error: no reply for the command")}
		}
	}
	return out, nil
}

// setReply sets res's reply from a reply row.
func (r *writeRow) setReply(res *mirror.WriteResult) {
	switch r.reply.String {
	case "ok":
		res.Reply = mirror.ReplyOK
	case "nil":
		res.Reply = mirror.ReplyNil
	case "int":
		res.Reply, res.Int = mirror.ReplyInt, r.rInt.Int64
	case "bulk":
		res.Reply, res.Bulk = mirror.ReplyBulk, r.rBulk.V
		if res.Bulk == nil {
			res.Bulk = []byte{}
		}
	default:
		res.Err = errors.New(oneLine(r.rErr.String))
		if !r.rErr.Valid {
			res.Err = fmt.Errorf("ERR pgmirror_write replied %q", r.reply.String)
		}
	}
}

// failed classifies an error of the statement: an error Postgres answered
// means the statement, its own transaction, was rolled back; anything else
// (connection lost, driver gave up on the context) leaves the commit unknown.
func failed(err error) outcome {
	var pe *pq.Error
	if errors.As(err, &pe) {
		switch pe.Code {
		case "42883", "42P01": // undefined_function, undefined_table
			err = fmt.Errorf("%w (run `pgmirror migrate`)", err)
		case "42501": // insufficient_privilege
			err = fmt.Errorf("%w (the sidecar's role must be a member of pgmirror_sidecar: GRANT pgmirror_sidecar TO <role>)", err)
		}
		return outcome{err: err}
	}
	if errors.Is(err, driver.ErrBadConn) {
		err = errors.New("connection lost")
	}
	return outcome{err: err, unknown: true}
}

// conn returns a connection for a batch that Postgres has not closed: on
// the Writer's own pool, one whose socket has nothing waiting (and its
// socket, to watch the statement); on db, one that answered a ping. A
// failure before this point means the batch was surely not run.
func (w *Writer) conn(ctx context.Context) (*sql.Conn, *wireConn, error) {
	if w.pool == nil {
		c, err := w.pingedConn(ctx)
		return c, nil, err
	}
	c, wire, err := w.pool.take(ctx, &w.staleConns)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to Postgres: %w", err)
	}
	return c, wire, nil
}

// pingedConn returns a connection of db that answered a ping, for the
// batches without a pool of their own and for transactions (which hold
// their connection as long as a client keeps them open, so they do not
// take the batches' own).
func (w *Writer) pingedConn(ctx context.Context) (*sql.Conn, error) {
	var err error
	for range connAttempts {
		var c *sql.Conn
		if c, err = w.db.Conn(ctx); err != nil {
			return nil, fmt.Errorf("connect to Postgres: %w", err)
		}
		if err = c.PingContext(ctx); err == nil {
			return c, nil
		}
		// A failed ping has marked the connection bad; the pool drops it.
		_ = c.Close()
		if ctx.Err() != nil {
			break
		}
	}
	if errors.Is(err, driver.ErrBadConn) {
		err = errors.New("every connection tried was broken")
	}
	return nil, fmt.Errorf("connect to Postgres: %w", err)
}

// stateChange is the mirror change of one state row of op.
func stateChange(op *mirror.WriteOp, res *mirror.WriteResult, key string, version, expires int64,
	deleted bool, value sql.Null[[]byte]) mirror.Change {
	if deleted {
		return mirror.Change{Op: mirror.OpDelete, Key: key, Version: version}
	}
	c := mirror.Change{Op: mirror.OpSet, Key: key, Version: version, Expires: expires}
	switch {
	case value.Valid:
		c.Value = value.V
	case op.Kind == mirror.WriteSet:
		c.Value = op.Values[0]
	case op.Kind == mirror.WriteMSet || op.Kind == mirror.WriteMSetNX:
		// The last value given for the key, as MSET stores it.
		c.Op = mirror.OpFetch
		for i := len(op.Keys) - 1; i >= 0; i-- {
			if op.Keys[i] == key {
				c.Op, c.Value = mirror.OpSet, op.Values[i]
				break
			}
		}
	case op.Kind == mirror.WriteGetEx && res.Reply == mirror.ReplyBulk:
		c.Value = res.Bulk
	default:
		c.Op = mirror.OpFetch
	}
	if c.Op == mirror.OpSet && c.Value == nil {
		c.Value = []byte{}
	}
	return c
}

// opJSON is one command as pgmirror_write reads it.
type opJSON struct {
	K    string      `json:"k"`
	Keys []string    `json:"keys"`
	V    [][2]int64  `json:"v,omitempty"`
	I    *int64      `json:"i,omitempty"`
	F    *string     `json:"f,omitempty"`
	E    string      `json:"e,omitempty"`
	MS   *int64      `json:"ms,omitempty"`
	C    string      `json:"c,omitempty"`
	G    bool        `json:"g,omitempty"`
	P    *string     `json:"p,omitempty"`
	O    string      `json:"o,omitempty"`
	N    int         `json:"n,omitempty"` // a block's head: its commands
	W    []watchJSON `json:"w,omitempty"` // a block's head: its watched keys
}

var (
	kindNames = map[mirror.WriteKind]string{
		mirror.WriteSet: "set", mirror.WriteGetDel: "getdel", mirror.WriteGetEx: "getex",
		mirror.WriteMSet: "mset", mirror.WriteMSetNX: "msetnx", mirror.WriteIncrBy: "incrby",
		mirror.WriteIncrByFloat: "incrbyfloat", mirror.WriteAppend: "append", mirror.WriteDel: "del",
		mirror.WriteExpire: "expire", mirror.WritePersist: "persist", mirror.WriteFlush: "flush",
		mirror.WriteSetRange: "setrange", mirror.WriteSetBit: "setbit", mirror.WriteBitOp: "bitop",
		mirror.WriteRename: "rename", mirror.WriteRenameNX: "renamenx", mirror.WriteCopy: "copy",
	}
	expiryNames = map[mirror.ExpiryMode]string{
		mirror.ExpiryNone: "", mirror.ExpiryIn: "in", mirror.ExpiryAt: "at",
		mirror.ExpiryKeep: "keep", mirror.ExpiryPersist: "persist",
	}
	condNames = map[mirror.Condition]string{
		mirror.CondNone: "", mirror.CondNX: "nx", mirror.CondXX: "xx", mirror.CondGT: "gt", mirror.CondLT: "lt",
		mirror.CondXXLT: "xxlt",
	}
)

// opRef is what one command of a batch's statement is: request req of the
// batch, and for a block its step (-1 for a single command or a block's head).
type opRef struct{ req, step int }

// encodeBatch returns the ops and vals arguments of pgmirror_write, and
// what each command of ops is.
func encodeBatch(batch []*writeReq) (string, []byte, []opRef, error) {
	size, n := 0, 0
	for _, r := range batch {
		size += r.size
		n += max(r.cost, 1)
	}
	vals := make([]byte, 0, size) // never nil: a nil []byte is sent as NULL
	ops := make([]opJSON, 0, n)
	refs := make([]opRef, 0, n)
	for i, r := range batch {
		if r.blk != nil {
			ops, refs = r.blk.encode(i, ops, refs, &vals)
			continue
		}
		ops = append(ops, encodeOp(&r.op, &vals))
		refs = append(refs, opRef{i, -1})
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return "", nil, nil, fmt.Errorf("encode the batch: %w", err)
	}
	return string(b), vals, refs, nil
}

// encodeOp returns op as pgmirror_write reads it, its values appended to vals.
func encodeOp(op *mirror.WriteOp, vals *[]byte) opJSON {
	o := opJSON{K: kindNames[op.Kind], Keys: op.Keys, E: expiryNames[op.Expiry], C: condNames[op.Cond], G: op.Get,
		O: op.Sub}
	for _, v := range op.Values {
		o.V = append(o.V, [2]int64{int64(len(*vals)) + 1, int64(len(v))})
		*vals = append(*vals, v...)
	}
	switch op.Kind {
	case mirror.WriteIncrBy, mirror.WriteSetRange, mirror.WriteSetBit:
		o.I = &op.Int
	case mirror.WriteIncrByFloat:
		o.F = &op.Float
	case mirror.WriteFlush:
		o.P = &op.Prefix
		o.Keys = []string{}
	}
	if op.Expiry == mirror.ExpiryIn || op.Expiry == mirror.ExpiryAt {
		o.MS = &op.ExpiryMS
	}
	return o
}

// checkOp returns the error reply of a command that cannot be sent, or "".
// The socket layer validates client input; this only keeps a malformed
// command from failing a whole batch.
func checkOp(op *mirror.WriteOp) string {
	name, ok := kindNames[op.Kind]
	if !ok {
		return fmt.Sprintf("ERR unknown write command %d", op.Kind)
	}
	if _, ok := expiryNames[op.Expiry]; !ok {
		return "ERR syntax error"
	}
	if _, ok := condNames[op.Cond]; !ok {
		return "ERR syntax error"
	}
	if op.Kind == mirror.WriteFlush {
		if len(op.Keys) != 0 || len(op.Values) != 0 || !utf8.ValidString(op.Prefix) || strings.IndexByte(op.Prefix, 0) >= 0 {
			return "ERR syntax error"
		}
		return ""
	}
	values := 0
	single := true
	switch op.Kind {
	case mirror.WriteSet, mirror.WriteAppend, mirror.WriteSetRange, mirror.WriteSetBit:
		values = 1
	case mirror.WriteMSet, mirror.WriteMSetNX:
		values, single = len(op.Keys), false
	case mirror.WriteDel:
		single = false
	case mirror.WriteBitOp, mirror.WriteRename, mirror.WriteRenameNX, mirror.WriteCopy:
		single = false
		if len(op.Keys) < 2 || op.Kind != mirror.WriteBitOp && len(op.Keys) != 2 {
			return fmt.Sprintf("ERR wrong number of arguments for '%s' command", name)
		}
	}
	if len(op.Keys) == 0 || single && len(op.Keys) != 1 || len(op.Values) != values {
		return fmt.Sprintf("ERR wrong number of arguments for '%s' command", name)
	}
	for _, k := range op.Keys {
		if !utf8.ValidString(k) || strings.IndexByte(k, 0) >= 0 {
			return "ERR invalid key: keys must be valid UTF-8 without NUL bytes"
		}
	}
	return ""
}

// reread waits, bounded, until the mirror shows the batch's keys as
// Postgres holds them, so that after an unknown outcome the client's next
// read agrees with Postgres. The keys' advisory locks are taken (shared)
// first, so a batch still running in Postgres is waited for.
func (w *Writer) reread(batch []*writeReq) {
	ctx, cancel := context.WithTimeout(context.Background(), rereadWait)
	defer cancel()
	var keys []string
	for _, r := range batch {
		keys = append(keys, r.op.Keys...)
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	want, err := w.readVersions(ctx, keys)
	if err != nil {
		w.log.Warn("re-reading the keys of a write with an unknown outcome failed", "keys", len(keys), "error", oneLine(err.Error()))
		return
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		pending := 0
		soon := time.Now().Add(time.Second).UnixMicro()
		for _, k := range keys {
			l, err := w.apply.Exists(k)
			st, present := want[k]
			switch {
			case err != nil:
				pending++
			case present && l.Found && l.Version == st.version:
			case !l.Found && (!present || st.expires != mirror.NoExpiry && st.expires <= soon):
			default:
				pending++
			}
		}
		if pending == 0 {
			return
		}
		select {
		case <-ctx.Done():
			w.log.Warn("the mirror did not catch up with the keys of a write with an unknown outcome", "pending", pending)
			return
		case <-tick.C:
		}
	}
}

type keyState struct{ version, expires int64 }

// readVersions reads the live keys' versions once no batch holds their locks.
func (w *Writer) readVersions(ctx context.Context, keys []string) (map[string]keyState, error) {
	tx, err := w.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback() //nolint:errcheck // read only
	// In ascending id order, as pgmirror_write takes them.
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock_shared(l)
		FROM (SELECT DISTINCT pgmirror_key_lock(k) AS l FROM unnest($1::text[]) k ORDER BY 1) s`, pq.Array(keys)); err != nil {
		return nil, err
	}
	// A statement of its own: its snapshot is taken after the locks.
	rows, err := tx.QueryContext(ctx, `SELECT key, version, `+expiryExpr+` FROM cache_entries
		WHERE key = ANY($1) AND (expires_at IS NULL OR expires_at > clock_timestamp())`, pq.Array(keys))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	want := make(map[string]keyState, len(keys))
	for rows.Next() {
		var (
			k   string
			st  keyState
			exp sql.NullInt64
		)
		if err := rows.Scan(&k, &st.version, &exp); err != nil {
			return nil, err
		}
		st.expires = expiry(exp)
		want[k] = st
	}
	return want, rows.Err()
}
