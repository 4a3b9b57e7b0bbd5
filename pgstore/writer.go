package pgstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"github.com/lib/pq"

	"pgmirror/mirror"
)

// Applier is what the Writer needs of the mirror: a ticket held while a
// batch is in flight (so the mirror knows whether the batch's own
// notification arrived first), applying a committed write before its
// callers are answered, and reading the key index when a write's outcome is
// unknown. *mirror.Mirror implements it.
type Applier interface {
	BeginWrite() *mirror.WriteTicket
	AbandonWrite(t *mirror.WriteTicket)
	ApplyWrite(t *mirror.WriteTicket, xid uint64, changes []mirror.Change)
	Exists(key string) (mirror.Lookup, error)
}

// WriterOptions configures a Writer; zero values take the defaults.
type WriterOptions struct {
	// MaxBatch bounds the commands of one statement; default 64, so the
	// subtransactions of one batch fit in the subxid cache of its backend.
	MaxBatch int
	// InFlight bounds the batches running at once, each on its own
	// connection; default 1. Batches in flight never share a key, and a
	// further batch starts only while at least MaxBatch/4 commands wait
	// (otherwise they gather for the next commit). More than one helps
	// when Postgres is far away (round trips dominate); on one host,
	// splitting batches cost more than the overlap gained (BENCHMARKS.md).
	InFlight int
	// Linger holds a batch back until its oldest command has waited this
	// long (or the batch is full), so that more commands share one commit
	// and one notification: fewer notifications for every listening
	// sidecar, at up to Linger more latency per write. Default 0.
	Linger time.Duration
	// Timeout bounds one batch, getting a connection included; default 5s.
	Timeout time.Duration
	// MaxValueSize bounds what APPEND and INCRBYFLOAT may make of a value
	// (Redis's proto-max-bulk-len error); 0 means no bound. The values a
	// client sends are checked by the caller.
	MaxValueSize int64
	// Log; nil logs nothing.
	Log hclog.Logger
}

// Defaults and bounds of the Writer.
const (
	DefaultWriteBatch   = 64
	DefaultWriteFlight  = 1
	DefaultWriteTimeout = 5 * time.Second
	// A batch also stops growing at this many value bytes or keys (it
	// always takes at least one command): one statement's parameters stay
	// well below Postgres's limits, and its advisory locks below the lock
	// table's size.
	maxBatchBytes = 64 << 20
	maxBatchKeys  = 4096
	// A batch whose statement has not answered this long after its Timeout
	// is given up (lib/pq cannot interrupt a read from a dead peer).
	abandonAfter = 500 * time.Millisecond
	// After an unknown outcome, the keys are re-read and the mirror is
	// awaited for at most this long.
	rereadWait = 2 * time.Second
	// Connections the pool hands out that turn out dead before a batch is
	// sent (after a server restart) are skipped this many times.
	connAttempts = 10
	// Batches given up while the driver still waits for Postgres; with this
	// many, new batches fail at once instead of piling up connections.
	maxStuck = 4
)

// WriterStats counts what a Writer did.
type WriterStats struct {
	Batches     uint64 // statements run (or attempted)
	Ops         uint64 // commands in those batches
	Unavailable uint64 // batches that did not commit (Postgres unreachable or the statement failed)
	Unknown     uint64 // batches whose commit outcome is unknown
	Queued      int    // commands waiting now (not yet in a batch)
}

// Writer runs write commands in Postgres by group commit: concurrent
// commands queue, and a loop runs whatever is queued as one autocommit
// statement (SELECT ... FROM pgmirror_write(...), see
// migrations/0002_write.sql and 0004_write_publish.sql). Up to InFlight
// batches run at once, on connections of their own, but never two with a
// key in common: a command waits while a batch in flight holds one of its
// keys, and so does every later command that shares a key with a waiting
// one, so commands on one key run in arrival order. A committed batch is
// applied to the mirror before any of its callers is answered.
//
// Outcomes: if the batch could not be sent (no connection, the pool's
// connection found dead by a ping before sending) or Postgres answered it
// with an error (the statement, and so its transaction, was rolled back),
// every command of it fails with an error wrapping
// mirror.ErrWriteUnavailable. Once the statement was sent, any other
// failure (connection lost, no answer within Timeout) leaves the outcome
// unknown: the error wraps mirror.ErrWriteUnknown, and before answering the
// Writer re-reads the batch's keys and waits (bounded) until the mirror
// shows what Postgres holds.
type Writer struct {
	db    *sql.DB
	apply Applier
	opts  WriterOptions
	log   hclog.Logger

	mu        sync.Mutex
	queue     []*writeReq
	inflight  map[string]int // keys of the batches running, with their counts
	batchesIn int            // batches running
	closed    bool
	wake      chan struct{} // capacity 1: something was queued, a batch ended, or Close
	done      chan struct{} // closed when the batch loop and its batches have returned

	batches, ops, unavailable, unknown atomic.Uint64
	stuck                              atomic.Int32 // batches given up on, still running
}

var _ mirror.Writer = (*Writer)(nil)

// writeReq is one queued command.
type writeReq struct {
	op    mirror.WriteOp
	at    time.Time // queued at
	size  int       // value bytes
	taken bool      // in a batch (w.mu)
	done  chan writeAns
}

type writeAns struct {
	res mirror.WriteResult
	err error
}

// NewWriter starts a Writer on db; apply receives the committed writes.
func NewWriter(db *sql.DB, apply Applier, opts WriterOptions) *Writer {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultWriteBatch
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultWriteTimeout
	}
	if opts.InFlight <= 0 {
		opts.InFlight = DefaultWriteFlight
	}
	log := opts.Log
	if log == nil {
		log = hclog.NewNullLogger()
	}
	w := &Writer{db: db, apply: apply, opts: opts, log: log, inflight: map[string]int{},
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go w.loop()
	return w
}

// Stats returns the Writer's counters.
func (w *Writer) Stats() WriterStats {
	w.mu.Lock()
	queued := len(w.queue)
	w.mu.Unlock()
	return WriterStats{Batches: w.batches.Load(), Ops: w.ops.Load(),
		Unavailable: w.unavailable.Load(), Unknown: w.unknown.Load(), Queued: queued}
}

// Write implements mirror.Writer. A command cancelled (ctx) while it waits in
// the queue is not run and returns ctx.Err(); once its batch has been taken,
// Write waits for the batch's outcome, which its bounds keep short.
func (w *Writer) Write(ctx context.Context, op mirror.WriteOp) (mirror.WriteResult, error) {
	if msg := checkOp(&op); msg != "" {
		return mirror.WriteResult{Err: errors.New(msg)}, nil
	}
	if err := ctx.Err(); err != nil {
		return mirror.WriteResult{}, err
	}
	r := &writeReq{op: op, done: make(chan writeAns, 1)}
	if w.opts.Linger > 0 {
		r.at = time.Now()
	}
	for _, v := range op.Values {
		r.size += len(v)
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return mirror.WriteResult{}, &writeError{kind: mirror.ErrWriteUnavailable, reason: "the writer is closed"}
	}
	w.queue = append(w.queue, r)
	w.mu.Unlock()
	w.signal()
	select {
	case a := <-r.done:
		return a.res, a.err
	case <-ctx.Done():
	}
	w.mu.Lock()
	if !r.taken {
		if i := slices.Index(w.queue, r); i >= 0 {
			w.queue = slices.Delete(w.queue, i, i+1)
		}
		w.mu.Unlock()
		return mirror.WriteResult{}, ctx.Err()
	}
	w.mu.Unlock()
	a := <-r.done
	return a.res, a.err
}

// Close stops accepting commands, runs those queued, waits for the batch in
// flight and returns.
func (w *Writer) Close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.signal()
	<-w.done
	return nil
}

// signal wakes the loop.
func (w *Writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// loop starts batches, up to InFlight at once, until Close and an empty
// queue, then waits for those running.
func (w *Writer) loop() {
	defer close(w.done)
	var running sync.WaitGroup
	defer running.Wait()
	slots := make(chan struct{}, w.opts.InFlight)
	for {
		slots <- struct{}{}
		batch := w.take()
		if batch == nil {
			return
		}
		running.Add(1)
		go func() {
			defer running.Done()
			w.run(batch)
			w.finish(batch)
			<-slots
			w.signal()
		}()
	}
}

// take waits for queued commands that no batch in flight holds a key of,
// and removes a batch of them from the queue (their keys are then in
// flight); nil once closed with nothing queued.
func (w *Writer) take() []*writeReq {
	for {
		w.mu.Lock()
		if w.opts.Linger > 0 && !w.closed && len(w.queue) > 0 && len(w.queue) < w.opts.MaxBatch {
			if wait := time.Until(w.queue[0].at.Add(w.opts.Linger)); wait > 0 {
				w.mu.Unlock()
				t := time.NewTimer(wait)
				select {
				case <-w.wake:
				case <-t.C:
				}
				t.Stop()
				continue
			}
		}
		if batch := w.takeLocked(); batch != nil {
			w.mu.Unlock()
			return batch
		}
		if w.closed && len(w.queue) == 0 {
			w.mu.Unlock()
			return nil
		}
		w.mu.Unlock()
		<-w.wake
	}
}

// takeLocked removes from the queue, in order, the commands that may run
// now, up to the batch bounds. A command with a key in flight waits, and
// its keys are held back from later commands too (w.mu).
func (w *Writer) takeLocked() []*writeReq {
	var (
		batch       []*writeReq
		held        map[string]bool // keys of commands left waiting
		bytes, keys int
	)
	if w.batchesIn > 0 && len(w.queue) < w.opts.MaxBatch/4 && !w.closed {
		// A batch is running: let the next one gather while it does,
		// unless enough is waiting to be worth a connection of its own.
		return nil
	}
	kept := w.queue[:0]
	for i, r := range w.queue {
		if len(batch) >= w.opts.MaxBatch || len(batch) > 0 &&
			(bytes+r.size > maxBatchBytes || keys+len(r.op.Keys) > maxBatchKeys) {
			kept = append(kept, w.queue[i:]...)
			break
		}
		blocked := false
		for _, k := range r.op.Keys {
			if w.inflight[k] > 0 || held[k] {
				blocked = true
				break
			}
		}
		if blocked {
			if held == nil {
				held = map[string]bool{}
			}
			for _, k := range r.op.Keys {
				held[k] = true
			}
			kept = append(kept, r)
			continue
		}
		bytes += r.size
		keys += len(r.op.Keys)
		r.taken = true
		batch = append(batch, r)
	}
	clear(w.queue[len(kept):])
	w.queue = kept
	for _, r := range batch {
		for _, k := range r.op.Keys {
			w.inflight[k]++
		}
	}
	if batch != nil {
		w.batchesIn++
	}
	return batch
}

// finish releases the keys of a batch that has returned.
func (w *Writer) finish(batch []*writeReq) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.batchesIn--
	for _, r := range batch {
		for _, k := range r.op.Keys {
			if w.inflight[k]--; w.inflight[k] <= 0 {
				delete(w.inflight, k)
			}
		}
	}
}

// writeError is a batch failure: Error is the short reason, and it wraps
// mirror.ErrWriteUnavailable or mirror.ErrWriteUnknown.
type writeError struct {
	kind   error
	reason string
}

func (e *writeError) Error() string { return e.reason }
func (e *writeError) Unwrap() error { return e.kind }

// outcome is what running a batch gave.
type outcome struct {
	results []mirror.WriteResult
	changes []mirror.Change
	xid     uint64
	err     error // the batch did not (surely) commit
	unknown bool  // err came after the statement was sent
}

// run executes a batch, applies it, and answers its callers.
func (w *Writer) run(batch []*writeReq) {
	start := time.Now()
	w.batches.Add(1)
	w.ops.Add(uint64(len(batch)))
	ticket := w.apply.BeginWrite()
	out := w.runBounded(batch)
	if out.err == nil {
		if len(out.changes) > 0 {
			w.apply.ApplyWrite(ticket, out.xid, out.changes)
			w.settle(ticket, out.xid)
		} else {
			w.apply.AbandonWrite(ticket)
		}
		for i, r := range batch {
			r.done <- writeAns{res: out.results[i]}
		}
		w.log.Trace("batch committed", "ops", len(batch), "changes", len(out.changes), "xid", out.xid,
			"elapsed", time.Since(start))
		return
	}
	w.apply.AbandonWrite(ticket)
	reason := oneLine(out.err.Error())
	var err error
	if out.unknown {
		w.unknown.Add(1)
		w.log.Warn("write outcome unknown; re-reading the keys", "ops", len(batch), "error", reason)
		w.reread(batch)
		err = &writeError{kind: mirror.ErrWriteUnknown, reason: "connection to Postgres failed after the write was sent: " + reason}
	} else {
		w.unavailable.Add(1)
		w.log.Warn("write batch failed; nothing was written", "ops", len(batch), "error", reason)
		err = &writeError{kind: mirror.ErrWriteUnavailable, reason: reason}
	}
	for _, r := range batch {
		r.done <- writeAns{err: err}
	}
}

// settle waits (bounded) for the batch's echo when the mirror could not
// order one of its changes against a loader's or refresh's store of the
// same key, so that its callers read their writes (mirror.ApplyWrite).
func (w *Writer) settle(ticket *mirror.WriteTicket, xid uint64) {
	if !ticket.Contested() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), rereadWait)
	defer cancel()
	if !ticket.Settle(ctx) {
		w.log.Warn("a write's notification did not arrive in time; the mirror may show an older state of its keys until it does",
			"xid", xid, "waited", rereadWait)
	}
}

// runBounded runs the batch's statement within Timeout (plus a short
// grace), even when the driver would block on a dead connection.
func (w *Writer) runBounded(batch []*writeReq) outcome {
	if n := w.stuck.Load(); n >= maxStuck {
		return outcome{err: fmt.Errorf("no answer from Postgres: %d earlier batches still wait for it", n)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.opts.Timeout)
	defer cancel()
	var (
		sent  atomic.Bool
		state atomic.Int32 // 0 running, 1 finished, 2 abandoned
	)
	ch := make(chan outcome, 1)
	go func() {
		ch <- w.execute(ctx, batch, &sent)
		if !state.CompareAndSwap(0, 1) {
			w.stuck.Add(-1)
		}
	}()
	t := time.NewTimer(w.opts.Timeout + abandonAfter)
	defer t.Stop()
	select {
	case out := <-ch:
		return out
	case <-t.C:
	}
	if !state.CompareAndSwap(0, 2) {
		return <-ch // it just finished
	}
	// The driver ignores the context while it reads from a peer that does
	// not answer. The goroutine ends when the driver gives up; its result
	// is dropped.
	w.stuck.Add(1)
	if sent.Load() {
		return outcome{err: fmt.Errorf("no answer from Postgres within %v", w.opts.Timeout), unknown: true}
	}
	return outcome{err: fmt.Errorf("could not connect to Postgres within %v", w.opts.Timeout)}
}

// writeQuery runs a batch; its columns are read by execute.
const writeQuery = `SELECT cmd, rec, reply, reply_int, reply_bulk, reply_err,
	st_key, st_version, st_expires, st_deleted, st_value, xact_id
	FROM pgmirror_write($1::jsonb, $2::bytea, $3::bigint)`

// execute runs the batch's statement; sent is set just before it is sent.
func (w *Writer) execute(ctx context.Context, batch []*writeReq, sent *atomic.Bool) outcome {
	ops, vals, err := encodeBatch(batch)
	if err != nil {
		return outcome{err: err}
	}
	var maxValue any
	if w.opts.MaxValueSize > 0 {
		maxValue = w.opts.MaxValueSize
	}
	conn, err := w.conn(ctx)
	if err != nil {
		return outcome{err: err}
	}
	defer conn.Close()
	sent.Store(true)
	rows, err := conn.QueryContext(ctx, writeQuery, ops, vals, maxValue)
	if err != nil {
		return failed(err)
	}
	defer rows.Close()
	out := outcome{results: make([]mirror.WriteResult, len(batch))}
	replied := make([]bool, len(batch))
	xactSeen := false
	for rows.Next() {
		var (
			cmd                    sql.NullInt32
			rec                    string
			reply, rErr, key       sql.NullString
			rInt, ver, exp, xactID sql.NullInt64
			rBulk, val             sql.Null[[]byte]
			del                    sql.NullBool
		)
		if err := rows.Scan(&cmd, &rec, &reply, &rInt, &rBulk, &rErr, &key, &ver, &exp, &del, &val, &xactID); err != nil {
			return failed(err)
		}
		if rec == "xact" {
			xactSeen = true
			out.xid = uint64(xactID.Int64)
			continue
		}
		i := int(cmd.Int32)
		if !cmd.Valid || i < 0 || i >= len(batch) {
			return failed(fmt.Errorf("pgmirror_write: row for command %v of %d", cmd.Int32, len(batch)))
		}
		res := &out.results[i]
		switch rec {
		case "reply":
			replied[i] = true
			switch reply.String {
			case "ok":
				res.Reply = mirror.ReplyOK
			case "nil":
				res.Reply = mirror.ReplyNil
			case "int":
				res.Reply, res.Int = mirror.ReplyInt, rInt.Int64
			case "bulk":
				res.Reply, res.Bulk = mirror.ReplyBulk, rBulk.V
				if res.Bulk == nil {
					res.Bulk = []byte{}
				}
			default:
				res.Err = errors.New(oneLine(rErr.String))
				if !rErr.Valid {
					res.Err = fmt.Errorf("ERR pgmirror_write replied %q", reply.String)
				}
			}
		case "state":
			c := stateChange(&batch[i].op, res, key.String, ver.Int64, expiry(exp), del.Bool, val)
			c.Origin = batch[i].op.Origin
			res.States = append(res.States, c)
			out.changes = append(out.changes, c)
		}
	}
	if err := rows.Err(); err != nil {
		return failed(err)
	}
	// Close reads up to ReadyForQuery; only then is the commit confirmed.
	if err := rows.Close(); err != nil {
		return failed(err)
	}
	if !xactSeen {
		return failed(errors.New("pgmirror_write returned no transaction row"))
	}
	for i := range batch {
		if !replied[i] {
			out.results[i] = mirror.WriteResult{Err: errors.New("ERR internal error: no reply for the command")}
		}
	}
	return out
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

// conn returns a pooled connection that answered a ping, so that a batch is
// only sent on a connection that was alive just before: a failure before
// this point means the batch was surely not run.
func (w *Writer) conn(ctx context.Context) (*sql.Conn, error) {
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
	K    string     `json:"k"`
	Keys []string   `json:"keys"`
	V    [][2]int64 `json:"v,omitempty"`
	I    *int64     `json:"i,omitempty"`
	F    *string    `json:"f,omitempty"`
	E    string     `json:"e,omitempty"`
	MS   *int64     `json:"ms,omitempty"`
	C    string     `json:"c,omitempty"`
	G    bool       `json:"g,omitempty"`
}

var (
	kindNames = map[mirror.WriteKind]string{
		mirror.WriteSet: "set", mirror.WriteGetDel: "getdel", mirror.WriteGetEx: "getex",
		mirror.WriteMSet: "mset", mirror.WriteMSetNX: "msetnx", mirror.WriteIncrBy: "incrby",
		mirror.WriteIncrByFloat: "incrbyfloat", mirror.WriteAppend: "append", mirror.WriteDel: "del",
		mirror.WriteExpire: "expire", mirror.WritePersist: "persist",
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

// encodeBatch returns the ops and vals arguments of pgmirror_write.
func encodeBatch(batch []*writeReq) (string, []byte, error) {
	size := 0
	for _, r := range batch {
		size += r.size
	}
	vals := make([]byte, 0, size) // never nil: a nil []byte is sent as NULL
	ops := make([]opJSON, len(batch))
	for i, r := range batch {
		op := &r.op
		o := opJSON{K: kindNames[op.Kind], Keys: op.Keys, E: expiryNames[op.Expiry], C: condNames[op.Cond], G: op.Get}
		for _, v := range op.Values {
			o.V = append(o.V, [2]int64{int64(len(vals)) + 1, int64(len(v))})
			vals = append(vals, v...)
		}
		switch op.Kind {
		case mirror.WriteIncrBy:
			o.I = &op.Int
		case mirror.WriteIncrByFloat:
			o.F = &op.Float
		}
		if op.Expiry == mirror.ExpiryIn || op.Expiry == mirror.ExpiryAt {
			o.MS = &op.ExpiryMS
		}
		ops[i] = o
	}
	b, err := json.Marshal(ops)
	if err != nil {
		return "", nil, fmt.Errorf("encode the batch: %w", err)
	}
	return string(b), vals, nil
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
	values := 0
	single := true
	switch op.Kind {
	case mirror.WriteSet, mirror.WriteAppend:
		values = 1
	case mirror.WriteMSet, mirror.WriteMSetNX:
		values, single = len(op.Keys), false
	case mirror.WriteDel:
		single = false
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

// oneLine makes text fit a RESP error line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(strings.ReplaceAll(s, "\r", " ")), " ")
	if len(s) > 300 {
		s = s[:300]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}
