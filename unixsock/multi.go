package unixsock

// Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH (issue 17).
//
// MULTI queues the commands that follow; a command wrong at queue time
// (unknown, wrong arity, not allowed in MULTI, refused while loading) is
// answered with its error and makes EXEC answer EXECABORT with nothing run.
// EXEC runs the queue and answers an array of the replies, in order:
//   - a block of reads only, without WATCH, runs on the mirror, with no
//     query for hits, on one consistent state (exec.go's execOnMirror);
//   - any other block runs in the group commit (pgstore.Block): inside one
//     batch, under the advisory locks of every key of the block and every
//     watched key, taken with the batch's others in the one order every
//     writer takes them. WATCH is checked under those locks; each read
//     (any command reading keys) is answered from the rows the block read
//     at its place, its own earlier writes included; writes run each in its
//     own subtransaction (a run-time error fails alone); the batch
//     publishes the block with the rest of what it changed as one unit,
//     which every sidecar applies at once. If the batch fails, EXEC answers
//     an error and nothing of the block was written.

import (
	"pgmirror/mirror"
)

// queuedCost is what a queued command costs beyond its arguments' bytes.
const queuedCost = 64

// txnState is a connection's transaction state (command loop only, but for
// watchDirty, which the mirror's event handler sets).
type txnState struct {
	multi   *multiState
	watched map[string]watchedKey // namespaced key -> state at WATCH
	blk     *blockRun             // during EXEC of a block in the group commit (exec.go)
	script  *txView               // a PUBLISH of a script that writes: sent with its writes
	hold    bool                  // EXEC in progress: replies are built but not sent
}

// multiState is the queue of a MULTI block.
type multiState struct {
	cmds  []queuedCmd
	dirty bool  // a queue-time error: EXEC answers EXECABORT
	bytes int64 // accounted against --max-client-buffers
}

type queuedCmd struct {
	cmd  *command
	args [][]byte
}

// registerMulti registers the transaction commands.
func registerMulti(t *commandTable) {
	t.handle("multi", 1, noKeys, flagMulti, cmdMulti)
	t.handle("exec", 1, noKeys, flagMulti, cmdExec)
	t.handle("discard", 1, noKeys, flagMulti, cmdDiscard)
	t.handle("watch", -2, allKeys, flagMulti, cmdWatch)
	t.handle("unwatch", 1, noKeys, flagMulti, func(c *client, _ [][]byte) { c.unwatchAll(); c.ok() })
}

// queue handles a command sent inside MULTI (dispatch, with cmd as looked
// up, nil for an unknown name): true if it was queued or refused, false if
// it runs now (MULTI, EXEC, DISCARD, WATCH, QUIT).
func (c *client) queue(t *commandTable, cmd *command, args [][]byte) bool {
	m := c.txn.multi
	if cmd == nil {
		t.unknown.Add(1)
		c.errorReply(unknownCommand(args))
		m.dirty = true
		return true
	}
	switch cmd.name {
	case "multi", "exec", "discard", "watch", "quit":
		return false
	}
	switch {
	case cmd.arity > 0 && len(args) != cmd.arity || cmd.arity < 0 && len(args) < -cmd.arity:
		c.errorReply("ERR wrong number of arguments for '" + cmd.name + "' command")
	case !cmd.has(flagMulti):
		c.errorReply("ERR Command not allowed inside a transaction")
	case cmd.has(flagMirror) && c.s.Mirror.State() == mirror.StateLoading:
		c.errorReply(errLoading)
	default:
		n := int64(queuedCost)
		for _, a := range args {
			n += int64(len(a))
		}
		m.bytes += n
		c.account(n)
		m.cmds = append(m.cmds, queuedCmd{cmd, args})
		c.status("QUEUED")
		return true
	}
	m.dirty = true
	return true
}

func cmdMulti(c *client, _ [][]byte) {
	if c.txn.multi != nil {
		c.errorReply("ERR MULTI calls can not be nested")
		return
	}
	c.txn.multi = &multiState{}
	c.ok()
}

func cmdDiscard(c *client, _ [][]byte) {
	if c.txn.multi == nil {
		c.errorReply("ERR DISCARD without MULTI")
		return
	}
	c.endMulti()
	c.unwatchAll()
	c.ok()
}

// endMulti drops the queue.
func (c *client) endMulti() {
	if m := c.txn.multi; m != nil {
		c.account(-m.bytes)
		c.txn.multi = nil
	}
}

func cmdExec(c *client, _ [][]byte) {
	m := c.txn.multi
	if m == nil {
		c.errorReply("ERR EXEC without MULTI")
		return
	}
	c.endMulti()
	defer c.unwatchAll()
	switch {
	case m.dirty:
		c.errorReply("EXECABORT Transaction discarded because of previous errors.")
	case c.watchDirty():
		c.nullArray()
	case len(c.txn.watched) == 0 && !hasWrite(m.cmds):
		c.execOnMirror(m.cmds)
	default:
		c.execBlock(m.cmds)
	}
}

func hasWrite(cmds []queuedCmd) bool {
	for _, q := range cmds {
		if inBlockStep(q.cmd) {
			return true
		}
	}
	return false
}

// runQueued runs one command of a block, as dispatch would have.
func (c *client) runQueued(q queuedCmd) {
	q.cmd.calls.Add(1)
	if q.cmd.has(flagMirror) && c.s.Mirror.State() == mirror.StateLoading {
		c.errorReply(errLoading)
		return
	}
	c.trackKeys(q.cmd, q.args) // tracking.go
	q.cmd.fn(c, q.args)
}

// nullArray answers a null array (EXEC after a watched key changed).
func (c *client) nullArray() {
	if c.proto == 3 {
		c.wbuf = append(c.wbuf, "_\r\n"...)
		return
	}
	c.wbuf = append(c.wbuf, "*-1\r\n"...)
}
