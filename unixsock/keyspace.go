package unixsock

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

// RANDOMKEY and OBJECT, answered from the mirror.

func registerKeyspace(t *commandTable) {
	t.handle("randomkey", 1, noKeys, readFlags, cmdRandomKey)
	// OBJECT HELP is answered while loading, as in Redis; the subcommands
	// that read a key answer LOADING then (the mirror's read error).
	t.handle("object", -2, noKeys, flagMulti|flagScript, cmdObject)
}

// cmdRandomKey answers a key of the client's namespace: from a random
// position of the index, the first keys found, one of them at random;
// nil when there is none.
func cmdRandomKey(c *client, _ [][]byte) {
	start := rand.Uint64()
	cursor, wrapped := start, false
	for {
		next, keys := c.s.Mirror.Scan(cursor, 100, func(key string) bool {
			_, ok := c.visible(key, nil)
			return ok
		})
		if len(keys) > 0 {
			c.bulkString(keys[rand.IntN(len(keys))][len(c.s.Namespace):])
			return
		}
		switch {
		case next == 0 && wrapped, wrapped && next >= start:
			c.null()
			return
		case next == 0:
			cursor, wrapped = 0, true
		default:
			cursor = next
		}
	}
}

const objectHelp = `OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:
ENCODING <key>
    Return the kind of internal representation Redis would use for the value (pgmirror stores strings).
FREQ <key>
    Not tracked: pgmirror evicts no keys (no LFU policy).
IDLETIME <key>
    Not tracked: pgmirror evicts no keys (reads are recorded as last_accessed_at in Postgres).
REFCOUNT <key>
    Return the number of references Redis would hold to the value.
HELP
    Print this help.`

func cmdObject(c *client, a [][]byte) {
	sub := lower(a[1])
	if sub == "help" && len(a) == 2 {
		lines := strings.Split(objectHelp, "\n")
		c.array(len(lines))
		for _, l := range lines {
			c.status(l)
		}
		return
	}
	switch sub {
	case "encoding", "freq", "idletime", "refcount":
	default:
		c.errorReply(fmt.Sprintf("ERR unknown subcommand '%s'. Try OBJECT HELP.", clip(a[1])))
		return
	}
	if len(a) != 3 {
		c.errorReply(fmt.Sprintf("ERR wrong number of arguments for 'object|%s' command", sub))
		return
	}
	v, found, ok := c.valueOf(a[2])
	switch {
	case !ok:
	case !found:
		c.null()
	case sub == "encoding":
		c.bulkString(stringEncoding(v))
	case sub == "refcount":
		c.integer(refCount(v))
	case sub == "freq":
		c.errorReply("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that " +
			"when switching between policies at runtime LRU and LFU data will take some time to adjust.")
	default:
		c.errorReply("ERR pgmirror does not track idle time: it evicts no keys (reads set last_accessed_at in Postgres)")
	}
}

// asInt reports whether Redis would store v as an integer: a canonical
// decimal int64.
func asInt(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 20 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil && strconv.FormatInt(n, 10) == string(v)
}

// stringEncoding is the encoding Redis gives a value SET stores: int,
// embstr (up to 44 bytes) or raw.
func stringEncoding(v []byte) string {
	if _, ok := asInt(v); ok {
		return "int"
	}
	if len(v) <= 44 {
		return "embstr"
	}
	return "raw"
}

// refCount is OBJECT REFCOUNT as Redis answers it: its shared integers
// (0 to 9999) are referenced without bound.
func refCount(v []byte) int64 {
	if n, ok := asInt(v); ok && n >= 0 && n < 10000 {
		return 2147483647
	}
	return 1
}
