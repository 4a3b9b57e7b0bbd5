package unixsock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"

	"pgmirror/mirror"
)

// Replies worded as Redis words them.
const (
	errSyntax     = "ERR syntax error"
	errNotInteger = "ERR value is not an integer or out of range"
	errLoading    = "LOADING pgmirror is loading the mirror from Postgres"
)

// registerCommands fills a server's command table: name, arity, key
// positions and flags as Redis's COMMAND reports them (where Redis has the
// command), and the handler.
func registerCommands(t *commandTable) {
	// Connection commands. QUIT, HELLO, CLIENT and CONFIG are "noscript"
	// in Redis (CLIENT and CONFIG: the subcommands pgmirror answers).
	t.handle("ping", -1, noKeys, connFlags, cmdPing)
	t.handle("echo", 2, noKeys, connFlags, func(c *client, a [][]byte) { c.bulk(a[1]) })
	t.handle("quit", -1, noKeys, flagMulti, func(c *client, _ [][]byte) { c.ok(); c.quit = true })
	t.handle("hello", -1, noKeys, flagMulti, cmdHello)
	t.handle("command", -1, noKeys, connFlags, cmdCommand)
	t.handle("client", -2, noKeys, flagMulti, cmdClient)
	t.handle("select", 2, noKeys, connFlags, cmdSelect)
	t.handle("config", -2, noKeys, flagMulti, cmdConfig)
	t.handle("info", -1, noKeys, connFlags, cmdInfo)
	t.handle("dbsize", 1, noKeys, readFlags, cmdDBSize)

	// Reads. GET, MGET and STRLEN may need Postgres: a key a loader
	// computes, or a value the mirror dropped.
	t.handle("get", 2, oneKey, readFlags|flagPostgres, cmdGet)
	t.handle("mget", -2, allKeys, readFlags|flagPostgres, cmdMGet)
	t.handle("exists", -2, allKeys, readFlags, cmdExists)
	t.handle("ttl", 2, oneKey, readFlags, func(c *client, a [][]byte) { c.ttl(a, false) })
	t.handle("pttl", 2, oneKey, readFlags, func(c *client, a [][]byte) { c.ttl(a, true) })
	t.handle("strlen", 2, oneKey, readFlags|flagPostgres, cmdStrlen)
	t.handle("type", 2, oneKey, readFlags, cmdType)
	t.handle("scan", -2, noKeys, readFlags, cmdScan)
	t.handle("keys", 2, noKeys, readFlags, cmdKeys)

	// Writes.
	t.handle("set", -3, oneKey, writeFlags, cmdSet)
	t.handle("setex", 4, oneKey, writeFlags, func(c *client, a [][]byte) { c.setEx(a, 1000) })
	t.handle("psetex", 4, oneKey, writeFlags, func(c *client, a [][]byte) { c.setEx(a, 1) })
	t.handle("setnx", 3, oneKey, writeFlags, cmdSetNX)
	t.handle("getdel", 2, oneKey, writeFlags, cmdGetDel)
	t.handle("getex", -2, oneKey, writeFlags, cmdGetEx)
	t.handle("mset", -3, keyPairs, writeFlags, func(c *client, a [][]byte) { c.mset(a, mirror.WriteMSet) })
	t.handle("msetnx", -3, keyPairs, writeFlags, func(c *client, a [][]byte) { c.mset(a, mirror.WriteMSetNX) })
	t.handle("incr", 2, oneKey, writeFlags, func(c *client, a [][]byte) { c.incr(a[1], 1) })
	t.handle("decr", 2, oneKey, writeFlags, func(c *client, a [][]byte) { c.incr(a[1], -1) })
	t.handle("incrby", 3, oneKey, writeFlags, func(c *client, a [][]byte) { c.incrBy(a, 1) })
	t.handle("decrby", 3, oneKey, writeFlags, func(c *client, a [][]byte) { c.incrBy(a, -1) })
	t.handle("incrbyfloat", 3, oneKey, writeFlags, cmdIncrByFloat)
	t.handle("append", 3, oneKey, writeFlags, cmdAppend)
	t.handle("del", -2, allKeys, writeFlags, cmdDel)
	t.handle("unlink", -2, allKeys, writeFlags, cmdDel)
	t.handle("expire", -3, oneKey, writeFlags, func(c *client, a [][]byte) { c.expire(a, 1000, false) })
	t.handle("pexpire", -3, oneKey, writeFlags, func(c *client, a [][]byte) { c.expire(a, 1, false) })
	t.handle("expireat", -3, oneKey, writeFlags, func(c *client, a [][]byte) { c.expire(a, 1000, true) })
	t.handle("pexpireat", -3, oneKey, writeFlags, func(c *client, a [][]byte) { c.expire(a, 1, true) })
	t.handle("persist", 2, oneKey, writeFlags, cmdPersist)

	registerStringWrites(t)

	// Keyspace notifications: neither in a transaction nor in a script.
	t.handle("subscribe", -2, noKeys, 0, func(c *client, a [][]byte) { c.subscribe(a[1:], false) })
	t.handle("psubscribe", -2, noKeys, 0, func(c *client, a [][]byte) { c.subscribe(a[1:], true) })
	t.handle("unsubscribe", -1, noKeys, 0, func(c *client, a [][]byte) { c.unsubscribe(a[1:], false) })
	t.handle("punsubscribe", -1, noKeys, 0, func(c *client, a [][]byte) { c.unsubscribe(a[1:], true) })

	// pgmirror's own: asks for a reload (asynchronous; an operator's
	// command, so not for scripts).
	registerMulti(t)

	t.handle("pgmirror.resync", 1, noKeys, flagMulti, func(c *client, _ [][]byte) {
		c.s.Mirror.RequestResync("PGMIRROR.RESYNC")
		c.ok()
	})

	registerSimple(t)
	registerScripts(t)
	registerChannels(t)
	registerTracking(t)
	registerOnLoop(t)
}

// maxLoopArgs bounds the arguments of a command the loop runs itself
// (runOnLoop): MGET or EXISTS of more keys are handed off.
const maxLoopArgs = 17

// registerOnLoop names the commands the event loop answers itself: those
// that never wait and cost about a lookup. GET, and MGET of up to 16 small
// values, run there when the mirror holds the values; everything else is
// handed off.
func registerOnLoop(t *commandTable) {
	t.byName["get"].now = cmdGetNow
	t.byName["mget"].now = cmdMGetNow
	for _, name := range []string{"ping", "echo", "exists", "ttl", "pttl", "type", "select"} {
		cmd := t.byName[name]
		fn := cmd.fn
		cmd.now = func(c *client, a [][]byte) bool {
			fn(c, a)
			return true
		}
	}
}

// key validates a client key and adds the namespace; ok is false after an
// error reply.
func (c *client) key(b []byte) (string, bool) {
	if !utf8.Valid(b) || strings.IndexByte(string(b), 0) >= 0 {
		c.errorReply("ERR invalid key: keys must be valid UTF-8 without NUL bytes")
		return "", false
	}
	if len(c.s.Namespace)+len(b) > mirror.MaxKeyBytes {
		c.errorReply(fmt.Sprintf("ERR key too long: at most %d bytes", mirror.MaxKeyBytes-len(c.s.Namespace)))
		return "", false
	}
	return c.s.Namespace + string(b), true
}

// readKey is key for commands that only read: without a namespace it
// returns a string sharing the argument's bytes, with no copy. That is
// safe because every command's arguments live in a buffer of their own
// that is never written again (the Parser copies each command out of the
// read buffer).
func (c *client) readKey(b []byte) (string, bool) {
	if c.s.Namespace != "" || len(b) == 0 {
		return c.key(b)
	}
	if !utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0 {
		c.errorReply("ERR invalid key: keys must be valid UTF-8 without NUL bytes")
		return "", false
	}
	if len(b) > mirror.MaxKeyBytes {
		c.errorReply(fmt.Sprintf("ERR key too long: at most %d bytes", mirror.MaxKeyBytes))
		return "", false
	}
	return unsafe.String(&b[0], len(b)), true
}

// readKeys is readKey for several keys.
func (c *client) readKeys(bs [][]byte) ([]string, bool) {
	out := make([]string, len(bs))
	for i, b := range bs {
		k, ok := c.readKey(b)
		if !ok {
			return nil, false
		}
		out[i] = k
	}
	return out, true
}

// keys validates several keys.
func (c *client) keys(bs [][]byte) ([]string, bool) {
	out := make([]string, len(bs))
	for i, b := range bs {
		k, ok := c.key(b)
		if !ok {
			return nil, false
		}
		out[i] = k
	}
	return out, true
}

// value checks a value against --max-value-size.
func (c *client) value(b []byte) bool {
	if int64(len(b)) > c.s.MaxValueSize {
		c.errorReply(fmt.Sprintf("ERR value too large: %d bytes, at most %d (--max-value-size)", len(b), c.s.MaxValueSize))
		return false
	}
	return true
}

// readErr answers a mirror read error.
func (c *client) readErr(err error) {
	switch {
	case errors.Is(err, mirror.ErrLoading):
		c.errorReply(errLoading)
	case errors.Is(err, mirror.ErrStale):
		c.errorReply("ERR pgmirror: notifications lost for longer than --max-staleness; reads refused (--stale-reads=error)")
	default:
		c.errorReply("ERR pgmirror: " + err.Error())
	}
}

// ctx is the context of c's commands; under CLIENT NO-TOUCH its reads do
// not count as accesses (TOUCH still does).
func (c *client) ctx() context.Context {
	if c.info.noTouch.Load() {
		return mirror.WithoutTouch(c.s.ctx)
	}
	return c.s.ctx
}

func parseInt(b []byte) (int64, bool) {
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

// Connection commands.

func cmdPing(c *client, a [][]byte) {
	switch len(a) {
	case 1:
		c.status("PONG")
	case 2:
		c.bulk(a[1])
	default:
		c.errorReply("ERR wrong number of arguments for 'ping' command")
	}
}

func cmdSelect(c *client, a [][]byte) {
	n, ok := parseInt(a[1])
	switch {
	case !ok:
		c.errorReply(errNotInteger)
	case n != 0:
		c.errorReply("ERR DB index is out of range")
	default:
		c.ok()
	}
}
