package unixsock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
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

// command is one entry of the command table.
type command struct {
	arity int  // as Redis: n exact (name included), -n at least n
	data  bool // touches keys: refused while loading
	fn    func(c *client, args [][]byte)
	calls *atomic.Int64
	name  string // lower case
}

var commands map[string]command

// unknownCalls counts commands not in the table.
var unknownCalls atomic.Int64

// CommandCalls returns how often each command was called since the process
// started (all servers of the process together); unknown commands count
// under "unknown".
func CommandCalls() map[string]int64 {
	out := make(map[string]int64, len(commands)+1)
	for _, cmd := range commands {
		out[cmd.name] = cmd.calls.Load()
	}
	out["unknown"] = unknownCalls.Load()
	return out
}

func init() {
	commands = map[string]command{
		"ping":    {-1, false, cmdPing, nil, ""},
		"echo":    {2, false, func(c *client, a [][]byte) { c.bulk(a[1]) }, nil, ""},
		"quit":    {-1, false, func(c *client, _ [][]byte) { c.ok(); c.quit = true }, nil, ""},
		"hello":   {-1, false, cmdHello, nil, ""},
		"command": {-1, false, cmdCommand, nil, ""},
		"client":  {-2, false, cmdClient, nil, ""},
		"select":  {2, false, cmdSelect, nil, ""},
		"config":  {-2, false, cmdConfig, nil, ""},
		"info":    {-1, false, cmdInfo, nil, ""},
		"dbsize":  {1, true, cmdDBSize, nil, ""},

		"get":    {2, true, cmdGet, nil, ""},
		"mget":   {-2, true, cmdMGet, nil, ""},
		"exists": {-2, true, cmdExists, nil, ""},
		"ttl":    {2, true, func(c *client, a [][]byte) { c.ttl(a, false) }, nil, ""},
		"pttl":   {2, true, func(c *client, a [][]byte) { c.ttl(a, true) }, nil, ""},
		"strlen": {2, true, cmdStrlen, nil, ""},
		"type":   {2, true, cmdType, nil, ""},
		"scan":   {-2, true, cmdScan, nil, ""},
		"keys":   {2, true, cmdKeys, nil, ""},

		"set":         {-3, true, cmdSet, nil, ""},
		"setex":       {4, true, func(c *client, a [][]byte) { c.setEx(a, 1000) }, nil, ""},
		"psetex":      {4, true, func(c *client, a [][]byte) { c.setEx(a, 1) }, nil, ""},
		"setnx":       {3, true, cmdSetNX, nil, ""},
		"getdel":      {2, true, cmdGetDel, nil, ""},
		"getex":       {-2, true, cmdGetEx, nil, ""},
		"mset":        {-3, true, func(c *client, a [][]byte) { c.mset(a, mirror.WriteMSet) }, nil, ""},
		"msetnx":      {-3, true, func(c *client, a [][]byte) { c.mset(a, mirror.WriteMSetNX) }, nil, ""},
		"incr":        {2, true, func(c *client, a [][]byte) { c.incr(a[1], 1) }, nil, ""},
		"decr":        {2, true, func(c *client, a [][]byte) { c.incr(a[1], -1) }, nil, ""},
		"incrby":      {3, true, func(c *client, a [][]byte) { c.incrBy(a, 1) }, nil, ""},
		"decrby":      {3, true, func(c *client, a [][]byte) { c.incrBy(a, -1) }, nil, ""},
		"incrbyfloat": {3, true, cmdIncrByFloat, nil, ""},
		"append":      {3, true, cmdAppend, nil, ""},
		"del":         {-2, true, cmdDel, nil, ""},
		"unlink":      {-2, true, cmdDel, nil, ""},
		"expire":      {-3, true, func(c *client, a [][]byte) { c.expire(a, 1000, false) }, nil, ""},
		"pexpire":     {-3, true, func(c *client, a [][]byte) { c.expire(a, 1, false) }, nil, ""},
		"expireat":    {-3, true, func(c *client, a [][]byte) { c.expire(a, 1000, true) }, nil, ""},
		"pexpireat":   {-3, true, func(c *client, a [][]byte) { c.expire(a, 1, true) }, nil, ""},
		"persist":     {2, true, cmdPersist, nil, ""},

		"subscribe":    {-2, false, func(c *client, a [][]byte) { c.subscribe(a[1:], false) }, nil, ""},
		"psubscribe":   {-2, false, func(c *client, a [][]byte) { c.subscribe(a[1:], true) }, nil, ""},
		"unsubscribe":  {-1, false, func(c *client, a [][]byte) { c.unsubscribe(a[1:], false) }, nil, ""},
		"punsubscribe": {-1, false, func(c *client, a [][]byte) { c.unsubscribe(a[1:], true) }, nil, ""},

		"pgmirror.resync": {1, false, func(c *client, _ [][]byte) { c.s.Mirror.RequestResync("PGMIRROR.RESYNC"); c.ok() }, nil, ""},
	}
	for name, cmd := range commands {
		cmd.calls = new(atomic.Int64)
		cmd.name = name
		commands[name] = cmd
	}
	for name, cmd := range commands {
		commands[strings.ToUpper(name)] = cmd // same counter
	}
}

// dispatch runs one command.
func (c *client) dispatch(args [][]byte) {
	if len(args) == 0 {
		return
	}
	// Most clients send names in upper or lower case, both of which are in
	// the table, so the common lookup allocates nothing.
	cmd, ok := commands[string(args[0])]
	name := cmd.name
	if !ok {
		name = strings.ToLower(string(args[0]))
		cmd, ok = commands[name]
	}
	if !ok {
		unknownCalls.Add(1)
		c.errorReply(unknownCommand(args))
		return
	}
	cmd.calls.Add(1)
	if cmd.arity > 0 && len(args) != cmd.arity || cmd.arity < 0 && len(args) < -cmd.arity {
		c.errorReply(fmt.Sprintf("ERR wrong number of arguments for '%s' command", name))
		return
	}
	if c.proto == 2 && c.subscribed() {
		switch name {
		case "subscribe", "psubscribe", "unsubscribe", "punsubscribe", "quit":
		case "ping":
			c.array(2)
			c.bulkString("pong")
			if len(args) > 1 {
				c.bulk(args[1])
			} else {
				c.bulkString("")
			}
			return
		default:
			c.errorReply(fmt.Sprintf("ERR Can't execute '%s': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context", name))
			return
		}
	}
	if cmd.data && c.s.Mirror.State() == mirror.StateLoading {
		c.errorReply(errLoading)
		return
	}
	cmd.fn(c, args)
}

// unknownCommand words the error as Redis 7 does.
func unknownCommand(args [][]byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ERR unknown command '%s', with args beginning with: ", clip(args[0]))
	for _, a := range args[1:] {
		fmt.Fprintf(&b, "'%s' ", clip(a))
	}
	return b.String()
}

func clip(b []byte) string {
	if len(b) > 128 {
		b = b[:128]
	}
	return string(b)
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

func (c *client) ctx() context.Context { return c.s.ctx }

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

func cmdHello(c *client, a [][]byte) {
	proto := c.proto
	i := 1
	if len(a) > 1 {
		v, ok := parseInt(a[1])
		if !ok {
			c.errorReply("ERR Protocol version is not an integer or out of range")
			return
		}
		if v != 2 && v != 3 {
			c.errorReply("NOPROTO unsupported protocol version")
			return
		}
		proto, i = int(v), 2
	}
	for ; i < len(a); i++ {
		switch strings.ToLower(string(a[i])) {
		case "auth":
			if i+2 >= len(a) {
				c.errorReply(errSyntax)
				return
			}
			i += 2 // no authentication: the socket's file mode is the access control
		case "setname":
			if i+1 >= len(a) {
				c.errorReply(errSyntax)
				return
			}
			i++
			c.mu.Lock()
			c.name = string(a[i])
			c.mu.Unlock()
		default:
			c.errorReply(errSyntax)
			return
		}
	}
	c.setProto(proto)
	c.mapHeader(7)
	c.bulkString("server")
	c.bulkString("redis")
	c.bulkString("version")
	c.bulkString(redisVersion)
	c.bulkString("proto")
	c.integer(int64(proto))
	c.bulkString("id")
	c.integer(c.id)
	c.bulkString("mode")
	c.bulkString("standalone")
	c.bulkString("role")
	c.bulkString("master")
	c.bulkString("modules")
	c.array(0)
}

func cmdCommand(c *client, a [][]byte) {
	if len(a) > 1 && strings.EqualFold(string(a[1]), "count") {
		c.integer(int64(len(commands) / 2)) // each name is in the table in both cases
		return
	}
	// Minimal: clients that introspect get an empty table and fall back.
	c.array(0)
}

func cmdClient(c *client, a [][]byte) {
	switch strings.ToLower(string(a[1])) {
	case "setname":
		if len(a) != 3 {
			c.errorReply("ERR wrong number of arguments for 'client|setname' command")
			return
		}
		if strings.ContainsAny(string(a[2]), " \n") {
			c.errorReply("ERR Client names cannot contain spaces, newlines or special characters.")
			return
		}
		c.mu.Lock()
		c.name = string(a[2])
		c.mu.Unlock()
		c.ok()
	case "getname":
		c.mu.Lock()
		name := c.name
		c.mu.Unlock()
		if name == "" {
			c.null()
			return
		}
		c.bulkString(name)
	case "id":
		c.integer(c.id)
	case "setinfo":
		c.ok()
	default:
		c.errorReply(fmt.Sprintf("ERR unknown subcommand '%s'. Try CLIENT HELP.", clip(a[1])))
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

// cmdConfig answers CONFIG GET for the few parameters clients and
// redis-benchmark ask about; everything else is unknown (an empty reply).
func cmdConfig(c *client, a [][]byte) {
	if !strings.EqualFold(string(a[1]), "get") {
		c.errorReply(fmt.Sprintf("ERR unknown subcommand '%s'. Try CONFIG HELP.", clip(a[1])))
		return
	}
	if len(a) < 3 {
		c.errorReply("ERR wrong number of arguments for 'config|get' command")
		return
	}
	known := map[string]string{
		"save": "", "appendonly": "no", "databases": "1",
		"maxclients":         strconv.Itoa(c.s.MaxClients),
		"proto-max-bulk-len": strconv.FormatInt(c.s.MaxValueSize, 10),
	}
	var pairs [][2]string
	for _, p := range a[2:] {
		pat := strings.ToLower(string(p))
		for name, v := range known {
			if globMatch(pat, name) {
				pairs = append(pairs, [2]string{name, v})
			}
		}
	}
	c.mapHeader(len(pairs))
	for _, p := range pairs {
		c.bulkString(p[0])
		c.bulkString(p[1])
	}
}
