package unixsock

import (
	"strconv"
	"strings"
	"time"

	"pgmirror/mirror"
)

// registerSimple adds the string and keyspace commands answered from the
// mirror with no SQL: TIME, WAIT, TOUCH, EXPIRETIME, PEXPIRETIME,
// GETRANGE and SUBSTR; and AUTH.
func registerSimple(t *commandTable) {
	// TIME is answered while loading (Redis's "loading"); WAIT is not for
	// scripts (Redis's "noscript") and, as in Redis, refused while loading.
	t.handle("time", 1, noKeys, connFlags, cmdTime)
	t.handle("wait", 3, noKeys, flagMulti|flagMirror, cmdWait)
	t.handle("touch", -2, allKeys, readFlags, cmdTouch)
	t.handle("expiretime", 2, oneKey, readFlags, func(c *client, a [][]byte) { c.expireTime(a[1], false) })
	t.handle("pexpiretime", 2, oneKey, readFlags, func(c *client, a [][]byte) { c.expireTime(a[1], true) })
	t.handle("getrange", 4, oneKey, readFlags|flagPostgres, cmdGetRange)
	t.handle("substr", 4, oneKey, readFlags|flagPostgres, cmdGetRange)

	// AUTH (auth.go): answered while loading, not in scripts.
	t.handle("auth", -2, noKeys, flagMulti, cmdAuth)

	registerBits(t)     // bits.go
	registerKeyspace(t) // keyspace.go
}

// cmdTime answers the database clock as the mirror estimates it (the
// clock expiry is judged by): seconds and microseconds, as Redis's TIME.
func cmdTime(c *client, _ [][]byte) {
	us := time.Now().UnixMicro() + c.s.Mirror.ClockLead().Microseconds()
	c.array(2)
	c.bulkString(strconv.FormatInt(us/1e6, 10))
	c.bulkString(strconv.FormatInt(us%1e6, 10))
}

// cmdWait answers WAIT numreplicas timeout: pgmirror has no replicas (a
// write is answered once committed in Postgres), so 0 at once.
func cmdWait(c *client, a [][]byte) {
	if _, ok := parseInt(a[1]); !ok {
		c.errorReply(errNotInteger)
		return
	}
	switch n, ok := parseInt(a[2]); {
	case !ok:
		c.errorReply("ERR timeout is not an integer or out of range")
	case n < 0:
		c.errorReply("ERR timeout is negative")
	default:
		c.integer(0)
	}
}

// cmdTouch counts the keys present (a key named twice counts twice) and
// marks each read, as GET does: the access-time flush records it.
func cmdTouch(c *client, a [][]byte) { c.countKeys(a[1:], c.mir().Touch) }

// expireTime answers EXPIRETIME (seconds) or PEXPIRETIME (milliseconds):
// the absolute expiry, -1 without one, -2 for a missing key.
func (c *client) expireTime(key []byte, millis bool) {
	k, ok := c.readKey(key)
	if !ok {
		return
	}
	l, err := c.mir().Exists(k)
	switch {
	case err != nil:
		c.readErr(err)
	case !l.Found:
		c.integer(-2)
	case l.Expires == mirror.NoExpiry:
		c.integer(-1)
	case millis:
		c.integer(l.Expires / 1000)
	default:
		c.integer(l.Expires / 1e6)
	}
}

// cmdGetRange answers GETRANGE (and its old name SUBSTR) with Redis 7.0's
// index rules: negative indexes count from the end, and are clamped to the
// string.
func cmdGetRange(c *client, a [][]byte) {
	start, ok1 := parseInt(a[2])
	end, ok2 := parseInt(a[3])
	if !ok1 || !ok2 {
		c.errorReply(errNotInteger)
		return
	}
	k, ok := c.readKey(a[1])
	if !ok {
		return
	}
	v, _, err := c.mir().Get(c.ctx(), k)
	if err != nil {
		c.readErr(err)
		return
	}
	lo, hi, ok := clampRange(start, end, int64(len(v)))
	if !ok {
		c.bulkString("")
		return
	}
	c.bulk(v[lo : hi+1])
}

// clampRange turns GETRANGE's start and end into indexes of a string of n
// bytes, as Redis 7.0 does; ok is false for an empty range.
func clampRange(start, end, n int64) (int64, int64, bool) {
	if start < 0 && end < 0 && start > end {
		return 0, 0, false
	}
	if start < 0 {
		start += n
	}
	if end < 0 {
		end += n
	}
	start, end = max(start, 0), max(end, 0)
	end = min(end, n-1)
	if start > end || n == 0 {
		return 0, 0, false
	}
	return start, end, true
}

// lower is the lower-case form of an option argument.
func lower(b []byte) string { return strings.ToLower(string(b)) }
