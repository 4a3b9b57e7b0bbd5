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
	arity := map[string]int{"load": 3, "exists": -3, "flush": -2, "kill": 2}[sub]
	switch {
	case arity == 0:
		c.errorReply(fmt.Sprintf("ERR unknown subcommand '%s'. Try SCRIPT HELP.", clip(a[1])))
		return
	case arity > 0 && len(a) != arity || arity < 0 && len(a) < -arity:
		c.errorReply(fmt.Sprintf("ERR wrong number of arguments for 'script|%s' command", sub))
		return
	}
	switch sub {
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
// command table, on a scratch client whose replies it parses back. On the
// mirror (tx nil) it answers reads and aborts the run at the first write;
// inside a transaction it runs every command there.
type scriptCaller struct {
	c     *client // the client that sent EVAL
	sc    *client // scratch client: its replies are captured
	keys  script.KeySet
	ro    bool
	tx    scriptTx
	wrote bool
	mu    sync.Mutex // guards wrote: SCRIPT KILL reads it from another client
}

// scriptTx is where a script that writes runs its commands.
type scriptTx interface {
	// call runs a command of the script inside the transaction, its
	// reply written to sc.
	call(sc *client, cmd *command, args [][]byte)
}

func (c *client) newScriptCaller(keys [][]byte, ro bool, tx scriptTx) *scriptCaller {
	sc := &client{s: c.s, id: c.id, proto: 2, capture: true}
	return &scriptCaller{c: c, sc: sc, keys: script.NewKeySet(keys), ro: ro, tx: tx}
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
	if cmd.has(flagWrite) && k.tx == nil {
		return script.Reply{}, errScriptWrites
	}
	if cmd.has(flagMirror) && k.c.s.Mirror.State() == mirror.StateLoading {
		return script.ErrorReply(errLoading), nil
	}
	cmd.calls.Add(1)
	k.sc.wbuf = k.sc.wbuf[:0]
	if k.tx != nil {
		if cmd.has(flagWrite) {
			k.mu.Lock()
			k.wrote = true
			k.mu.Unlock()
		}
		k.tx.call(k.sc, cmd, args)
	} else {
		cmd.fn(k.sc, args)
	}
	rep, _, err := script.ParseReply(k.sc.wbuf)
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

// evalWrites runs a script that writes. Until the transaction path lands,
// it answers an error and writes nothing.
func (c *client) evalWrites(_ *script.Engine, _ *script.Script, _ script.Request) (script.Reply, error) {
	return script.ErrorReply("ERR pgmirror: scripts that write are not supported yet"), nil
}
