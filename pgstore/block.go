package pgstore

// MULTI/EXEC blocks in the group commit (migrations/0013_blocks.sql).

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"pgmirror/mirror"
)

// Block is a MULTI/EXEC block: its steps run, in order, inside one batch of
// the group commit, under the advisory locks of every key they name and of
// every watched key (taken with the batch's others, in the one order all
// writers share). If a watched key changed since WATCH, nothing of the
// block runs (BlockResult.Aborted). A write step runs as a single command
// does (in its own subtransaction: a run-time error fails alone); a read
// step returns the rows of its keys at that point (the block's earlier
// writes included), so the caller answers the block's reads from them. The
// batch publishes the block with everything else it changed as one unit.
type Block struct {
	Steps []BlockStep
	Watch []WatchedKey
}

// BlockStep is one command of a Block: a write (Op), a PUBLISH (Publish:
// sent after the batch's changes, in order), or the keys of a read.
type BlockStep struct {
	Op      *mirror.WriteOp
	Publish *Message
	Read    []string
}

// Message is a pub/sub message on an application channel.
type Message struct {
	Channel string
	Data    []byte
}

// WatchedKey is a watched key's state at WATCH.
type WatchedKey struct {
	Key     string
	Found   bool  // live at WATCH
	Version int64 // its version then, if Found
}

// BlockResult is what a Block did: unless Aborted, a result per step.
type BlockResult struct {
	Aborted bool
	Steps   []BlockStepResult
}

// BlockStepResult is a step's outcome: a write's result (Res), or a read's
// rows by key (a key without a row is missing from Rows).
type BlockStepResult struct {
	Res  mirror.WriteResult
	Rows map[string]TxRow
}

// blockReq is a queued Block.
type blockReq struct {
	b       Block
	keys    []string // every key of the block and every watched key, sorted
	res     BlockResult
	sent    []bool // steps encoded (a write that failed checkOp is not sent)
	replied []bool
	head    bool // the head's reply row arrived
}

// WriteBlock runs b in the group commit and returns its outcome. The error
// is a batch failure, as Write's: it wraps mirror.ErrWriteUnavailable
// (nothing of the block was written) or mirror.ErrWriteUnknown.
func (w *Writer) WriteBlock(ctx context.Context, b Block) (BlockResult, error) {
	br := &blockReq{b: b, res: BlockResult{Steps: make([]BlockStepResult, len(b.Steps))},
		sent: make([]bool, len(b.Steps)), replied: make([]bool, len(b.Steps))}
	r := &writeReq{blk: br, cost: 1}
	for i, s := range b.Steps {
		switch {
		case s.Op != nil:
			if msg := checkOp(s.Op); msg != "" {
				br.res.Steps[i].Res.Err = errors.New(msg)
				continue
			}
			if s.Op.Kind == mirror.WriteFlush {
				br.res.Steps[i].Res.Err = errors.New("ERR pgmirror: FLUSHDB and FLUSHALL cannot run inside MULTI")
				continue
			}
			br.keys = append(br.keys, s.Op.Keys...)
			r.op.Origin = s.Op.Origin
			for _, v := range s.Op.Values {
				r.size += len(v)
			}
		case s.Publish != nil:
			if n := len(s.Publish.Channel) + len(s.Publish.Data); n > MaxMessageBytes {
				br.res.Steps[i].Res.Err = fmt.Errorf("ERR %w: channel and message take %d bytes, at most %d",
					ErrMessageTooLarge, n, MaxMessageBytes)
				continue
			}
			r.size += len(s.Publish.Data)
		default:
			br.keys = append(br.keys, s.Read...)
		}
		br.sent[i] = true
		r.cost++
	}
	for _, k := range b.Watch {
		br.keys = append(br.keys, k.Key)
	}
	slices.Sort(br.keys)
	br.keys = slices.Compact(br.keys)
	r.op.Keys = br.keys
	if _, err := w.enqueue(ctx, r); err != nil {
		return BlockResult{}, err
	}
	return br.res, nil
}

// watchJSON is a watched key as pgmirror_write reads it.
type watchJSON struct {
	Key     string `json:"key"`
	Found   bool   `json:"f"`
	Version int64  `json:"v"`
}

// encode appends the block's head and steps to a batch's commands.
func (br *blockReq) encode(req int, ops []opJSON, refs []opRef, vals *[]byte) ([]opJSON, []opRef) {
	head := opJSON{K: "watch", Keys: br.keys, W: []watchJSON{}}
	for _, k := range br.b.Watch {
		head.W = append(head.W, watchJSON(k))
	}
	at := len(ops)
	ops = append(ops, head)
	refs = append(refs, opRef{req, -1})
	for i, s := range br.b.Steps {
		switch {
		case !br.sent[i]:
			continue
		case s.Op != nil:
			ops = append(ops, encodeOp(s.Op, vals))
		case s.Publish != nil:
			ch := s.Publish.Channel
			ops = append(ops, opJSON{K: "pub", Keys: []string{}, P: &ch,
				V: [][2]int64{{int64(len(*vals)) + 1, int64(len(s.Publish.Data))}}})
			*vals = append(*vals, s.Publish.Data...)
		default:
			ops = append(ops, opJSON{K: "read", Keys: append([]string{}, s.Read...)})
		}
		refs = append(refs, opRef{req, i})
	}
	ops[at].N = len(ops) - at - 1
	return ops, refs
}

// row takes a row of the batch's statement that belongs to the block.
func (br *blockReq) row(step int, r *writeRow, out *outcome) {
	if step < 0 {
		br.head = true
		br.res.Aborted = r.reply.String == "nil"
		return
	}
	s := &br.res.Steps[step]
	switch r.rec {
	case "reply":
		br.replied[step] = true
		r.setReply(&s.Res)
	case "row":
		if s.Rows == nil {
			s.Rows = map[string]TxRow{}
		}
		v := r.val.V
		if v == nil {
			v = []byte{}
		}
		s.Rows[r.key.String] = TxRow{Found: true, Live: !r.del.Bool, Version: r.ver.Int64, Expires: expiry(r.exp),
			PTTL: r.rInt.Int64, Value: v}
	case "state":
		op := br.b.Steps[step].Op
		c := stateChange(op, &s.Res, r.key.String, r.ver.Int64, expiry(r.exp), r.del.Bool, r.val)
		c.Origin = op.Origin
		s.Res.States = append(s.Res.States, c)
		out.changes = append(out.changes, c)
	}
}

// ended checks the block's rows once the statement has ended.
func (br *blockReq) ended() error {
	if !br.head {
		return errors.New("pgmirror_write returned no row for a block's head")
	}
	if br.res.Aborted {
		br.res.Steps = nil
		return nil
	}
	for i, s := range br.b.Steps {
		if (s.Op != nil || s.Publish != nil) && br.sent[i] && !br.replied[i] {
			br.res.Steps[i].Res = mirror.WriteResult{Err: errors.New("ERR internal error: no reply for the command")}
		}
	}
	return nil
}
