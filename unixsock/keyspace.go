package unixsock

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"

	"pgmirror/mirror"
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

// objectHelp is Redis 7's OBJECT HELP.
const objectHelp = `OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:
ENCODING <key>
    Return the kind of internal representation used in order to store the value
    associated with a <key>.
FREQ <key>
    Return the access frequency index of the <key>. The returned integer is
    proportional to the logarithm of the recent access frequency of the key.
IDLETIME <key>
    Return the idle time of the <key>, that is the approximated number of
    seconds elapsed since the last access to the key.
REFCOUNT <key>
    Return the number of references of the value associated with the specified
    <key>.
HELP
    Prints this help.`

// cmdObject answers OBJECT as Redis 7 does for strings, under its default
// policy (no LFU: FREQ is an error). IDLETIME is this sidecar's: the
// seconds since it last read the key or applied a new state of it (the
// mirror's access stamps). No subcommand counts as an access.
func cmdObject(c *client, a [][]byte) {
	sub := lower(a[1])
	switch sub {
	case "help":
		if len(a) != 2 {
			c.errorReply("ERR wrong number of arguments for 'object|help' command")
			return
		}
		helpReply(c, objectHelp)
		return
	case "encoding", "freq", "idletime", "refcount":
	default:
		c.errorReply(fmt.Sprintf("ERR unknown subcommand '%s'. Try OBJECT HELP.", clip(a[1])))
		return
	}
	if len(a) != 3 {
		c.errorReply(fmt.Sprintf("ERR wrong number of arguments for 'object|%s' command", sub))
		return
	}
	if sub == "idletime" || sub == "freq" {
		objectIdle(c, sub, a[2])
		return
	}
	k, ok := c.readKey(a[2])
	if !ok {
		return
	}
	v, found, err := c.s.Mirror.Get(mirror.WithoutTouch(c.ctx()), k)
	switch {
	case err != nil:
		c.readErr(err)
	case !found:
		c.null()
	case sub == "encoding":
		c.bulkString(stringEncoding(v))
	default:
		c.integer(refCount(v))
	}
}

// objectIdle answers OBJECT IDLETIME and FREQ, which need no value.
func objectIdle(c *client, sub string, key []byte) {
	k, ok := c.readKey(key)
	if !ok {
		return
	}
	secs, found, err := c.s.Mirror.IdleTime(k)
	switch {
	case err != nil:
		c.readErr(err)
	case !found:
		c.null()
	case sub == "idletime":
		c.integer(secs)
	default:
		c.errorReply("ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that " +
			"when switching between policies at runtime LRU and LFU data will take some time to adjust.")
	}
}

// helpReply answers a HELP subcommand: text's lines as status replies.
func helpReply(c *client, text string) {
	lines := strings.Split(text, "\n")
	c.array(len(lines))
	for _, l := range lines {
		c.status(l)
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
