package unixsock

import (
	"context"
	"errors"
	"strings"

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

// execInPostgres runs a block in one Postgres transaction; see multi.go.
func (c *client) execInPostgres(cmds []queuedCmd) {
	b, ok := c.s.Writer.(txBeginner)
	if !ok {
		c.errorReply("ERR transactions need pgmirror's Postgres writer")
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx(), writeTimeout)
	defer cancel()
	tx, err := b.Begin(ctx, c.blockKeys(cmds))
	if err != nil {
		c.errorReply("ERR transaction failed, nothing was written: " + err.Error())
		return
	}
	abort, err := c.watchChanged(ctx, tx)
	if err != nil || abort {
		tx.Rollback()
		if err != nil {
			c.errorReply("ERR transaction failed, nothing was written: " + err.Error())
		} else {
			c.nullArray()
		}
		return
	}
	mark := c.markReplies()
	c.txn.tx, c.txn.txCtx, c.txn.hold = tx, ctx, true
	c.array(len(cmds))
	for _, q := range cmds {
		c.runQueued(q)
	}
	c.txn.tx, c.txn.txCtx = nil, nil
	err = tx.Commit(ctx)
	c.txn.hold = false
	if err != nil {
		c.dropReplies(mark)
		c.errorReply(txError(err))
	}
}

// txError words a failed transaction's error.
func txError(err error) string {
	msg := err.Error()
	if strings.HasPrefix(msg, "transaction failed") {
		return "ERR " + msg
	}
	return "ERR transaction failed: " + msg
}

// txRead answers a read of a block in Postgres from its transaction's rows.
func (c *client) txRows(a [][]byte) (map[string]pgstore.TxRow, []string, bool) {
	keys, ok := c.readKeys(a)
	if !ok {
		return nil, nil, false
	}
	rows, err := c.txn.tx.Rows(c.txn.txCtx, keys)
	if err != nil {
		if errors.Is(err, pgstore.ErrTxUndeclared) {
			c.errorReply("ERR pgmirror: " + err.Error())
		} else {
			c.errorReply(txError(err))
		}
		return nil, nil, false
	}
	return rows, keys, true
}

// txReads are the reads a block in Postgres answers from its transaction.
var txReads = map[string]func(c *client, a [][]byte){
	"get": func(c *client, a [][]byte) {
		if rows, keys, ok := c.txRows(a[1:2]); ok {
			c.txValue(rows[keys[0]])
		}
	},
	"mget": func(c *client, a [][]byte) {
		if rows, keys, ok := c.txRows(a[1:]); ok {
			c.array(len(keys))
			for _, k := range keys {
				c.txValue(rows[k])
			}
		}
	},
	"exists": func(c *client, a [][]byte) {
		if rows, keys, ok := c.txRows(a[1:]); ok {
			n := 0
			for _, k := range keys {
				if rows[k].Live {
					n++
				}
			}
			c.integer(int64(n))
		}
	},
	"ttl":  func(c *client, a [][]byte) { c.txTTL(a, false) },
	"pttl": func(c *client, a [][]byte) { c.txTTL(a, true) },
	"strlen": func(c *client, a [][]byte) {
		if rows, keys, ok := c.txRows(a[1:2]); ok {
			n := 0
			if r := rows[keys[0]]; r.Live {
				n = len(r.Value)
			}
			c.integer(int64(n))
		}
	},
	"type": func(c *client, a [][]byte) {
		if rows, keys, ok := c.txRows(a[1:2]); ok {
			if rows[keys[0]].Live {
				c.status("string")
			} else {
				c.status("none")
			}
		}
	},
}

func (c *client) txValue(r pgstore.TxRow) {
	if !r.Live {
		c.null()
		return
	}
	c.bulk(r.Value)
}

func (c *client) txTTL(a [][]byte, millis bool) {
	rows, keys, ok := c.txRows(a[1:2])
	if !ok {
		return
	}
	r := rows[keys[0]]
	switch {
	case !r.Live:
		c.integer(-2)
	case r.PTTL < 0:
		c.integer(-1)
	case millis:
		c.integer(r.PTTL)
	default:
		c.integer((r.PTTL + 500) / 1000)
	}
}
