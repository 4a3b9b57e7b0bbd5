package script

import "fmt"

// Error texts, as Redis 7.0 words them where Redis has them. A Caller answers
// with the ones about commands (unknown, arity, not allowed, write in a
// read-only script) as Redis's script client does; the engine answers with
// the others itself.
const (
	// MsgNoScript answers EVALSHA of a sha the cache does not hold.
	MsgNoScript = "NOSCRIPT No matching script. Please use EVAL."
	// MsgNotBusy answers SCRIPT KILL when no script runs.
	MsgNotBusy = "NOTBUSY No scripts in execution right now."
	// MsgUnkillable answers SCRIPT KILL when every running script has written.
	MsgUnkillable = "UNKILLABLE Sorry the script already executed write commands against the dataset. " +
		"You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command."
	// MsgKilled is the error a script stopped by SCRIPT KILL raises.
	MsgKilled = "ERR Script killed by user with SCRIPT KILL..."

	// MsgUnknownCommand is a Caller's answer to a command it does not know.
	MsgUnknownCommand = "ERR Unknown Redis command called from script"
	// MsgWrongArity is a Caller's answer to a command with the wrong number of arguments.
	MsgWrongArity = "ERR Wrong number of args calling Redis command from script"
	// MsgNotAllowed is a Caller's answer to a command scripts may not run (Redis's noscript flag).
	MsgNotAllowed = "ERR This Redis command is not allowed from script"
	// MsgWriteInReadOnly is a Caller's answer to a write command in a read-only run (Run.ReadOnly).
	MsgWriteInReadOnly = "ERR Write commands are not allowed from read-only scripts."
	// MsgWriteFlagRO answers EVAL_RO / EVALSHA_RO of a script whose shebang lacks no-writes.
	MsgWriteFlagRO = "ERR Can not execute a script with write flag using *_ro command."

	msgNoArgs       = "Please specify at least one argument for this redis lib call"
	msgBadArgs      = "Lua redis lib command arguments must be strings or integers"
	msgReadonlyTbl  = "Attempt to modify a readonly table"
	msgNoGlobal     = "Script attempted to access nonexistent global variable '%s'"
	msgWrongArgs    = "wrong number or type of arguments"
	msgNumKeysLarge = "ERR Number of keys can't be greater than number of args"
	msgNumKeysNeg   = "ERR Number of keys can't be negative"
)

// UndeclaredKeyError is the reply a Caller gives for a command that names a
// key the script did not declare in KEYS (see KeySet).
func UndeclaredKeyError(key []byte) Reply {
	return ErrorReply(fmt.Sprintf("ERR Script attempted to access key '%s', which it did not declare in KEYS: "+
		"a pgmirror script may only use the keys it declares", truncate(string(key), 128)))
}

// timeoutError is the reply for a run stopped at the time limit.
func timeoutError(sha string, limit fmt.Stringer) Reply {
	return ErrorReply(fmt.Sprintf("ERR Script timed out: it ran longer than the script time limit (%v) "+
		"and was stopped script: %s", limit, sha))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
