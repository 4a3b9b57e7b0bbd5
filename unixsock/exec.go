package unixsock

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"unicode/utf8"

	"pgmirror/mirror"
	"pgmirror/pgstore"
)

// replyMark is where the replies stood before EXEC, to drop EXEC's own.
type replyMark struct{ wbuf, segs, cut int }

func (c *client) markReplies() replyMark { return replyMark{len(c.wbuf), len(c.segs), c.cut} }

// dropReplies drops the replies built since m (held by txnState.hold, so
// none was sent).
func (c *client) dropReplies(m replyMark) {
	clear(c.segs[m.segs:])
	c.wbuf, c.segs, c.cut = c.wbuf[:m.wbuf], c.segs[:m.segs], m.cut
}

// viewAttempts bounds the snapshots of a block of reads on the mirror
// that a change applied meanwhile can spoil before the block's keys are
// read in Postgres instead.
const viewAttempts = 4

// execOnMirror runs a block of reads only, without WATCH, on the mirror:
// no query for hits, and one consistent state. The keys the block reads
// are read first, with no change applied between the first read and the
// last (mirror.ViewSeq), so no transaction is seen half applied; a
// snapshot a change overlapped is taken again, and after viewAttempts the
// keys are read in Postgres, in one statement. The commands then run once,
// answering from the snapshot. A block with a script runs as it is queued
// instead: the script may write what a later read of the block reads.
func (c *client) execOnMirror(cmds []queuedCmd) {
	for _, q := range cmds {
		if strings.HasPrefix(q.cmd.name, "eval") {
			c.array(len(cmds))
			for _, q := range cmds {
				c.runQueued(q)
			}
			return
		}
	}
	var keys []string
	for _, q := range cmds {
		c.trackKeys(q.cmd, q.args) // before the read (tracking.go)
		keys = append(keys, c.cmdKeys(q.cmd, q.args)...)
	}
	view, ok := c.mirrorSnapshot(keys)
	if !ok {
		bw, ok := c.s.Writer.(blockWriter)
		if !ok {
			c.errorReply("ERR transactions need pgmirror's Postgres writer")
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx(), writeTimeout)
		defer cancel()
		res, err := bw.WriteBlock(ctx, pgstore.Block{Steps: []pgstore.BlockStep{{Read: keys}}})
		if err != nil {
			c.errorReply("ERR transaction failed: " + err.Error())
			return
		}
		view = &blockView{Mirror: c.s.Mirror, rows: res.Steps[0].Rows}
	}
	c.txn.blk = &blockRun{view: view}
	defer func() { c.txn.blk = nil }()
	c.array(len(cmds))
	for _, q := range cmds {
		c.runQueued(q)
	}
}

// mirrorSnapshot reads keys from the mirror on one state; false if changes
// spoiled viewAttempts tries.
func (c *client) mirrorSnapshot(keys []string) (*blockView, bool) {
	for range viewAttempts {
		seq := c.s.Mirror.ViewSeq()
		if seq%2 != 0 {
			runtime.Gosched()
			continue
		}
		v := &blockView{Mirror: c.s.Mirror, rows: make(map[string]pgstore.TxRow, len(keys))}
		for _, k := range keys {
			if _, done := v.rows[k]; done || v.errs[k] != nil {
				continue
			}
			value, found, err := c.s.Mirror.Get(c.ctx(), k)
			switch {
			case err != nil:
				if v.errs == nil {
					v.errs = map[string]error{}
				}
				v.errs[k] = err
			case found:
				l, _ := c.s.Mirror.Exists(k)
				ms, _, _ := c.s.Mirror.PTTL(k)
				v.rows[k] = pgstore.TxRow{Found: true, Live: true, Value: value, Version: l.Version, Expires: l.Expires, PTTL: ms}
			default:
				v.rows[k] = pgstore.TxRow{}
			}
		}
		if c.s.Mirror.ViewSeq() == seq {
			return v, true
		}
	}
	return nil, false
}

// blockWriter runs blocks in the group commit: *pgstore.Writer.
type blockWriter interface {
	WriteBlock(ctx context.Context, b pgstore.Block) (pgstore.BlockResult, error)
}

// blockRun is a connection's EXEC in the group commit: first the block's
// write commands run collecting the operations they would write (their
// replies dropped), then, with the block's outcome, every command runs
// again answering from it: a write with its result (next), a read from the
// rows the block read at its place (view).
type blockRun struct {
	collecting bool
	steps      []pgstore.BlockStep // collected by the command being run
	next       *mirror.WriteResult
	view       *blockView
}

// mir is what the connection's reads read: the mirror, or during EXEC the
// rows of the block's read.
func (c *client) mir() Mirror {
	if b := c.txn.blk; b != nil && b.view != nil {
		return b.view
	}
	return c.s.Mirror
}

// blockWrite handles a write of a block in EXEC (c.write): true if it was
// collected or answered.
func (c *client) blockWrite(op mirror.WriteOp) (mirror.WriteResult, bool) {
	b := c.txn.blk
	switch {
	case b.collecting:
		b.steps = append(b.steps, pgstore.BlockStep{Op: &op})
		return mirror.WriteResult{}, false
	case b.next == nil:
		return mirror.WriteResult{Err: errors.New("ERR internal error: a write of the block that was not collected")}, true
	}
	r := *b.next
	b.next = nil
	return r, true
}

// blockPublish handles a PUBLISH of a block in EXEC or of a script that
// writes: true if it was collected or answered (receivers: the reply).
func (c *client) blockPublish(channel string, data []byte, receivers func() int) bool {
	if v := c.txn.script; v != nil {
		v.pubs = append(v.pubs, pgstore.Message{Channel: channel, Data: data})
		c.integer(int64(receivers()))
		return true
	}
	b := c.txn.blk
	switch {
	case b == nil:
		return false
	case b.collecting:
		b.steps = append(b.steps, pgstore.BlockStep{Publish: &pgstore.Message{Channel: channel, Data: data}})
	case b.next == nil:
		c.errorReply("ERR internal error: a PUBLISH of the block that was not collected")
	case b.next.Err != nil:
		c.errorReply(b.next.Err.Error())
	default:
		c.integer(int64(receivers()))
	}
	return true
}

// execBlock runs a block in the group commit (pgstore.Block): one
// transaction with the rest of its batch, under the locks of its keys and
// of the watched keys; WATCH checked under them.
func (c *client) execBlock(cmds []queuedCmd) {
	bw, ok := c.s.Writer.(blockWriter)
	if !ok {
		c.errorReply("ERR transactions need pgmirror's Postgres writer")
		return
	}
	steps, at := c.blockSteps(cmds)
	for _, q := range cmds {
		c.trackKeys(q.cmd, q.args) // before the block reads (tracking.go)
	}
	c.loadMisses(steps)
	ctx, cancel := context.WithTimeout(c.ctx(), writeTimeout)
	defer cancel()
	res, err := bw.WriteBlock(ctx, pgstore.Block{Steps: steps, Watch: c.watchedKeys()})
	switch {
	case errors.Is(err, mirror.ErrWriteUnknown):
		c.errorReply("ERR transaction outcome unknown (connection to Postgres lost while committing); read the keys to check: " +
			err.Error())
	case err != nil:
		c.errorReply(txError(err))
	case res.Aborted:
		c.nullArray()
	default:
		c.replayBlock(cmds, at, res)
	}
}

// blockSteps returns the block's steps and, per command, its step (-1 for
// none: a command that fails before writing, or that reads no key).
func (c *client) blockSteps(cmds []queuedCmd) ([]pgstore.BlockStep, []int) {
	b := &blockRun{collecting: true}
	c.txn.blk = b
	mark := c.markReplies()
	hold := c.txn.hold
	c.txn.hold = true
	defer func() { c.txn.blk, c.txn.hold = nil, hold }()
	var steps []pgstore.BlockStep
	at := make([]int, len(cmds))
	for i, q := range cmds {
		at[i] = -1
		switch {
		case inBlockStep(q.cmd):
			b.steps = b.steps[:0]
			q.cmd.fn(c, q.args)
			if len(b.steps) == 1 {
				at[i] = len(steps)
				steps = append(steps, b.steps[0])
			}
		default:
			if keys := c.cmdKeys(q.cmd, q.args); len(keys) > 0 {
				at[i] = len(steps)
				steps = append(steps, pgstore.BlockStep{Read: keys})
			}
		}
		c.dropReplies(mark)
	}
	return steps, at
}

// loadMisses runs the loaders of the keys the block reads before it writes
// them and the mirror lacks, as a GET outside the block would: the block
// then reads the rows they stored. A watched key is left alone: the row
// its loader stored would abort the block's own WATCH.
func (c *client) loadMisses(steps []pgstore.BlockStep) {
	written := map[string]bool{}
	for _, s := range steps {
		if s.Op != nil {
			for _, k := range s.Op.Keys {
				written[k] = true
			}
			continue
		}
		for _, k := range s.Read {
			if _, watched := c.txn.watched[k]; !written[k] && !watched {
				if l, err := c.s.Mirror.Exists(k); err == nil && !l.Found {
					_, _, _ = c.s.Mirror.Get(c.ctx(), k)
				}
			}
		}
	}
}

// replayBlock answers each command of a block that ran, in order.
func (c *client) replayBlock(cmds []queuedCmd, at []int, res pgstore.BlockResult) {
	b := &blockRun{}
	c.txn.blk = b
	defer func() { c.txn.blk = nil }()
	c.array(len(cmds))
	for i, q := range cmds {
		b.next, b.view = nil, nil
		if s := at[i]; s >= 0 {
			if st := &res.Steps[s]; inBlockStep(q.cmd) {
				b.next = &st.Res
			} else {
				b.view = &blockView{Mirror: c.s.Mirror, rows: st.Rows}
			}
		}
		c.runQueued(q)
	}
}

// watchedKeys is the connection's WATCH, as a Block takes it.
func (c *client) watchedKeys() []pgstore.WatchedKey {
	ws := make([]pgstore.WatchedKey, 0, len(c.txn.watched))
	for k, w := range c.txn.watched {
		ws = append(ws, pgstore.WatchedKey{Key: k, Found: w.found, Version: w.version})
	}
	return ws
}

// cmdKeys returns the namespaced keys a command names, as the table's key
// positions name them; keys invalid for pgmirror are left out (their
// command answers the error).
func (c *client) cmdKeys(cmd *command, args [][]byte) []string {
	kr := cmd.keys
	if kr.first == 0 {
		return nil
	}
	last := kr.last
	if last < 0 {
		last += len(args)
	}
	var keys []string
	for i := kr.first; i <= last && i < len(args); i += max(kr.step, 1) {
		b := args[i]
		if utf8.Valid(b) && strings.IndexByte(string(b), 0) < 0 && len(c.s.Namespace)+len(b) <= mirror.MaxKeyBytes {
			keys = append(keys, c.s.Namespace+string(b))
		}
	}
	return keys
}

// inBlockStep reports whether a command of a block is a step of its own
// in the group commit: a write, or a PUBLISH (sent at the commit, after
// the block's writes).
func inBlockStep(cmd *command) bool { return cmd.has(flagWrite) || cmd.name == "publish" }

// txError words a failed transaction's error.
func txError(err error) string {
	msg := err.Error()
	if strings.HasPrefix(msg, "transaction failed") {
		return "ERR " + msg
	}
	return "ERR transaction failed, nothing was written: " + msg
}

// blockView answers a block's read from the rows the block read at its
// place (its own earlier writes included); the rest from the mirror.
type blockView struct {
	Mirror
	rows map[string]pgstore.TxRow
	errs map[string]error // keys whose read failed (a loader's error)
}

func (v *blockView) Get(_ context.Context, key string) ([]byte, bool, error) {
	r := v.rows[key]
	return r.Value, r.Live, v.errs[key]
}

func (v *blockView) GetMulti(_ context.Context, keys []string, _ int64, emit func([]byte)) error {
	for _, k := range keys {
		if err := v.errs[k]; err != nil {
			return err
		}
		if r := v.rows[k]; r.Live {
			emit(r.Value)
		} else {
			emit(nil)
		}
	}
	return nil
}

func (v *blockView) Exists(key string) (mirror.Lookup, error) {
	r := v.rows[key]
	if !r.Live {
		return mirror.Lookup{}, nil
	}
	return mirror.Lookup{Found: true, Version: r.Version, Expires: r.Expires, Size: len(r.Value)}, nil
}

func (v *blockView) PTTL(key string) (int64, bool, error) {
	r := v.rows[key]
	return r.PTTL, r.Live, nil
}

func (v *blockView) StrLen(_ context.Context, key string) (int64, error) {
	r := v.rows[key]
	if !r.Live {
		return 0, nil
	}
	return int64(len(r.Value)), nil
}

func (v *blockView) Touch(key string) (bool, error) { return v.rows[key].Live, nil }
