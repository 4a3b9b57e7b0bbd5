package unixsock

import (
	"fmt"
	"slices"
	"strings"
)

// COMMAND GETKEYS, GETKEYSANDFLAGS, HELP and LIST FILTERBY, and CLIENT
// HELP, as Redis 7 answers them for the commands pgmirror has: keys from
// the command table's key positions, flags from Redis's key specs.

// commandHelp is Redis 7's COMMAND HELP.
const commandHelp = `COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:
(no subcommand)
    Return details about all Redis commands.
COUNT
    Return the total number of commands in this Redis server.
LIST
    Return a list of all commands in this Redis server.
INFO [<command-name> ...]
    Return details about multiple Redis commands.
    If no command names are given, documentation details for all
    commands are returned.
DOCS [<command-name> ...]
    Return documentation details about multiple Redis commands.
    If no command names are given, documentation details for all
    commands are returned.
GETKEYS <full-command>
    Return the keys from a full Redis command.
GETKEYSANDFLAGS <full-command>
    Return the keys and the access flags from a full Redis command.
HELP
    Prints this help.`

// clientHelp is Redis's CLIENT HELP with the subcommands pgmirror
// answers, in Redis's words and order (SETINFO and NO-TOUCH as Redis 7.2
// words them).
const clientHelp = `CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:
GETNAME
    Return the name of the current connection.
ID
    Return the ID of the current connection.
INFO
    Return information about the current client connection.
KILL <ip:port>
    Kill connection made from <ip:port>.
KILL <option> <value> [<option> <value> [...]]
    Kill connections. Options are:
    * ADDR (<ip:port>|<unixsocket>:0)
      Kill connections made from the specified address
    * LADDR (<ip:port>|<unixsocket>:0)
      Kill connections made to specified local address
    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)
      Kill connections by type.
    * USER <username>
      Kill connections authenticated by <username>.
    * SKIPME (YES|NO)
      Skip killing current connection (default: yes).
LIST [options ...]
    Return information about client connections. Options:
    * TYPE (NORMAL|MASTER|REPLICA|PUBSUB)
      Return clients of specified type.
SETNAME <name>
    Assign the name <name> to the current connection.
SETINFO <option> <value>
    Set client meta attr. Options are:
    * LIB-NAME: the client lib name.
    * LIB-VER: the client lib version.
NO-EVICT (ON|OFF)
    Protect current client connection from eviction.
NO-TOUCH (ON|OFF)
    Will not touch LRU/LFU stats when this mode is on.
HELP
    Prints this help.`

// configHelp is Redis's CONFIG HELP but for REWRITE, which pgmirror
// refuses.
const configHelp = `CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:
GET <pattern>
    Return parameters matching the glob-like <pattern> and their values.
SET <directive> <value>
    Set the configuration <directive> to <value>.
RESETSTAT
    Reset statistics reported by the INFO command.
HELP
    Prints this help.`

// scriptHelp is Redis's SCRIPT HELP but for DEBUG, which pgmirror refuses.
const scriptHelp = `SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:
EXISTS <sha1> [<sha1> ...]
    Return information about the existence of the scripts in the script cache.
FLUSH [ASYNC|SYNC]
    Flush the Lua scripts cache. Very dangerous on replicas.
    When called without the optional mode argument, the behavior is determined by the
    lazyfree-lazy-user-flush configuration directive. Valid modes are:
    * ASYNC: Asynchronously flush the scripts cache.
    * SYNC: Synchronously flush the scripts cache.
KILL
    Kill the currently executing Lua script.
LOAD <script>
    Load a script into the scripts cache without executing it.
HELP
    Prints this help.`

// keyFlags are the flags Redis's key specs give a command's keys: the
// first key's, then the others' ("" for the same). SET's depend on GET.
var keyFlags = map[string][2]string{
	"get": {"RO access"}, "mget": {"RO access"}, "getrange": {"RO access"}, "substr": {"RO access"},
	"getbit": {"RO access"}, "bitcount": {"RO access"}, "bitpos": {"RO access"}, "ttl": {"RO access"},
	"pttl": {"RO access"}, "expiretime": {"RO access"}, "pexpiretime": {"RO access"}, "eval_ro": {"RO access"},
	"evalsha_ro": {"RO access"}, "strlen": {"RO"}, "exists": {"RO"}, "type": {"RO"}, "touch": {"RO"},
	"watch": {"RO"}, "object": {"RO"},
	"incr": {"RW access update"}, "decr": {"RW access update"}, "incrby": {"RW access update"},
	"decrby": {"RW access update"}, "incrbyfloat": {"RW access update"}, "getset": {"RW access update"},
	"getex": {"RW access update"}, "setbit": {"RW access update"}, "eval": {"RW access update"},
	"evalsha": {"RW access update"}, "getdel": {"RW access delete"}, "append": {"RW insert"},
	"setrange": {"RW update"}, "expire": {"RW update"}, "pexpire": {"RW update"}, "expireat": {"RW update"},
	"pexpireat": {"RW update"}, "persist": {"RW update"}, "set": {"OW update"}, "setex": {"OW update"},
	"psetex": {"OW update"}, "mset": {"OW update"}, "setnx": {"OW insert"}, "msetnx": {"OW insert"},
	"del": {"RM delete"}, "unlink": {"RM delete"},
	"copy": {"RO access", "OW update"}, "rename": {"RW access delete", "OW update"},
	"renamenx": {"RW access delete", "OW insert"}, "bitop": {"OW update", "RO access"},
}

// subcommands are, for the commands with subcommands, those pgmirror
// answers, in COMMAND LIST's order. Only OBJECT's read a key (the third
// argument), all but HELP.
var subcommands = map[string][]string{
	"object":  {"encoding", "freq", "idletime", "refcount", "help"},
	"client":  {"setname", "getname", "id", "setinfo", "info", "list", "kill", "no-evict", "no-touch", "help"},
	"config":  {"get", "set", "resetstat", "help"},
	"command": {"count", "list", "info", "docs", "getkeys", "getkeysandflags", "help"},
	"script":  {"load", "exists", "flush", "kill", "help"},
}

// subInfo is what COMMAND INFO reports of a subcommand, as Redis 7 does:
// arity (the command's name and the subcommand's included), flags, keys.
type subInfo struct {
	arity int
	flags string
	keys  keyRange
}

var objectSub = subInfo{3, "readonly", keyRange{2, 2, 1}}

// subcommandInfo describes the subcommands pgmirror answers.
var subcommandInfo = map[string]subInfo{
	"object|encoding": objectSub, "object|freq": objectSub, "object|idletime": objectSub,
	"object|refcount": objectSub, "object|help": {2, "loading stale", noKeys},
	"client|setname": {3, "noscript loading stale", noKeys}, "client|getname": {2, "noscript loading stale", noKeys},
	"client|id": {2, "noscript loading stale", noKeys}, "client|setinfo": {4, "noscript loading stale", noKeys},
	"client|info": {2, "noscript loading stale", noKeys}, "client|list": {-2, "admin noscript loading stale", noKeys},
	"client|kill": {-3, "admin noscript loading stale", noKeys}, "client|no-evict": {3, "admin noscript loading stale", noKeys},
	"client|no-touch": {3, "noscript loading stale", noKeys}, "client|help": {2, "loading stale", noKeys},
	"config|get": {-3, "admin noscript loading stale", noKeys}, "config|set": {-4, "admin noscript loading stale", noKeys},
	"config|resetstat": {2, "admin noscript loading stale", noKeys}, "config|help": {2, "loading stale", noKeys},
	"command|count": {2, "loading stale", noKeys}, "command|list": {-2, "loading stale", noKeys},
	"command|info": {-2, "loading stale", noKeys}, "command|docs": {-2, "loading stale", noKeys},
	"command|getkeys": {-4, "loading stale", noKeys}, "command|getkeysandflags": {-4, "loading stale", noKeys},
	"command|help": {2, "loading stale", noKeys}, "script|load": {3, "noscript stale", noKeys},
	"script|exists": {-3, "noscript", noKeys}, "script|flush": {-2, "noscript", noKeys},
	"script|kill": {2, "noscript allow_busy", noKeys}, "script|help": {2, "loading stale", noKeys},
}

// subcommandEntry is COMMAND INFO's entry of a subcommand (name
// "container|sub"), without key specs or tips; false if pgmirror has no
// such subcommand.
func subcommandEntry(c *client, name string) bool {
	info, ok := subcommandInfo[name]
	if !ok {
		return false
	}
	c.array(10)
	c.bulkString(name)
	c.integer(int64(info.arity))
	flags := strings.Fields(info.flags)
	c.array(len(flags))
	for _, f := range flags {
		c.status(f)
	}
	c.integer(int64(info.keys.first))
	c.integer(int64(info.keys.last))
	c.integer(int64(info.keys.step))
	cats := strings.Fields(aclCategories[name])
	c.array(len(cats))
	for _, cat := range cats {
		c.status("@" + cat)
	}
	c.array(0)
	c.array(0)
	c.array(0)
	return true
}

// aclCategories are Redis 7's ACL categories of the commands and
// subcommands pgmirror has (COMMAND LIST FILTERBY ACLCAT).
var aclCategories = map[string]string{
	"append": "write string fast", "auth": "fast connection", "bitcount": "read bitmap slow",
	"bitop": "write bitmap slow", "bitpos": "read bitmap slow", "client": "slow",
	"client|setname": "slow connection", "client|getname": "slow connection", "client|id": "slow connection",
	"client|setinfo": "slow connection", "client|info": "slow connection",
	"client|list": "admin slow dangerous connection", "client|kill": "admin slow dangerous connection",
	"client|no-evict": "admin slow dangerous connection", "client|no-touch": "slow connection",
	"client|help": "slow connection", "command": "slow connection", "command|count": "slow connection",
	"command|list": "slow connection", "command|info": "slow connection", "command|docs": "slow connection",
	"command|getkeys": "slow connection", "command|getkeysandflags": "slow connection",
	"command|help": "slow connection", "config": "slow", "config|get": "admin slow dangerous",
	"config|set": "admin slow dangerous", "config|resetstat": "admin slow dangerous", "config|help": "slow",
	"copy": "keyspace write slow", "dbsize": "keyspace read fast", "decr": "write string fast",
	"decrby": "write string fast", "del": "keyspace write slow", "discard": "fast transaction",
	"echo": "fast connection", "eval": "slow scripting", "eval_ro": "slow scripting",
	"evalsha": "slow scripting", "evalsha_ro": "slow scripting", "exec": "slow transaction",
	"exists": "keyspace read fast", "expire": "keyspace write fast", "expireat": "keyspace write fast",
	"expiretime": "keyspace read fast", "flushall": "keyspace write slow dangerous",
	"flushdb": "keyspace write slow dangerous", "get": "read string fast", "getbit": "read bitmap fast",
	"getdel": "write string fast", "getex": "write string fast", "getrange": "read string slow",
	"getset": "write string fast", "hello": "fast connection", "incr": "write string fast",
	"incrby": "write string fast", "incrbyfloat": "write string fast", "info": "slow dangerous",
	"keys": "keyspace read slow dangerous", "mget": "read string fast", "mset": "write string slow",
	"msetnx": "write string slow", "multi": "fast transaction", "object": "slow",
	"object|encoding": "keyspace read slow", "object|freq": "keyspace read slow",
	"object|idletime": "keyspace read slow", "object|refcount": "keyspace read slow",
	"object|help": "keyspace slow", "persist": "keyspace write fast", "pexpire": "keyspace write fast",
	"pexpireat": "keyspace write fast", "pexpiretime": "keyspace read fast", "ping": "fast connection",
	"psetex": "write string slow", "psubscribe": "pubsub slow", "pttl": "keyspace read fast",
	"punsubscribe": "pubsub slow", "quit": "fast connection", "randomkey": "keyspace read slow",
	"rename": "keyspace write slow", "renamenx": "keyspace write fast", "scan": "keyspace read slow",
	"script": "slow", "script|load": "slow scripting", "script|exists": "slow scripting",
	"script|flush": "slow scripting", "script|kill": "slow scripting", "script|help": "slow scripting",
	"select": "fast connection", "set": "write string slow", "setbit": "write bitmap slow",
	"setex": "write string slow", "setnx": "write string fast", "setrange": "write string slow",
	"strlen": "read string fast", "subscribe": "pubsub slow", "substr": "read string slow", "time": "fast",
	"touch": "keyspace read fast", "ttl": "keyspace read fast", "type": "keyspace read fast",
	"unlink": "keyspace write fast", "unsubscribe": "pubsub slow", "unwatch": "fast transaction",
	"wait": "slow connection", "watch": "fast transaction", "pgmirror.resync": "admin slow dangerous",
	"publish": "pubsub fast", "pubsub": "slow", "pubsub|channels": "pubsub slow", "pubsub|numsub": "pubsub slow",
	"pubsub|numpat": "pubsub slow", "pubsub|shardchannels": "pubsub slow", "pubsub|shardnumsub": "pubsub slow",
	"pubsub|help": "slow", "cluster": "slow", "client|tracking": "slow connection", "client|caching": "slow connection",
	"client|getredir": "slow connection", "client|trackinginfo": "slow connection",
}

// commandGetKeys answers COMMAND GETKEYS and GETKEYSANDFLAGS full-command.
func commandGetKeys(c *client, t *commandTable, full [][]byte, flags bool) {
	cmd := t.lookup(full[0])
	if cmd == nil {
		c.errorReply("ERR Invalid command specified")
		return
	}
	keys, arity := keyPositions(cmd, full)
	switch {
	case keys == nil && arity == 0:
		c.errorReply("ERR Invalid command specified")
		return
	case keys == nil:
		c.errorReply("ERR The command has no key arguments")
		return
	case arity > 0 && len(full) != arity || arity < 0 && len(full) < -arity:
		c.errorReply("ERR Invalid number of arguments specified for command")
		return
	}
	c.array(len(keys))
	for i, p := range keys {
		if !flags {
			c.bulk(full[p])
			continue
		}
		c.array(2)
		c.bulk(full[p])
		f := keyFlagsOf(cmd.name, i, full)
		if c.proto == 3 {
			c.wbuf = appendNumber(c.wbuf, '~', int64(len(f)))
		} else {
			c.array(len(f))
		}
		for _, s := range f {
			c.status(s)
		}
	}
}

// keyPositions returns where cmd's keys are in full (the command name at
// 0), an empty non-nil slice when it may have none there, nil when it has
// none (arity 0 too: an unknown subcommand); and the arity to check.
func keyPositions(cmd *command, full [][]byte) ([]int, int) {
	if subs := subcommands[cmd.name]; subs != nil && len(full) > 1 {
		sub := lower(full[1])
		switch {
		case !slices.Contains(subs, sub):
			return nil, 0
		case cmd.name != "object" || sub == "help":
			return nil, -2
		}
		return []int{2}, 3
	}
	switch cmd.name {
	case "eval", "evalsha", "eval_ro", "evalsha_ro":
		if len(full) < 3 {
			return []int{}, cmd.arity
		}
		n, ok := parseInt(full[2])
		if !ok || n < 0 || 3+n > int64(len(full)) {
			return []int{}, cmd.arity // Redis: no keys, no error
		}
		out := make([]int, n)
		for i := range out {
			out[i] = 3 + i
		}
		return out, cmd.arity
	}
	k := cmd.keys
	if k == noKeys {
		return nil, cmd.arity
	}
	last := k.last
	if last < 0 {
		last += len(full)
	}
	out := []int{}
	for p := k.first; p <= last && p < len(full); p += k.step {
		out = append(out, p)
	}
	return out, cmd.arity
}

// keyFlagsOf are the flags of the i-th key of full, a command of name.
func keyFlagsOf(name string, i int, full [][]byte) []string {
	f := keyFlags[name]
	if name == "set" {
		for _, a := range full[3:] {
			if strings.EqualFold(string(a), "get") {
				f[0] = "RW access update"
			}
		}
	}
	s := f[0]
	if i > 0 && f[1] != "" {
		s = f[1]
	}
	return strings.Fields(s)
}

// commandList answers COMMAND LIST [FILTERBY MODULE name|ACLCAT
// category|PATTERN pattern]: the commands, and the subcommands pgmirror
// answers as command|subcommand, as Redis 7 lists them. pgmirror has no
// modules.
func commandList(c *client, t *commandTable, a [][]byte) {
	var keep func(name string) bool
	switch {
	case len(a) == 2:
		keep = func(string) bool { return true }
	case len(a) == 5 && lower(a[2]) == "filterby":
		arg := string(a[4])
		switch lower(a[3]) {
		case "module":
			keep = func(string) bool { return false }
		case "aclcat":
			keep = func(name string) bool {
				return slices.Contains(strings.Fields(aclCategories[name]), strings.ToLower(arg))
			}
		case "pattern":
			keep = func(name string) bool { return globMatch(strings.ToLower(arg), name) } // nocase, as Redis
		}
	}
	if keep == nil {
		c.errorReply(errSyntax)
		return
	}
	var names []string
	for _, cmd := range t.list {
		if keep(cmd.name) {
			names = append(names, cmd.name)
		}
		for _, sub := range subcommands[cmd.name] {
			if full := cmd.name + "|" + sub; keep(full) {
				names = append(names, full)
			}
		}
	}
	c.array(len(names))
	for _, n := range names {
		c.bulkString(n)
	}
}

// wrongSubArity answers a subcommand's arity error.
func wrongSubArity(c *client, cmd, sub string) {
	c.errorReply(fmt.Sprintf("ERR wrong number of arguments for '%s|%s' command", cmd, sub))
}
