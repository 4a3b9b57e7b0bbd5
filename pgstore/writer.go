package pgstore

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"pgmirror/mirror"
)

// Applier is what the Writer needs of the mirror: a ticket held while a
// batch is in flight (so the mirror knows whether the batch's own
// notification arrived first), applying a committed write before its
// callers are answered, and reading the key index when a write's outcome is
// unknown. *mirror.Mirror implements it.
type Applier interface {
	mirror.WriteApplier
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
	// DSN, when set, gives the Writer a pool of its own on it (InFlight
	// connections, a few more while batches given up on still hold theirs)
	// where each batch costs one round trip: lib/pq's binary-parameters
	// mode sends the statement's parse, bind and execute in one write, and
	// a connection Postgres closed while it was idle is found without a
	// round trip and replaced. Empty: the batches run on the db given to
	// NewWriter, each after a ping, and take three round trips.
	DSN string
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
	// RoundTrips counts the round trips to Postgres of the batches'
	// statements (with WriterOptions.DSN; 0 without): one per batch, a
	// statement retried on another connection more.
	RoundTrips uint64
	// StaleConns counts pooled connections found closed by Postgres before
	// a batch was sent on them (with WriterOptions.DSN), and replaced.
	StaleConns uint64
	Queued     int // commands waiting now (not yet in a batch)
}

// Writer runs write commands in Postgres by group commit: concurrent
// commands queue, and a loop runs whatever is queued as one autocommit
// statement (SELECT ... FROM pgmirror_write(...), see
// migrations/0002_write.sql, 0004_write_publish.sql and 0009_records.sql).
// Up to InFlight batches run at once, on connections of their own, but
// never two with a key in common: a command waits while a batch in flight
// holds one of its keys, and so does every later command that shares a key
// with a waiting one, so commands on one key run in arrival order. A
// committed batch is applied to the mirror before any of its callers is
// answered.
//
// Outcomes: if the batch could not be sent (no connection; a pooled
// connection found closed before sending, or one whose write failed before
// the statement was whole, is replaced and the batch sent again) or
// Postgres answered it with an error (the statement, and so its
// transaction, was rolled back), every command of it fails with an error
// wrapping mirror.ErrWriteUnavailable. Once the statement was sent, any
// other failure (connection lost, no answer within Timeout) leaves the
// outcome unknown: the error wraps mirror.ErrWriteUnknown, and before
// answering the Writer re-reads the batch's keys and waits (bounded) until
// the mirror shows what Postgres holds.
//
// NewWriter starts nothing: Open starts the batch loop, and Close stops
// accepting commands, runs those queued and waits for the batches in flight.
type Writer struct {
	db    *sql.DB
	pool  *writePool // the batches' own pool (WriterOptions.DSN), or nil
	apply Applier
	opts  WriterOptions
	log   hclog.Logger

	mu        sync.Mutex
	queue     []*writeReq
	inflight  map[string]int // keys of the batches running, with their counts
	batchesIn int            // batches running
	flushing  bool           // a flush runs: it runs alone (takeLocked)
	opened    bool
	closed    bool
	wake      chan struct{}  // capacity 1: something was queued, a batch ended, or Close
	wg        sync.WaitGroup // the batch loop, which waits for its batches

	batches, ops, unavailable, unknown atomic.Uint64
	roundTrips, staleConns             atomic.Uint64
	stuck                              atomic.Int32 // batches given up on, still running

	batchHandlers []func(BatchDone) // HandleBatch; fixed once Open ran
}

// BatchDone is what HandleBatch tells of a finished batch.
type BatchDone struct {
	Ops  int           // commands in the batch
	Took time.Duration // from taking the batch to its outcome (the mirror applied, or the failure known)
	// Result: BatchCommitted, BatchUnavailable (nothing was written) or
	// BatchUnknown (the commit's outcome is unknown).
	Result string
}

// The results of BatchDone.
const (
	BatchCommitted   = "ok"
	BatchUnavailable = "unavailable"
	BatchUnknown     = "unknown"
)

// HandleBatch registers h to be told of every batch once its outcome is
// known, before its callers are answered. h runs on the write path: keep
// it fast. Register before Open: registering after it is a wiring bug,
// and panics.
func (w *Writer) HandleBatch(h func(BatchDone)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.opened {
		panic("pgstore: HandleBatch after Open")
	}
	w.batchHandlers = append(w.batchHandlers, h)
}

// batchDone tells the HandleBatch handlers of a finished batch.
func (w *Writer) batchDone(ops int, start time.Time, result string) {
	if len(w.batchHandlers) == 0 {
		return
	}
	d := BatchDone{Ops: ops, Took: time.Since(start), Result: result}
	for _, h := range w.batchHandlers {
		h(d)
	}
}

var _ mirror.Writer = (*Writer)(nil)

// writeReq is one queued command.
type writeReq struct {
	op    mirror.WriteOp
	at    time.Time // queued at
	size  int       // value bytes
	cost  int       // commands it counts as toward MaxBatch: 1, or a block's steps and head
	blk   *blockReq // a MULTI/EXEC block (block.go); op.Keys then names all its keys
	taken bool      // in a batch (w.mu)
	done  chan writeAns
}

type writeAns struct {
	res mirror.WriteResult
	err error
}

// NewWriter returns a Writer on db, not started (see Open); apply receives
// the committed writes. With WriterOptions.DSN, db serves only the re-reads
// after an unknown outcome.
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
	return &Writer{db: db, apply: apply, opts: opts, log: log, inflight: map[string]int{},
		wake: make(chan struct{}, 1)}
}

// Open starts the batch loop. Commands written before Open wait in the
// queue until then. A Writer opens once, and not after Close.
func (w *Writer) Open() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.closed:
		return errors.New("pgstore: open a closed writer")
	case w.opened:
		return errors.New("pgstore: the writer is already open")
	}
	if w.opts.DSN != "" {
		pool, err := openWritePool(w.opts.DSN, w.opts.InFlight+maxStuck)
		if err != nil {
			return err
		}
		w.pool = pool
	}
	w.opened = true
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.loop()
	}()
	return nil
}

// Stats returns the Writer's counters.
func (w *Writer) Stats() WriterStats {
	w.mu.Lock()
	queued := len(w.queue)
	w.mu.Unlock()
	return WriterStats{Batches: w.batches.Load(), Ops: w.ops.Load(),
		Unavailable: w.unavailable.Load(), Unknown: w.unknown.Load(), Queued: queued,
		RoundTrips: w.roundTrips.Load(), StaleConns: w.staleConns.Load()}
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
	r := &writeReq{op: op, cost: 1}
	for _, v := range op.Values {
		r.size += len(v)
	}
	return w.enqueue(ctx, r)
}

// enqueue queues r and waits for its batch's outcome (see Write).
func (w *Writer) enqueue(ctx context.Context, r *writeReq) (mirror.WriteResult, error) {
	r.done = make(chan writeAns, 1)
	if w.opts.Linger > 0 {
		r.at = time.Now()
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return mirror.WriteResult{}, errWriterClosed()
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

// Close stops accepting commands, runs those queued, waits for the batches
// in flight and returns. If the Writer was never opened, the commands
// queued fail as writes to a closed writer do. Close may be called again.
func (w *Writer) Close() error {
	w.mu.Lock()
	w.closed = true
	var unrun []*writeReq
	if !w.opened {
		unrun, w.queue = w.queue, nil
	}
	w.mu.Unlock()
	for _, r := range unrun {
		r.done <- writeAns{err: errWriterClosed()}
	}
	w.signal()
	w.wg.Wait()
	if w.pool != nil {
		// A batch given up on still holds its connection: it is closed
		// when the driver returns it.
		_ = w.pool.db.Close()
	}
	return nil
}

// errWriterClosed is the error of a command written to a closed Writer.
func errWriterClosed() error {
	return &writeError{kind: mirror.ErrWriteUnavailable, reason: "the writer is closed"}
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
		batch             []*writeReq
		held              map[string]bool // keys of commands left waiting
		bytes, keys, cost int
	)
	if w.flushing {
		return nil
	}
	if w.batchesIn > 0 && len(w.queue) < w.opts.MaxBatch/4 && !w.closed {
		// A batch is running: let the next one gather while it does,
		// unless enough is waiting to be worth a connection of its own.
		return nil
	}
	kept := w.queue[:0]
	for i, r := range w.queue {
		if cost >= w.opts.MaxBatch || len(batch) > 0 &&
			(cost+r.cost > w.opts.MaxBatch || bytes+r.size > maxBatchBytes || keys+len(r.op.Keys) > maxBatchKeys) {
			kept = append(kept, w.queue[i:]...)
			break
		}
		if r.op.Kind == mirror.WriteFlush && r.blk == nil {
			// A flush touches every key: it waits for what is in flight
			// and for every command before it, runs alone, and holds back
			// every command after it.
			if len(batch) == 0 && w.batchesIn == 0 && held == nil {
				r.taken, w.flushing = true, true
				batch = append(batch, r)
				i++
			}
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
		cost += r.cost
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
		if r.op.Kind == mirror.WriteFlush && r.blk == nil {
			w.flushing = false
		}
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
		w.batchDone(len(batch), start, BatchCommitted)
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
		w.batchDone(len(batch), start, BatchUnknown)
		w.unknown.Add(1)
		w.log.Warn("write outcome unknown; re-reading the keys", "ops", len(batch), "error", reason)
		w.reread(batch)
		err = &writeError{kind: mirror.ErrWriteUnknown, reason: "connection to Postgres failed after the write was sent: " + reason}
	} else {
		w.batchDone(len(batch), start, BatchUnavailable)
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
