package unixsock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"pgmirror/mirror"
	"pgmirror/script"
)

// DefaultScriptTimeout bounds one script run (--script-timeout). It is
// below the write path's own bounds, so a write batch waiting on the keys a
// script holds does not fail for it.
const DefaultScriptTimeout = time.Second

// scripts is a server's script engine, built on first use.
type scripts struct {
	once sync.Once
	eng  *script.Engine
}

// scriptEngine returns the server's script engine.
func (s *Server) scriptEngine() *script.Engine {
	s.scr.once.Do(func() {
		timeout := s.ScriptTimeout
		if timeout <= 0 {
			timeout = DefaultScriptTimeout
		}
		s.scr.eng = script.New(script.Config{Timeout: timeout, Logger: s.Logger.Named("script")})
	})
	return s.scr.eng
}

// registerScripts adds EVAL, EVALSHA, their _RO forms and SCRIPT, with
// Redis's flags: none of them may be called from a script ("noscript").
// They may run in MULTI, and are refused while the mirror loads (as
// Redis refuses them while it loads).
func registerScripts(t *commandTable) {
	f := flagPostgres | flagMirror | flagMulti
	t.handle("eval", -3, noKeys, f, func(c *client, a [][]byte) { c.eval(a, false, false) })
	t.handle("evalsha", -3, noKeys, f, func(c *client, a [][]byte) { c.eval(a, true, false) })
	t.handle("eval_ro", -3, noKeys, f|flagReadonly, func(c *client, a [][]byte) { c.eval(a, false, true) })
	t.handle("evalsha_ro", -3, noKeys, f|flagReadonly, func(c *client, a [][]byte) { c.eval(a, true, true) })
	t.handle("script", -2, noKeys, flagMulti|flagMirror, cmdScript)
}

// scriptReply sends a script's reply in the client's protocol.
func (c *client) scriptReply(rep script.Reply) {
	c.wbuf = rep.AppendRESP(c.wbuf, c.proto)
	c.grew()
}

// eval answers EVAL and EVALSHA (bySHA), and their _RO forms (ro).
func (c *client) eval(a [][]byte, bySHA, ro bool) {
	if c.txn.blk != nil {
		// In the EXEC of a block that runs in the group commit: the script's keys
		// are not among the block's locks.
		c.errorReply("ERR pgmirror: EVAL and EVALSHA are not supported in a MULTI block that writes " +
			"(send the script outside MULTI: it is atomic on its own)")
		return
	}
	e := c.s.scriptEngine()
	keys, argv, rep, ok := script.SplitKeys(a[2:])
	if !ok {
		c.scriptReply(rep)
		return
	}
	var s *script.Script
	if bySHA {
		if s, ok = e.Lookup(string(a[1])); !ok {
			c.errorReply(script.MsgNoScript)
			return
		}
	} else if s, rep = e.Script(a[1]); s == nil {
		c.scriptReply(rep)
		return
	}
	req := script.Request{Keys: keys, Args: argv, ReadOnly: ro,
		Deadline: time.Now().Add(e.Config().Timeout)}
	sc := c.newScriptCaller(keys, s.ReadOnly(ro), nil)
	req.Caller = sc
	rep, err := e.Run(c.ctx(), s, req)
	if errors.Is(err, errScriptWrites) {
		rep, err = c.evalWrites(e, s, req)
	}
	if err != nil {
		c.errorReply("ERR script aborted: " + err.Error())
		return
	}
	c.scriptReply(rep)
}

// cmdScript answers SCRIPT LOAD, EXISTS, FLUSH and KILL as Redis 7 does.
func cmdScript(c *client, a [][]byte) {
	e := c.s.scriptEngine()
	sub := strings.ToLower(string(a[1]))
	arity := map[string]int{"load": 3, "exists": -3, "flush": -2, "kill": 2, "help": 2}[sub]
	switch {
	case arity == 0:
		c.errorReply(fmt.Sprintf("ERR unknown subcommand '%s'. Try SCRIPT HELP.", clip(a[1])))
		return
	case arity > 0 && len(a) != arity || arity < 0 && len(a) < -arity:
		c.errorReply(fmt.Sprintf("ERR wrong number of arguments for 'script|%s' command", sub))
		return
	}
	switch sub {
	case "help":
		helpReply(c, scriptHelp) // introspect.go
	case "load":
		sha, rep := e.Load(a[2])
		if sha == "" {
			c.scriptReply(rep)
			return
		}
		c.bulkString(sha)
	case "exists":
		shas := make([]string, len(a)-2)
		for i, b := range a[2:] {
			shas[i] = string(b)
		}
		found := e.Exists(shas...)
		c.array(len(found))
		for _, f := range found {
			if f {
				c.integer(1)
			} else {
				c.integer(0)
			}
		}
	case "flush":
		if len(a) > 3 || len(a) == 3 && !strings.EqualFold(string(a[2]), "sync") && !strings.EqualFold(string(a[2]), "async") {
			c.errorReply("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
			return
		}
		e.Flush()
		c.ok()
	case "kill":
		c.scriptReply(e.Kill())
	}
}

// errScriptWrites aborts a script's run on the mirror at its first write:
// the script then runs again from the start, inside a transaction.
var errScriptWrites = errors.New("the script writes")

// scriptCaller runs the commands of one script run through the server's
// command table, on scratch clients whose replies it parses back. On the
// mirror (tx nil) it answers reads and aborts the run at the first write;
// inside a transaction the commands on keys (flagMirror) run there, on a
// scratch server whose Mirror and Writer are the transaction (txView).
type scriptCaller struct {
	c    *client // the client that sent EVAL
	sc   *client // scratch client on the server: its replies are captured
	txc  *client // scratch client on the transaction's server (tx set)
	keys script.KeySet
	ro   bool
	tx   *txView
	// writes and writeBytes count the run's write commands and their
	// arguments' bytes, bounded by maxScriptWrites and maxScriptWriteBytes.
	writes, writeBytes int
	wrote              bool
	mu                 sync.Mutex // guards wrote: SCRIPT KILL reads it from another client
}

func (c *client) newScriptCaller(keys [][]byte, ro bool, tx *txView) *scriptCaller {
	k := &scriptCaller{c: c, sc: &client{s: c.s, id: c.id, proto: 2, capture: true},
		keys: script.NewKeySet(keys), ro: ro, tx: tx}
	k.sc.info.noTouch.Store(c.info.noTouch.Load()) // a script's reads are its caller's (CLIENT NO-TOUCH)
	if tx != nil {
		srv := &Server{ctx: tx.ctx, Namespace: c.s.Namespace, MaxValueSize: c.s.MaxValueSize,
			MaxClients: c.s.MaxClients, Mirror: tx, Writer: tx, Logger: c.s.Logger}
		k.txc = &client{s: srv, id: c.id, proto: 2, capture: true}
	}
	return k
}

// Call implements script.Caller, refusing what Redis's script client
// refuses, and keys the script did not declare.
func (k *scriptCaller) Call(_ context.Context, args [][]byte) (script.Reply, error) {
	cmd := k.c.s.commands().lookup(args[0])
	switch {
	case cmd == nil:
		return script.ErrorReply(script.MsgUnknownCommand), nil
	case cmd.arity > 0 && len(args) != cmd.arity || cmd.arity < 0 && len(args) < -cmd.arity:
		return script.ErrorReply(script.MsgWrongArity), nil
	case !cmd.has(flagScript):
		return script.ErrorReply(script.MsgNotAllowed), nil
	case cmd.has(flagWrite) && k.ro:
		return script.ErrorReply(script.MsgWriteInReadOnly), nil
	}
	if key, bad := k.keys.Undeclared(args, cmd.keys.first, cmd.keys.last, cmd.keys.step); bad {
		return script.UndeclaredKeyError(key), nil
	}
	if cmd.has(flagWrite) || cmd.name == "publish" && !k.ro {
		if k.tx == nil {
			// A PUBLISH too: the run on the mirror must not send what
			// the run in the transaction sends again (channels.go).
			return script.Reply{}, errScriptWrites
		}
		if rep, ok := k.countWrite(args); !ok {
			return rep, nil
		}
	}
	if cmd.has(flagMirror) && k.c.s.Mirror.State() == mirror.StateLoading {
		return script.ErrorReply(errLoading), nil
	}
	cmd.calls.Add(1)
	k.c.trackKeys(cmd, args) // tracking.go
	sc := k.sc
	if k.tx != nil && cmd.has(flagMirror) {
		sc = k.txc
		if cmd.has(flagWrite) {
			k.mu.Lock()
			k.wrote = true
			k.mu.Unlock()
		}
	}
	sc.wbuf = sc.wbuf[:0]
	if k.tx != nil && cmd.name == "publish" {
		sc.txn.script = k.tx // sent with the script's writes (scripttx.go)
		defer func() { sc.txn.script = nil }()
	}
	cmd.fn(sc, args)
	if k.tx != nil && k.tx.failed != nil {
		return script.Reply{}, k.tx.failed // the transaction is lost: stop the run
	}
	rep, _, err := script.ParseReply(sc.wbuf)
	if err != nil {
		return script.ErrorReply("ERR internal error: " + err.Error()), nil
	}
	return rep, nil
}

// Wrote implements script.Caller.
func (k *scriptCaller) Wrote() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.wrote
}

// Bounds of one script run's transaction: its write commands, and the bytes
// of their arguments (what the transaction keeps until it commits).
// (Variables, so that tests can lower them.)
var (
	maxScriptWrites     = 1024
	maxScriptWriteBytes = 64 << 20
)

// countWrite counts a write command of the run; past the bounds it answers
// an error reply instead of running it.
func (k *scriptCaller) countWrite(args [][]byte) (script.Reply, bool) {
	n := 0
	for _, a := range args {
		n += len(a)
	}
	if k.writes+1 > maxScriptWrites || k.writeBytes+n > maxScriptWriteBytes {
		size := fmt.Sprintf("%d MiB", maxScriptWriteBytes>>20)
		if maxScriptWriteBytes%(1<<20) != 0 {
			size = fmt.Sprintf("%d bytes", maxScriptWriteBytes)
		}
		return script.ErrorReply(fmt.Sprintf("ERR a pgmirror script may run at most %d write commands "+
			"of %s together in its transaction", maxScriptWrites, size)), false
	}
	k.writes++
	k.writeBytes += n
	return script.Reply{}, true
}
