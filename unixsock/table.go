package unixsock

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"pgmirror/mirror"
)

// cmdFlags say where a command may run, as Redis's COMMAND flags do. The
// dispatcher reads flagMirror; the others are recorded, and checked against
// Redis's COMMAND INFO by the tests, for the features that need them
// (transactions, scripts, client-side caching), which the server does not
// have yet.
type cmdFlags uint16

const (
	// flagReadonly: reads keys and changes none (Redis's "readonly").
	flagReadonly cmdFlags = 1 << iota
	// flagWrite: may change keys (Redis's "write"); runs in Postgres.
	flagWrite
	// flagPostgres: may wait on Postgres: a write, or a read of a value
	// the mirror does not hold (a loader, a value to fetch again).
	flagPostgres
	// flagMulti: may be queued in a MULTI transaction.
	flagMulti
	// flagScript: may be called from a script (Redis: not "noscript").
	flagScript
	// flagMirror: answered from or through the mirror, so refused with
	// LOADING while the mirror loads.
	flagMirror
)

// Flag sets most commands share.
const (
	// connFlags: answered by the connection itself, from no key.
	connFlags = flagMulti | flagScript
	// readFlags: a read answered from the mirror alone.
	readFlags = flagReadonly | flagMirror | flagMulti | flagScript
	// writeFlags: a write, committed in Postgres before it is answered.
	writeFlags = flagWrite | flagPostgres | flagMirror | flagMulti | flagScript
)

// keyRange is where a command's keys are among its arguments, as Redis's
// COMMAND reports it: the first key's position (the command name is 0),
// the last key's (-1: the last argument, -2: the one before it), and the
// step between keys. {0, 0, 0}: no keys.
type keyRange struct{ first, last, step int }

var (
	noKeys   = keyRange{0, 0, 0}
	oneKey   = keyRange{1, 1, 1}
	allKeys  = keyRange{1, -1, 1} // every argument after the name
	keyPairs = keyRange{1, -1, 2} // key value key value ...
)

// command is one entry of a server's command table.
type command struct {
	name  string // lower case
	arity int    // as Redis: n exact (the name included), -n at least n
	keys  keyRange
	flags cmdFlags
	fn    func(c *client, args [][]byte)
	// now, when set, runs the command on the event loop: it answers and
	// returns true, or answers nothing and returns false when the command
	// must wait (it is then handed off and fn runs). Only commands that
	// cost about a lookup have one.
	now   func(c *client, args [][]byte) bool
	calls atomic.Int64
}

// arityOK reports whether n arguments (the name included) suit the command.
func (cmd *command) arityOK(n int) bool {
	return cmd.arity > 0 && n == cmd.arity || cmd.arity < 0 && n >= -cmd.arity
}

// has reports whether the command has every flag of f.
func (cmd *command) has(f cmdFlags) bool { return cmd.flags&f == f }

// commandTable is a server's commands by name, with their call counters.
// Commands are registered by name (handle) before the table is used, and
// never change after.
type commandTable struct {
	once    sync.Once
	byName  map[string]*command // each name in lower and in upper case
	list    []*command          // in registration order
	unknown atomic.Int64        // calls of names not in the table
}

// handle registers a command. A name registered twice, or not in lower
// case, is a programming error.
func (t *commandTable) handle(name string, arity int, keys keyRange, flags cmdFlags, fn func(*client, [][]byte)) {
	if name != strings.ToLower(name) || t.byName[name] != nil {
		panic(fmt.Sprintf("unixsock: command %q registered twice or not in lower case", name))
	}
	cmd := &command{name: name, arity: arity, keys: keys, flags: flags, fn: fn}
	t.byName[name] = cmd
	t.byName[strings.ToUpper(name)] = cmd // same entry, same counter
	t.list = append(t.list, cmd)
}

// lookup returns the command named name, in any case, or nil. Most
// clients send names in upper or lower case, both of which are in the
// table, so the common lookup allocates nothing.
func (t *commandTable) lookup(name []byte) *command {
	if cmd, ok := t.byName[string(name)]; ok {
		return cmd
	}
	return t.byName[strings.ToLower(string(name))]
}

// commands returns the server's command table, registering the commands
// on first use.
func (s *Server) commands() *commandTable {
	s.cmds.once.Do(func() {
		s.cmds.byName = map[string]*command{}
		registerCommands(&s.cmds)
	})
	return &s.cmds
}

// CommandCalls returns how often each command was called on this server;
// calls of unknown commands count under "unknown".
func (s *Server) CommandCalls() map[string]int64 {
	t := s.commands()
	out := make(map[string]int64, len(t.list)+1)
	for _, cmd := range t.list {
		out[cmd.name] = cmd.calls.Load()
	}
	out["unknown"] = t.unknown.Load()
	return out
}

// dispatch runs one command.
func (c *client) dispatch(args [][]byte) {
	if len(args) == 0 {
		return
	}
	t := c.s.commands()
	cmd := t.lookup(args[0])
	if c.txn.multi != nil && c.queue(t, cmd, args) {
		return
	}
	if cmd == nil {
		t.unknown.Add(1)
		c.errorReply(unknownCommand(args))
		return
	}
	cmd.calls.Add(1)
	c.info.last.Store(cmd)
	name := cmd.name
	if !cmd.arityOK(len(args)) {
		c.errorReply(fmt.Sprintf("ERR wrong number of arguments for '%s' command", name))
		return
	}
	if !c.authorized(cmd) { // auth.go
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
	if cmd.has(flagMirror) && c.s.Mirror.State() == mirror.StateLoading {
		c.errorReply(errLoading)
		return
	}
	if c.trk.tc != nil {
		c.beforeCommand(cmd, args) // tracking.go: registers a read's keys first
	}
	cmd.fn(c, args)
}

// unknownCommand words the error as Redis 7 does, with a hint for the
// commands of the data types pgmirror does not store.
func unknownCommand(args [][]byte) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ERR unknown command '%s', with args beginning with: ", clip(args[0]))
	for _, a := range args[1:] {
		fmt.Fprintf(&b, "'%s' ", clip(a))
	}
	b.WriteString(dataTypeHint(args[0])) // hints.go
	return b.String()
}

func clip(b []byte) string {
	if len(b) > 128 {
		b = b[:128]
	}
	return string(b)
}
