package unixsock

import (
	"math/bits"
)

// GETBIT, BITCOUNT and BITPOS read a value's bits as Redis 7.0 does: bit 0
// is the most significant bit of the first byte; ranges count bytes, or
// bits with BIT, negative indexes from the end.

// maxBitOffset is the largest offset Redis accepts (512 MiB of bits).
const maxBitOffset = 1<<32 - 1

func registerBits(t *commandTable) {
	t.handle("getbit", 3, oneKey, readFlags|flagPostgres, cmdGetBit)
	t.handle("bitcount", -2, oneKey, readFlags|flagPostgres, cmdBitCount)
	t.handle("bitpos", -3, oneKey, readFlags|flagPostgres, cmdBitPos)
}

// valueOf reads key's value for a bit command; ok is false after an error
// reply. A missing key reads as nil.
func (c *client) valueOf(key []byte) ([]byte, bool, bool) {
	k, ok := c.readKey(key)
	if !ok {
		return nil, false, false
	}
	v, found, err := c.mir().Get(c.ctx(), k)
	if err != nil {
		c.readErr(err)
		return nil, false, false
	}
	return v, found, true
}

func cmdGetBit(c *client, a [][]byte) {
	off, ok := parseInt(a[2])
	if !ok || off < 0 || off > maxBitOffset {
		c.errorReply("ERR bit offset is not an integer or out of range")
		return
	}
	v, _, ok := c.valueOf(a[1])
	if !ok {
		return
	}
	if i := off >> 3; i < int64(len(v)) {
		c.integer(int64(v[i]>>(7-off&7)) & 1)
		return
	}
	c.integer(0)
}

// bitRange turns a range of a value of n bytes into bit indexes [from,
// to], clamped as Redis clamps it; empty when from > to.
func bitRange(start, end int64, isBit bool, n int64) (int64, int64) {
	total := n
	if isBit {
		total = n * 8
	}
	if start < 0 {
		start += total
	}
	if end < 0 {
		end += total
	}
	start, end = max(start, 0), max(end, 0)
	end = min(end, total-1)
	if isBit {
		return start, end
	}
	return start * 8, end*8 + 7
}

// parseUnit reads BYTE or BIT; ok is false after an error reply.
func parseUnit(c *client, b []byte) (isBit, ok bool) {
	switch lower(b) {
	case "bit":
		return true, true
	case "byte":
		return false, true
	}
	c.errorReply(errSyntax)
	return false, false
}

// cmdBitCount answers BITCOUNT key [start end [BYTE|BIT]]; as in Redis
// 7.0, a missing key answers 0 before the arguments are read.
func cmdBitCount(c *client, a [][]byte) {
	v, found, ok := c.valueOf(a[1])
	if !ok {
		return
	}
	if !found {
		c.integer(0)
		return
	}
	var start, end int64
	isBit, ranged := false, len(a) > 2
	switch len(a) {
	case 2:
	case 4, 5:
		var ok1, ok2 bool
		start, ok1 = parseInt(a[2])
		end, ok2 = parseInt(a[3])
		if !ok1 || !ok2 {
			c.errorReply(errNotInteger)
			return
		}
		if len(a) == 5 {
			var ok bool
			if isBit, ok = parseUnit(c, a[4]); !ok {
				return
			}
		}
	default:
		c.errorReply(errSyntax)
		return
	}
	from, to := int64(0), int64(len(v))*8-1
	if ranged {
		from, to = bitRange(start, end, isBit, int64(len(v)))
	}
	c.integer(countBits(v, from, to))
}

// countBits counts the set bits of v from bit from to bit to, inclusive.
func countBits(v []byte, from, to int64) int64 {
	if from > to {
		return 0
	}
	n := int64(0)
	for i := from >> 3; i <= to>>3; i++ {
		b := v[i]
		if i == from>>3 {
			b &= 0xff >> (from & 7)
		}
		if i == to>>3 {
			b &= 0xff << (7 - to&7)
		}
		n += int64(bits.OnesCount8(b))
	}
	return n
}

// cmdBitPos answers BITPOS key bit [start [end [BYTE|BIT]]], checking its
// arguments in Redis's order (a missing key answers before the range is
// read).
func cmdBitPos(c *client, a [][]byte) {
	bit, ok := parseInt(a[2])
	if !ok {
		c.errorReply(errNotInteger)
		return
	}
	if bit != 0 && bit != 1 {
		c.errorReply("ERR The bit argument must be 1 or 0.")
		return
	}
	v, found, ok := c.valueOf(a[1])
	if !ok {
		return
	}
	if !found {
		c.integer(-bit) // an endless run of zeros
		return
	}
	from, to, endGiven, ok := bitPosRange(c, a, int64(len(v)))
	if !ok {
		return
	}
	c.integer(findBit(v, byte(bit), from, to, endGiven))
}

// bitPosRange reads BITPOS's optional range as bit indexes.
func bitPosRange(c *client, a [][]byte, n int64) (from, to int64, endGiven, ok bool) {
	if len(a) == 3 {
		return 0, n*8 - 1, false, true
	}
	if len(a) > 6 {
		c.errorReply(errSyntax)
		return 0, 0, false, false
	}
	start, ok := parseInt(a[3])
	if !ok {
		c.errorReply(errNotInteger)
		return 0, 0, false, false
	}
	isBit := false
	if len(a) == 6 {
		if isBit, ok = parseUnit(c, a[5]); !ok {
			return 0, 0, false, false
		}
	}
	end := int64(-1)
	if len(a) >= 5 {
		if end, ok = parseInt(a[4]); !ok {
			c.errorReply(errNotInteger)
			return 0, 0, false, false
		}
		endGiven = true
	}
	from, to = bitRange(start, end, isBit, n)
	return from, to, endGiven, true
}

// findBit returns the index of the first bit equal to bit in v from bit
// from to bit to; -1 when there is none, but for a clear bit without an
// explicit end: the value is then padded with zeros, so the bit after
// the range (as Redis counts it, the next byte's first).
func findBit(v []byte, bit byte, from, to int64, endGiven bool) int64 {
	if from > to {
		return -1
	}
	skip := byte(0xff) // a byte with no bit to find
	if bit == 1 {
		skip = 0
	}
	for i := from; i <= to; i++ {
		if i&7 == 0 && i+7 <= to && v[i>>3] == skip {
			i += 7
			continue
		}
		if v[i>>3]>>(7-i&7)&1 == bit {
			return i
		}
	}
	if bit == 1 || endGiven {
		return -1
	}
	return (to>>3 + 1) * 8
}
