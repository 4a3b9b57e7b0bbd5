package unixsock

import (
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/redcon"
)

// client is one connection: RESP in through a guard, replies out through a
// buffer flushed once per pipeline.
type client struct {
	s     *Server
	nc    net.Conn
	id    int64
	rd    *redcon.Reader
	wr    *redcon.Writer
	proto int           // 2, or 3 after HELLO 3
	wmu   sync.Mutex    // the reply writer: the command loop and the pusher share it
	sub   *subscription // set by the first SUBSCRIBE or PSUBSCRIBE

	mu   sync.Mutex
	name string
	busy bool // executing commands (not blocked reading)
	quit bool
}

func (s *Server) newClient(nc net.Conn) *client {
	maxBulk := max(2*s.MaxValueSize, 1<<20)
	return &client{
		s:     s,
		nc:    nc,
		id:    s.nextID.Add(1),
		rd:    redcon.NewReader(newGuard(nc, maxBulk, 2*maxBulk)),
		wr:    redcon.NewWriter(nc),
		proto: 2,
	}
}

// serve reads pipelines of commands and answers them until the client
// quits, breaks the protocol, or the server drains.
func (c *client) serve() {
	defer c.leave()
	defer c.nc.Close()
	for {
		if !c.setBusy(false) {
			return // draining, and nothing read is left unanswered
		}
		cmds, err := c.rd.ReadCommands()
		if err != nil {
			c.readFailed(err)
			return
		}
		c.setBusy(true)
		c.wmu.Lock()
		for _, cmd := range cmds {
			c.s.stats.commands.Add(1)
			c.dispatch(cmd.Args)
			if c.quit {
				break
			}
		}
		err = c.wr.Flush()
		c.wmu.Unlock()
		if err != nil || c.quit {
			return
		}
	}
}

// readFailed answers a protocol violation before the connection closes.
func (c *client) readFailed(err error) {
	if errors.Is(err, io.EOF) || c.s.draining.Load() {
		return
	}
	msg := ""
	if pe, ok := isProtocolError(err); ok {
		msg = pe.Error()
	} else if strings.Contains(err.Error(), "Protocol error") || strings.HasPrefix(err.Error(), "invalid") ||
		strings.HasPrefix(err.Error(), "expected") || strings.HasPrefix(err.Error(), "unbalanced") {
		msg = "Protocol error: " + err.Error() // redcon's own parse errors
	}
	if msg == "" {
		return // a network error: nobody to tell
	}
	c.s.stats.protocolErrors.Add(1)
	c.s.Logger.Debug("closing client after a protocol error", "client", c.id, "error", msg)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wr.WriteError("ERR " + msg)
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.wr.Flush()
}

// setBusy records whether the client is executing commands; going idle it
// reports false when the server is draining, so the loop ends.
func (c *client) setBusy(busy bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.busy = busy
	if !busy && c.s.draining.Load() {
		return false
	}
	return true
}

// wakeIdle ends a blocking read of an idle client so it sees the drain.
func (c *client) wakeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.busy {
		_ = c.nc.SetReadDeadline(time.Now())
	}
}

// Replies.

func (c *client) ok()                 { c.wr.WriteString("OK") }
func (c *client) status(s string)     { c.wr.WriteString(s) }
func (c *client) integer(n int64)     { c.wr.WriteInt64(n) }
func (c *client) bulk(b []byte)       { c.wr.WriteBulk(b) }
func (c *client) bulkString(s string) { c.wr.WriteBulkString(s) }
func (c *client) array(n int)         { c.wr.WriteArray(n) }

// errorReply sends an error; msg starts with its code (ERR, LOADING, ...).
func (c *client) errorReply(msg string) {
	c.wr.WriteError(strings.NewReplacer("\r", " ", "\n", " ").Replace(msg))
}

func (c *client) null() {
	if c.proto == 3 {
		c.wr.WriteRaw([]byte("_\r\n"))
		return
	}
	c.wr.WriteNull()
}

// mapHeader starts a map of n pairs: a RESP3 map, or a flat array in RESP2.
func (c *client) mapHeader(n int) {
	if c.proto == 3 {
		c.wr.WriteRaw([]byte("%" + strconv.Itoa(n) + "\r\n"))
		return
	}
	c.wr.WriteArray(2 * n)
}

// verbatim sends text: a verbatim string in RESP3, a bulk string in RESP2.
func (c *client) verbatim(text string) {
	if c.proto == 3 {
		c.wr.WriteRaw([]byte("=" + strconv.Itoa(len(text)+4) + "\r\ntxt:" + text + "\r\n"))
		return
	}
	c.wr.WriteBulkString(text)
}
