package unixsock

import (
	"fmt"
	"strings"
)

// COMMAND, COMMAND COUNT, INFO, LIST and DOCS (and GETKEYS, HELP:
// introspect.go) describe the command table
// in Redis 7's shapes, for clients that introspect: names, arity, key
// positions, and flags derived from the table's.

func cmdCommand(c *client, a [][]byte) {
	t := c.s.commands()
	if len(a) == 1 {
		c.array(len(t.list))
		for _, cmd := range t.list {
			commandEntry(c, cmd)
		}
		return
	}
	sub := lower(a[1])
	switch {
	case sub == "count" && len(a) == 2:
		c.integer(int64(len(t.list)))
	case sub == "list":
		commandList(c, t, a) // introspect.go
	case sub == "getkeys" || sub == "getkeysandflags":
		if len(a) < 4 {
			wrongSubArity(c, "command", sub)
			return
		}
		commandGetKeys(c, t, a[2:], sub == "getkeysandflags")
	case sub == "help":
		if len(a) != 2 {
			wrongSubArity(c, "command", sub)
			return
		}
		helpReply(c, commandHelp)
	case sub == "info":
		cmds := t.list
		if len(a) > 2 {
			cmds = make([]*command, len(a)-2)
			for i, name := range a[2:] {
				cmds[i] = t.lookup(name)
			}
		}
		c.array(len(cmds))
		for i, cmd := range cmds {
			switch {
			case cmd != nil:
				commandEntry(c, cmd)
			case !subcommandEntry(c, lower(a[2+i])): // introspect.go
				c.null()
			}
		}
	case sub == "docs":
		commandDocs(c, t, a[2:])
	case sub == "count":
		c.errorReply(fmt.Sprintf("ERR wrong number of arguments for 'command|%s' command", sub))
	default:
		c.errorReply(fmt.Sprintf("ERR unknown subcommand '%s'. Try COMMAND HELP.", clip(a[1])))
	}
}

// commandEntry is a command's COMMAND INFO reply: name, arity, flags, first
// key, last key, step, ACL categories, tips, key specs, subcommands.
func commandEntry(c *client, cmd *command) {
	c.array(10)
	c.bulkString(cmd.name)
	c.integer(int64(cmd.arity))
	flags := commandFlags(cmd)
	c.array(len(flags))
	for _, f := range flags {
		c.status(f)
	}
	c.integer(int64(cmd.keys.first))
	c.integer(int64(cmd.keys.last))
	c.integer(int64(cmd.keys.step))
	cats := strings.Fields(aclCategories[cmd.name]) // Redis's (introspect.go)
	if len(cats) == 0 {
		cats = []string{commandGroup(cmd)}
	}
	c.array(len(cats))
	for _, cat := range cats {
		c.status("@" + cat)
	}
	c.array(0)
	c.array(0)
	subs := subcommands[cmd.name] // introspect.go
	c.array(len(subs))
	for _, sub := range subs {
		subcommandEntry(c, cmd.name+"|"+sub)
	}
}

// commandFlags are Redis's flag names for cmd.
func commandFlags(cmd *command) []string {
	var out []string
	if cmd.has(flagReadonly) {
		out = append(out, "readonly")
	}
	if cmd.has(flagWrite) {
		out = append(out, "write")
	}
	if !cmd.has(flagScript) {
		out = append(out, "noscript")
	}
	if !cmd.has(flagMirror) {
		out = append(out, "loading", "stale")
	}
	if !cmd.has(flagMulti) {
		out = append(out, "no_multi")
	}
	return out
}

// commandGroup is the group COMMAND DOCS reports (and the ACL category).
func commandGroup(cmd *command) string {
	switch {
	case strings.HasSuffix(cmd.name, "subscribe"):
		return "pubsub"
	case connectionCommands[cmd.name]:
		return "connection"
	case genericCommands[cmd.name]:
		return "generic"
	case cmd.keys == noKeys:
		return "server"
	}
	return "string"
}

// connectionCommands are Redis's "connection" commands pgmirror has.
var connectionCommands = map[string]bool{
	"auth": true, "hello": true, "client": true, "ping": true, "echo": true, "quit": true, "select": true,
}

// genericCommands are Redis's "generic" (keyspace) commands pgmirror has.
var genericCommands = map[string]bool{
	"del": true, "unlink": true, "exists": true, "ttl": true, "pttl": true, "type": true, "expire": true,
	"pexpire": true, "expireat": true, "pexpireat": true, "persist": true, "touch": true, "expiretime": true,
	"pexpiretime": true, "object": true, "rename": true, "renamenx": true, "copy": true, "scan": true,
	"keys": true, "randomkey": true,
}

// commandDocs answers COMMAND DOCS [name ...]: a map of each known
// command to its group (pgmirror keeps no summaries); unknown names are
// left out, as in Redis.
func commandDocs(c *client, t *commandTable, names [][]byte) {
	cmds := t.list
	if len(names) > 0 {
		cmds = nil
		for _, n := range names {
			if cmd := t.lookup(n); cmd != nil {
				cmds = append(cmds, cmd)
			}
		}
	}
	c.mapHeader(len(cmds))
	for _, cmd := range cmds {
		c.bulkString(cmd.name)
		c.mapHeader(2)
		c.bulkString("summary")
		c.bulkString("")
		c.bulkString("group")
		c.bulkString(commandGroup(cmd))
	}
}
