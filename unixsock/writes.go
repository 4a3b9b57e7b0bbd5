package unixsock

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"pgmirror/mirror"
)

// Writes go to Postgres through the Writer and are answered only after
// commit (and after the mirror applied them: read-your-writes).

// write runs op and answers with reply, or with the error.
func (c *client) write(op mirror.WriteOp, reply func(mirror.WriteResult)) {
	op.Origin = uint64(c.id) // the mirror's events name the client whose write it was
	ctx, cancel := context.WithTimeout(c.ctx(), writeTimeout)
	defer cancel()
	var (
		res mirror.WriteResult
		err error
	)
	if c.txn.blk != nil { // in EXEC (exec.go)
		var answer bool
		if res, answer = c.blockWrite(op); !answer {
			return
		}
	} else if c.trk.tc != nil && c.beginOwnWrite(op.Keys) { // NOLOOP (tracktable.go)
		res, err = c.s.Writer.Write(ctx, op)
		c.endOwnWrite(op.Keys, res.States)
	} else {
		res, err = c.s.Writer.Write(ctx, op)
	}
	switch {
	case errors.Is(err, mirror.ErrWriteUnknown):
		c.errorReply("ERR write outcome unknown (connection to Postgres lost while committing); read the key to check: " + err.Error())
	case err != nil:
		c.errorReply("ERR write failed, nothing was written: " + err.Error())
	case res.Err != nil:
		msg := res.Err.Error()
		if !strings.HasPrefix(msg, "ERR ") {
			msg = "ERR " + msg
		}
		c.errorReply(msg)
	default:
		reply(res)
	}
}

// replyResult answers with the result's own shape.
func (c *client) replyResult(r mirror.WriteResult) {
	switch r.Reply {
	case mirror.ReplyOK:
		c.ok()
	case mirror.ReplyNil:
		c.null()
	case mirror.ReplyInt:
		c.integer(r.Int)
	case mirror.ReplyBulk:
		c.bulk(r.Bulk)
	}
}

// expiryArg parses an expiry amount in unit milliseconds; ok is false after an error reply.
func (c *client) expiryArg(b []byte, unit int64, cmd string) (int64, bool) {
	n, ok := parseInt(b)
	if !ok {
		c.errorReply(errNotInteger)
		return 0, false
	}
	if n <= 0 || n > math.MaxInt64/unit {
		c.errorReply(fmt.Sprintf("ERR invalid expire time in '%s' command", cmd))
		return 0, false
	}
	return n * unit, true
}

func cmdSet(c *client, a [][]byte) {
	k, ok := c.key(a[1])
	if !ok || !c.value(a[2]) {
		return
	}
	op := mirror.WriteOp{Kind: mirror.WriteSet, Keys: []string{k}, Values: [][]byte{a[2]}}
	if c.writeOptions(&op, a[3:], optCond|optGet|optKeepTTL, "set") {
		c.write(op, c.replyResult)
	}
}

// The options writeOptions accepts besides EX, PX, EXAT and PXAT.
const (
	optCond    = 1 << iota // NX, XX (SET)
	optGet                 // GET (SET)
	optKeepTTL             // KEEPTTL (SET)
	optPersist             // PERSIST (GETEX)
)

// writeOptions parses the options of SET and GETEX into op: EX, PX, EXAT,
// PXAT and those of allow, each at most once, one expiry option at most
// (KEEPTTL and PERSIST are expiry options), NX and XX not together. cmd
// names the command in an invalid expiry's error. ok is false after an
// error reply.
func (c *client) writeOptions(op *mirror.WriteOp, opts [][]byte, allow int, cmd string) bool {
	for i := 0; i < len(opts); i++ {
		opt := strings.ToLower(string(opts[i]))
		noExpiry := op.Expiry == mirror.ExpiryNone
		switch {
		case allow&optCond != 0 && opt == "nx" && op.Cond == mirror.CondNone:
			op.Cond = mirror.CondNX
		case allow&optCond != 0 && opt == "xx" && op.Cond == mirror.CondNone:
			op.Cond = mirror.CondXX
		case allow&optGet != 0 && opt == "get" && !op.Get:
			op.Get = true
		case allow&optKeepTTL != 0 && opt == "keepttl" && noExpiry:
			op.Expiry = mirror.ExpiryKeep
		case allow&optPersist != 0 && opt == "persist" && noExpiry:
			op.Expiry = mirror.ExpiryPersist
		case (opt == "ex" || opt == "px" || opt == "exat" || opt == "pxat") && noExpiry && i+1 < len(opts):
			unit := int64(1)
			if opt == "ex" || opt == "exat" {
				unit = 1000
			}
			ms, ok := c.expiryArg(opts[i+1], unit, cmd)
			if !ok {
				return false
			}
			op.Expiry, op.ExpiryMS = mirror.ExpiryIn, ms
			if opt == "exat" || opt == "pxat" {
				op.Expiry = mirror.ExpiryAt
			}
			i++
		default:
			c.errorReply(errSyntax)
			return false
		}
	}
	return true
}

// setEx answers SETEX (unit 1000) and PSETEX (unit 1).
func (c *client) setEx(a [][]byte, unit int64) {
	name := "setex"
	if unit == 1 {
		name = "psetex"
	}
	k, ok := c.key(a[1])
	if !ok {
		return
	}
	ms, ok := c.expiryArg(a[2], unit, name)
	if !ok || !c.value(a[3]) {
		return
	}
	c.write(mirror.WriteOp{Kind: mirror.WriteSet, Keys: []string{k}, Values: [][]byte{a[3]},
		Expiry: mirror.ExpiryIn, ExpiryMS: ms}, c.replyResult)
}

func cmdSetNX(c *client, a [][]byte) {
	k, ok := c.key(a[1])
	if !ok || !c.value(a[2]) {
		return
	}
	c.write(mirror.WriteOp{Kind: mirror.WriteSet, Keys: []string{k}, Values: [][]byte{a[2]}, Cond: mirror.CondNX},
		func(r mirror.WriteResult) {
			if r.Reply == mirror.ReplyOK {
				c.integer(1)
			} else {
				c.integer(0)
			}
		})
}

func cmdGetDel(c *client, a [][]byte) {
	k, ok := c.key(a[1])
	if !ok {
		return
	}
	c.write(mirror.WriteOp{Kind: mirror.WriteGetDel, Keys: []string{k}}, c.replyResult)
}

func cmdGetEx(c *client, a [][]byte) {
	k, ok := c.key(a[1])
	if !ok {
		return
	}
	op := mirror.WriteOp{Kind: mirror.WriteGetEx, Keys: []string{k}}
	if c.writeOptions(&op, a[2:], optPersist, "getex") {
		c.write(op, c.replyResult)
	}
}

// mset answers MSET and MSETNX.
func (c *client) mset(a [][]byte, kind mirror.WriteKind) {
	if len(a)%2 != 1 {
		c.errorReply(fmt.Sprintf("ERR wrong number of arguments for '%s' command", strings.ToLower(string(a[0]))))
		return
	}
	op := mirror.WriteOp{Kind: kind}
	for i := 1; i < len(a); i += 2 {
		k, ok := c.key(a[i])
		if !ok || !c.value(a[i+1]) {
			return
		}
		op.Keys = append(op.Keys, k)
		op.Values = append(op.Values, a[i+1])
	}
	c.write(op, c.replyResult)
}

func (c *client) incr(key []byte, delta int64) {
	k, ok := c.key(key)
	if !ok {
		return
	}
	c.write(mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: []string{k}, Int: delta}, c.replyResult)
}

// incrBy answers INCRBY (sign 1) and DECRBY (sign -1).
func (c *client) incrBy(a [][]byte, sign int64) {
	n, ok := parseInt(a[2])
	if !ok {
		c.errorReply(errNotInteger)
		return
	}
	if sign < 0 {
		if n == math.MinInt64 {
			c.errorReply("ERR decrement would overflow")
			return
		}
		n = -n
	}
	c.incr(a[1], n)
}

func cmdIncrByFloat(c *client, a [][]byte) {
	k, ok := c.key(a[1])
	if !ok {
		return
	}
	s := string(a[2])
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) || math.IsNaN(f) || strings.TrimSpace(s) != s || strings.ContainsAny(s, "xXpP_") {
		c.errorReply("ERR value is not a valid float")
		return
	}
	if math.IsInf(f, 0) {
		c.errorReply("ERR increment would produce NaN or Infinity")
		return
	}
	c.write(mirror.WriteOp{Kind: mirror.WriteIncrByFloat, Keys: []string{k}, Float: s}, c.replyResult)
}

func cmdAppend(c *client, a [][]byte) {
	k, ok := c.key(a[1])
	if !ok || !c.value(a[2]) {
		return
	}
	c.write(mirror.WriteOp{Kind: mirror.WriteAppend, Keys: []string{k}, Values: [][]byte{a[2]}}, c.replyResult)
}

func cmdDel(c *client, a [][]byte) {
	ks, ok := c.keys(a[1:])
	if !ok {
		return
	}
	c.write(mirror.WriteOp{Kind: mirror.WriteDel, Keys: ks}, c.replyResult)
}

// expire answers EXPIRE, PEXPIRE (at == false) and EXPIREAT, PEXPIREAT.
func (c *client) expire(a [][]byte, unit int64, at bool) {
	name := strings.ToLower(string(a[0]))
	k, ok := c.key(a[1])
	if !ok {
		return
	}
	n, ok := parseInt(a[2])
	if !ok {
		c.errorReply(errNotInteger)
		return
	}
	if n > math.MaxInt64/unit || n < math.MinInt64/unit {
		c.errorReply(fmt.Sprintf("ERR invalid expire time in '%s' command", name))
		return
	}
	op := mirror.WriteOp{Kind: mirror.WriteExpire, Keys: []string{k}, Expiry: mirror.ExpiryIn, ExpiryMS: n * unit}
	if at {
		op.Expiry = mirror.ExpiryAt
	}
	var nx, xx, gt, lt bool
	for _, o := range a[3:] {
		switch strings.ToLower(string(o)) {
		case "nx":
			nx = true
		case "xx":
			xx = true
		case "gt":
			gt = true
		case "lt":
			lt = true
		default:
			c.errorReply("ERR Unsupported option " + clip(o))
			return
		}
	}
	switch {
	case nx && (xx || gt || lt):
		c.errorReply("ERR NX and XX, GT or LT options at the same time are not compatible")
		return
	case gt && lt:
		c.errorReply("ERR GT and LT options at the same time are not compatible")
		return
	case nx:
		op.Cond = mirror.CondNX
	case gt:
		op.Cond = mirror.CondGT // with XX too: GT already implies an existing expiry
	case lt && xx:
		op.Cond = mirror.CondXXLT
	case lt:
		op.Cond = mirror.CondLT
	case xx:
		op.Cond = mirror.CondXX
	}
	c.write(op, c.replyResult)
}

func cmdPersist(c *client, a [][]byte) {
	k, ok := c.key(a[1])
	if !ok {
		return
	}
	c.write(mirror.WriteOp{Kind: mirror.WritePersist, Keys: []string{k}}, c.replyResult)
}
