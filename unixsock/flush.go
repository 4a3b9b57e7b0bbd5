package unixsock

import (
	"strings"

	"pgmirror/mirror"
)

// registerFlush adds FLUSHDB and FLUSHALL: every key this client can see
// (its namespace) is deleted in Postgres, in one statement that sends one
// flush record to every sidecar (migrations/0010_commands.sql). Entries a
// copy-mode watch maintains stay. FLUSHALL is FLUSHDB: there is one
// database.
func registerFlush(t *commandTable) {
	t.handle("flushdb", -1, noKeys, writeFlags, cmdFlush)
	t.handle("flushall", -1, noKeys, writeFlags, cmdFlush)
}

// cmdFlush answers FLUSHDB and FLUSHALL [ASYNC|SYNC]; both modes run
// synchronously: the reply comes once the flush committed and this
// sidecar's mirror applied it.
func cmdFlush(c *client, a [][]byte) {
	if len(a) > 2 {
		c.errorReply("ERR syntax error")
		return
	}
	if len(a) == 2 {
		if m := strings.ToLower(string(a[1])); m != "async" && m != "sync" {
			c.errorReply("ERR syntax error")
			return
		}
	}
	if c.s.NoFlush {
		c.errorReply("ERR " + strings.ToUpper(string(a[0])) + " is refused by this sidecar (--no-flush)")
		return
	}
	c.write(mirror.WriteOp{Kind: mirror.WriteFlush, Prefix: c.s.Namespace}, c.replyResult)
}
