package unixsock

import (
	"context"
	"strconv"
	"strings"
)

// Reads are answered from the mirror; a hit never queries Postgres.

func cmdGet(c *client, a [][]byte) {
	k, ok := c.readKey(a[1])
	if !ok {
		return
	}
	v, found, err := c.mir().Get(c.ctx(), k)
	c.getReply(v, found, err)
}

// getReply answers a GET.
func (c *client) getReply(v []byte, found bool, err error) {
	switch {
	case err != nil:
		c.readErr(err)
	case !found:
		c.null()
	default:
		c.bulk(v)
	}
}

// nowReader is a Mirror that answers GET without waiting when it can
// (*mirror.Mirror does).
type nowReader interface {
	GetNow(ctx context.Context, key string) (value []byte, found, done bool, err error)
	GetMultiNow(ctx context.Context, keys []string, maxBytes int, values [][]byte) ([][]byte, bool, error)
}

// cmdGetNow is GET on the event loop: answered when the mirror holds the
// value (or knows the key is missing), left to cmdGet otherwise.
func cmdGetNow(c *client, a [][]byte) bool {
	g, ok := c.s.Mirror.(nowReader)
	if !ok {
		return false
	}
	k, ok := c.readKey(a[1])
	if !ok {
		return true // answered: an invalid key
	}
	v, found, done, err := g.GetNow(c.ctx(), k)
	if !done {
		return false
	}
	c.getReply(v, found, err)
	return true
}

// mgetNowBytes bounds the values of an MGET the loop answers: a larger
// one is handed off, where its values are written one at a time as the
// output drains.
const mgetNowBytes = 64 << 10

// cmdMGetNow is MGET on the event loop: answered when the mirror holds
// every value (or knows the key missing) and they are small, left to
// cmdMGet otherwise.
func cmdMGetNow(c *client, a [][]byte) bool {
	g, ok := c.s.Mirror.(nowReader)
	if !ok {
		return false
	}
	ks, ok := c.readKeys(a[1:])
	if !ok {
		return true // answered: an invalid key
	}
	vs, done, err := g.GetMultiNow(c.ctx(), ks, mgetNowBytes, c.vals[:0])
	if !done {
		return false
	}
	if err != nil {
		c.readErr(err)
	} else {
		c.array(len(vs))
		for _, v := range vs {
			if v != nil {
				c.bulk(v)
			} else {
				c.null()
			}
		}
	}
	clear(vs) // no reference kept to the mirror's values
	c.vals = vs[:0]
	return true
}

// cmdMGet reads the keys as GET does: hits from the mirror, and the keys
// that need Postgres (loaders, values to fetch again) concurrently, within
// a memory bound (mirror.GetMulti). Each value is written as soon as the
// keys before it are, so an MGET of many large values holds about one of
// them, as a pipeline of GETs does. A read that fails after some values
// were written answers an error element for it and each key after it.
func cmdMGet(c *client, a [][]byte) {
	ks, ok := c.readKeys(a[1:])
	if !ok {
		return
	}
	n := 0
	err := c.mir().GetMulti(c.ctx(), ks, c.s.MaxValueSize, func(v []byte) {
		if n == 0 {
			c.array(len(ks))
		}
		n++
		if v != nil {
			c.bulk(v)
		} else {
			c.null()
		}
	})
	switch {
	case err == nil && n == 0:
		c.array(0)
	case err != nil && n == 0:
		c.readErr(err)
	case err != nil:
		for ; n < len(ks); n++ {
			c.readErr(err)
		}
	}
}

func cmdExists(c *client, a [][]byte) {
	c.countKeys(a[1:], func(k string) (bool, error) {
		l, err := c.mir().Exists(k)
		return l.Found, err
	})
}

// countKeys answers how many of keys probe finds (a key named twice counts
// twice), or the first error.
func (c *client) countKeys(keys [][]byte, probe func(key string) (bool, error)) {
	ks, ok := c.readKeys(keys)
	if !ok {
		return
	}
	n := int64(0)
	for _, k := range ks {
		found, err := probe(k)
		if err != nil {
			c.readErr(err)
			return
		}
		if found {
			n++
		}
	}
	c.integer(n)
}

// ttl answers TTL (seconds, rounded as Redis rounds) or PTTL: -2 missing, -1 no expiry.
func (c *client) ttl(a [][]byte, millis bool) {
	k, ok := c.readKey(a[1])
	if !ok {
		return
	}
	ms, found, err := c.mir().PTTL(k)
	switch {
	case err != nil:
		c.readErr(err)
	case !found:
		c.integer(-2)
	case ms < 0:
		c.integer(-1)
	case millis:
		c.integer(ms)
	default:
		c.integer((ms + 500) / 1000)
	}
}

func cmdStrlen(c *client, a [][]byte) {
	k, ok := c.readKey(a[1])
	if !ok {
		return
	}
	n, err := c.mir().StrLen(c.ctx(), k)
	if err != nil {
		c.readErr(err)
		return
	}
	c.integer(n)
}

func cmdType(c *client, a [][]byte) {
	k, ok := c.readKey(a[1])
	if !ok {
		return
	}
	l, err := c.mir().Exists(k)
	switch {
	case err != nil:
		c.readErr(err)
	case l.Found:
		c.status("string")
	default:
		c.status("none")
	}
}

// visible reports whether a mirror key belongs to this server's namespace,
// and matches pattern (nil: any), and returns it as the client sees it.
func (c *client) visible(key string, pattern []byte) (string, bool) {
	if !strings.HasPrefix(key, c.s.Namespace) {
		return "", false
	}
	k := key[len(c.s.Namespace):]
	if pattern != nil && !globMatch(string(pattern), k) {
		return "", false
	}
	return k, true
}

func cmdScan(c *client, a [][]byte) {
	cursor, err := strconv.ParseUint(string(a[1]), 10, 64)
	if err != nil {
		c.errorReply("ERR invalid cursor")
		return
	}
	count := 10
	var pattern []byte
	for i := 2; i < len(a); i++ {
		switch opt := strings.ToLower(string(a[i])); {
		case opt == "match" && i+1 < len(a):
			pattern = a[i+1]
			i++
		case opt == "count" && i+1 < len(a):
			n, ok := parseInt(a[i+1])
			if !ok {
				c.errorReply(errNotInteger)
				return
			}
			if n < 1 {
				c.errorReply(errSyntax)
				return
			}
			count = int(min(n, 1<<20))
			i++
		case opt == "type" && i+1 < len(a):
			if !strings.EqualFold(string(a[i+1]), "string") {
				count = 0 // every key is a string: nothing of another type to find
			}
			i++
		default:
			c.errorReply(errSyntax)
			return
		}
	}
	if count == 0 {
		c.array(2)
		c.bulkString("0")
		c.array(0)
		return
	}
	next, keys := c.s.Mirror.Scan(cursor, count, func(key string) bool {
		_, ok := c.visible(key, pattern)
		return ok
	})
	c.array(2)
	c.bulkString(strconv.FormatUint(next, 10))
	c.array(len(keys))
	for _, k := range keys {
		c.bulkString(k[len(c.s.Namespace):])
	}
}

// allKeys walks the whole index.
func (c *client) allKeys(pattern []byte) []string {
	var out []string
	cursor := uint64(0)
	for {
		next, keys := c.s.Mirror.Scan(cursor, 1000, func(key string) bool {
			_, ok := c.visible(key, pattern)
			return ok
		})
		for _, k := range keys {
			out = append(out, k[len(c.s.Namespace):])
		}
		if next == 0 {
			return out
		}
		cursor = next
	}
}

func cmdKeys(c *client, a [][]byte) {
	keys := c.allKeys(a[1])
	c.array(len(keys))
	for _, k := range keys {
		c.bulkString(k)
	}
}

// cmdDBSize counts the live keys the client can see (in its namespace).
func cmdDBSize(c *client, _ [][]byte) {
	n := int64(0)
	cursor := uint64(0)
	for {
		next, keys := c.s.Mirror.Scan(cursor, 1000, func(key string) bool { return strings.HasPrefix(key, c.s.Namespace) })
		n += int64(len(keys))
		if next == 0 {
			break
		}
		cursor = next
	}
	c.integer(n)
}

// redisVersion is the Redis version pgmirror answers like, for clients
// that check it.
const redisVersion = "7.0.0"
