package unixsock

import (
	"strings"

	"pgmirror/mirror"
)

// registerStringWrites adds the write commands of issue 17: FLUSHDB and
// FLUSHALL (flush.go), GETSET, SETRANGE, SETBIT, BITOP, RENAME, RENAMENX and
// COPY, each run in Postgres by pgmirror_write (migrations/0010_commands.sql).
func registerStringWrites(t *commandTable) {
	registerFlush(t)
	t.handle("getset", 3, oneKey, writeFlags, cmdGetSet)
	t.handle("setrange", 4, oneKey, writeFlags, cmdSetRange)
	t.handle("setbit", 4, oneKey, writeFlags, cmdSetBit)
	t.handle("bitop", -4, keyRange{2, -1, 1}, writeFlags, cmdBitOp)
	t.handle("rename", 3, keyRange{1, 2, 1}, writeFlags, func(c *client, a [][]byte) { c.rename(a, mirror.WriteRename) })
	t.handle("renamenx", 3, keyRange{1, 2, 1}, writeFlags, func(c *client, a [][]byte) { c.rename(a, mirror.WriteRenameNX) })
	t.handle("copy", -3, keyRange{1, 2, 1}, writeFlags, cmdCopy)
}

// cmdGetSet is SET key value GET: the old value, and no expiry kept.
func cmdGetSet(c *client, a [][]byte) {
	k, ok := c.key(a[1])
	if !ok || !c.value(a[2]) {
		return
	}
	c.write(mirror.WriteOp{Kind: mirror.WriteSet, Keys: []string{k}, Values: [][]byte{a[2]}, Get: true}, c.replyResult)
}

func cmdSetRange(c *client, a [][]byte) {
	k, ok := c.key(a[1])
	if !ok {
		return
	}
	off, ok := parseInt(a[2])
	switch {
	case !ok:
		c.errorReply(errNotInteger)
	case off < 0:
		c.errorReply("ERR offset is out of range")
	case c.value(a[3]):
		c.write(mirror.WriteOp{Kind: mirror.WriteSetRange, Keys: []string{k}, Values: [][]byte{a[3]}, Int: off}, c.replyResult)
	}
}

func cmdSetBit(c *client, a [][]byte) {
	k, ok := c.key(a[1])
	if !ok {
		return
	}
	off, ok := parseInt(a[2])
	if !ok || off < 0 || off >= 1<<32 {
		c.errorReply("ERR bit offset is not an integer or out of range")
		return
	}
	if bit := string(a[3]); bit != "0" && bit != "1" {
		c.errorReply("ERR bit is not an integer or out of range")
		return
	}
	c.write(mirror.WriteOp{Kind: mirror.WriteSetBit, Keys: []string{k}, Values: [][]byte{a[3]}, Int: off}, c.replyResult)
}

func cmdBitOp(c *client, a [][]byte) {
	op := strings.ToLower(string(a[1]))
	switch {
	case op != "and" && op != "or" && op != "xor" && op != "not":
		c.errorReply("ERR syntax error")
		return
	case op == "not" && len(a) != 4:
		c.errorReply("ERR BITOP NOT must be called with a single source key.")
		return
	}
	keys, ok := c.keys(a[2:])
	if ok {
		c.write(mirror.WriteOp{Kind: mirror.WriteBitOp, Keys: keys, Sub: op}, c.replyResult)
	}
}

// rename answers RENAME and RENAMENX.
func (c *client) rename(a [][]byte, kind mirror.WriteKind) {
	keys, ok := c.keys(a[1:3])
	if ok {
		c.write(mirror.WriteOp{Kind: kind, Keys: keys}, c.replyResult)
	}
}

// cmdCopy answers COPY source destination [DB 0] [REPLACE]; there is one
// database.
func cmdCopy(c *client, a [][]byte) {
	keys, ok := c.keys(a[1:3])
	if !ok {
		return
	}
	op := mirror.WriteOp{Kind: mirror.WriteCopy, Keys: keys}
	for i := 3; i < len(a); i++ {
		switch opt := strings.ToLower(string(a[i])); {
		case opt == "replace":
			op.Sub = "replace"
		case opt == "db" && i+1 < len(a):
			i++
			n, ok := parseInt(a[i])
			if !ok {
				c.errorReply(errNotInteger)
				return
			}
			if n != 0 {
				c.errorReply("ERR DB index is out of range")
				return
			}
		default:
			c.errorReply("ERR syntax error")
			return
		}
	}
	c.write(op, c.replyResult)
}
