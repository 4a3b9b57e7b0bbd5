package unixsock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"pgmirror/mirror"
	"pgmirror/pgstore"
	"pgmirror/script"
)

// commitSlack is how long past a script's deadline its transaction may
// still commit or roll back: the engine stops the run at the deadline, and
// the transaction's statements are bounded by the deadline plus this.
const commitSlack = time.Second

// maxScriptKeys bounds the keys a script that writes declares: its
// transaction takes an advisory lock for each (as a write batch's keys).
const maxScriptKeys = 4096

// evalWrites runs a script that writes, which its run on the mirror stopped
// at its first write: again from the start, with the first run's deadline,
// inside one Postgres transaction that holds the locks of the keys it
// declared (taken in sorted order). Its reads are made under those locks
// and see its own writes; its writes commit together, published as one
// unit every sidecar applies at once. As in Redis, a script that fails
// after writing keeps its writes; one stopped at the time limit (or by
// SCRIPT KILL) is rolled back and writes nothing.
// txBeginner runs scripts that write in Postgres: *pgstore.Writer.
type txBeginner interface {
	Begin(ctx context.Context, keys []string) (*pgstore.Tx, error)
}

func (c *client) evalWrites(e *script.Engine, s *script.Script, req script.Request) (script.Reply, error) {
	_, tb := c.s.Writer.(txBeginner)
	if _, bw := c.s.Writer.(blockWriter); !tb || !bw {
		return script.ErrorReply("ERR pgmirror: scripts that write need transactions, which this server's writer lacks"), nil
	}
	if len(req.Keys) > maxScriptKeys {
		return script.ErrorReply(fmt.Sprintf("ERR a pgmirror script that writes may declare at most %d keys "+
			"(it locks each in Postgres)", maxScriptKeys)), nil
	}
	keys := make([]string, len(req.Keys))
	for i, k := range req.Keys {
		if msg := c.scriptKeyError(k); msg != "" {
			return script.ErrorReply(msg), nil
		}
		keys[i] = c.s.Namespace + string(k)
	}
	for attempt := 1; ; attempt++ {
		if rep, again := c.evalInTx(e, s, req, keys, attempt == scriptAttempts); !again {
			return rep, nil
		}
	}
}

// scriptAttempts bounds the runs of a script that writes: a run whose keys
// changed before its writes reached the group commit runs again, and the
// last run commits its own transaction.
const scriptAttempts = 3

// evalInTx runs a script that writes in a transaction holding the locks
// of its keys. Its writes then reach Postgres one of two ways. Normally the
// transaction is rolled back and the writes it recorded go to the group
// commit as a block that WATCHes every declared key at the state the
// transaction read under its locks: run on that same state, the same
// commands give the same results, and they share a batch's commit (a
// commit of its own serialises on Postgres's notification lock, held
// through the WAL flush). If a key changed in between, the block is
// aborted and again is true. With commit (the last attempt), the
// transaction commits itself.
func (c *client) evalInTx(e *script.Engine, s *script.Script, req script.Request, keys []string,
	commit bool) (rep script.Reply, again bool) {
	ctx, cancel := context.WithDeadline(c.ctx(), req.Deadline.Add(commitSlack))
	defer cancel()
	tx, err := c.s.Writer.(txBeginner).Begin(ctx, keys)
	if err != nil {
		return script.ErrorReply("ERR write failed, nothing was written: " + flatErr(err)), false
	}
	defer tx.Rollback()
	view := &txView{Mirror: c.s.Mirror, tx: tx, ctx: ctx}
	watch, err := view.readAll(keys)
	if err != nil {
		return script.ErrorReply("ERR write failed, nothing was written: " + flatErr(err)), false
	}
	req.Caller = c.newScriptCaller(req.Keys, false, view)
	rep, err = e.Run(ctx, s, req)
	if err != nil {
		return script.ErrorReply("ERR script aborted, nothing was written: " + flatErr(err)), false
	}
	if rep.IsError() && (strings.HasPrefix(rep.Str, "ERR Script timed out") || strings.HasPrefix(rep.Str, script.MsgKilled)) {
		return rep, false // rolled back
	}
	if commit || len(view.steps) == 0 || view.failed != nil {
		for _, m := range view.pubs {
			if err = tx.Publish(m.Channel, m.Data); err != nil {
				return script.ErrorReply("ERR " + flatErr(err)), false
			}
		}
		err = tx.Commit(ctx) // a lost transaction fails here
	} else {
		tx.Rollback()
		steps := view.steps
		for i := range view.pubs {
			steps = append(steps, pgstore.BlockStep{Publish: &view.pubs[i]})
		}
		var res pgstore.BlockResult
		res, err = c.s.Writer.(blockWriter).WriteBlock(ctx, pgstore.Block{Steps: steps, Watch: watch})
		if err == nil && res.Aborted {
			return rep, true
		}
		if err == nil {
			view.compare(c, res)
		}
	}
	switch {
	case errors.Is(err, mirror.ErrWriteUnknown):
		return script.ErrorReply("ERR write outcome unknown (connection to Postgres lost while committing); " +
			"read the keys to check: " + flatErr(err)), false
	case err != nil:
		return script.ErrorReply("ERR write failed, nothing was written: " + flatErr(err)), false
	}
	return rep, false
}

// scriptKeyError is the error c.key answers for an invalid key, or "".
func (c *client) scriptKeyError(b []byte) string {
	switch {
	case !utf8.Valid(b) || strings.IndexByte(string(b), 0) >= 0:
		return "ERR invalid key: keys must be valid UTF-8 without NUL bytes"
	case len(c.s.Namespace)+len(b) > mirror.MaxKeyBytes:
		return fmt.Sprintf("ERR key too long: at most %d bytes", mirror.MaxKeyBytes-len(c.s.Namespace))
	}
	return ""
}

func flatErr(err error) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(err.Error())
}

// txView is a script's transaction seen as the server's Mirror and Writer:
// the commands of the script that read or write keys run on a scratch
// server whose Mirror and Writer it is. Reads of the declared keys are the
// transaction's (under its locks, its own writes included); what reads no
// key (SCAN, KEYS, DBSIZE, the state) is the mirror's. failed records a
// statement that lost the transaction: the run stops there.
type txView struct {
	Mirror
	tx     *pgstore.Tx
	ctx    context.Context
	failed error
	// read holds the declared keys' rows as read under the locks; a key
	// the script wrote since is read from the transaction again.
	read    map[string]pgstore.TxRow
	written map[string]bool
	// steps are the writes the script made, and results what they gave;
	// pubs its PUBLISHes, sent after them.
	steps   []pgstore.BlockStep
	results []mirror.WriteResult
	pubs    []pgstore.Message
}

// readAll reads every declared key under the locks: the state the script
// runs on, which its block WATCHes.
func (v *txView) readAll(keys []string) ([]pgstore.WatchedKey, error) {
	rows, err := v.tx.Rows(v.ctx, keys)
	if err != nil {
		return nil, err
	}
	v.read, v.written = rows, map[string]bool{}
	watch := make([]pgstore.WatchedKey, 0, len(keys))
	for _, k := range keys {
		r := rows[k]
		watch = append(watch, pgstore.WatchedKey{Key: k, Found: r.Live, Version: r.Version})
	}
	return watch, nil
}

// compare logs a write whose result in the group commit differs from the
// one the script was given (it would mean the commands are not
// deterministic on one state).
func (v *txView) compare(c *client, res pgstore.BlockResult) {
	for i, want := range v.results {
		r := res.Steps[i]
		if r.Res.Reply != want.Reply || r.Res.Int != want.Int || string(r.Res.Bulk) != string(want.Bulk) ||
			(r.Res.Err == nil) != (want.Err == nil) {
			c.s.Logger.Warn("a script's write gave another result in the group commit than in its transaction",
				"client", c.id, "step", i)
		}
	}
}

var _ mirror.Writer = (*txView)(nil)

// fail records err as the transaction's loss, and returns it.
func (v *txView) fail(err error) error {
	if v.failed == nil {
		v.failed = err
	}
	return err
}

// Write implements mirror.Writer within the transaction.
func (v *txView) Write(ctx context.Context, op mirror.WriteOp) (mirror.WriteResult, error) {
	res, err := v.tx.Write(ctx, op)
	if err != nil {
		return res, v.fail(err)
	}
	for _, k := range op.Keys {
		v.written[k] = true
	}
	if res.Err == nil {
		v.steps = append(v.steps, pgstore.BlockStep{Op: &op})
		v.results = append(v.results, res)
	}
	return res, nil
}

// row reads a key in the transaction.
func (v *txView) row(key string) (pgstore.TxRow, error) {
	if r, ok := v.read[key]; ok && !v.written[key] {
		return r, nil
	}
	if _, declared := v.read[key]; !declared && v.tx.Declared(key) && !v.written[key] {
		return pgstore.TxRow{}, nil // declared, no row
	}
	r, err := v.tx.Read(v.ctx, key)
	if err != nil {
		return r, v.fail(err)
	}
	return r, nil
}

func (v *txView) Get(_ context.Context, key string) ([]byte, bool, error) {
	r, err := v.row(key)
	return r.Value, err == nil && r.Live, err
}

func (v *txView) GetMulti(_ context.Context, keys []string, _ int64, emit func([]byte)) error {
	rows, err := v.tx.Rows(v.ctx, keys)
	if err != nil {
		return v.fail(err)
	}
	for _, k := range keys {
		if r, ok := rows[k]; ok && r.Live {
			emit(r.Value)
		} else {
			emit(nil)
		}
	}
	return nil
}

func (v *txView) Exists(key string) (mirror.Lookup, error) {
	r, err := v.row(key)
	if err != nil || !r.Live {
		return mirror.Lookup{}, err
	}
	return mirror.Lookup{Found: true, Version: r.Version, Expires: r.Expires, Size: len(r.Value)}, nil
}

// PTTL is measured against this host's clock (the mirror's measures
// against its estimate of the database's).
func (v *txView) PTTL(key string) (int64, bool, error) {
	l, err := v.Exists(key)
	switch {
	case err != nil || !l.Found:
		return 0, false, err
	case l.Expires == mirror.NoExpiry:
		return -1, true, nil
	}
	return max((l.Expires-time.Now().UnixMicro())/1000, 0), true, nil
}

func (v *txView) StrLen(_ context.Context, key string) (int64, error) {
	l, err := v.Exists(key)
	return int64(l.Size), err
}
