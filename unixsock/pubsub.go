package unixsock

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Keyspace notifications as Redis names them: for a change of key K with
// event E, channel "__keyspace@0__:K" carries E and "__keyevent@0__:E"
// carries K. Subscribers get them through SUBSCRIBE and PSUBSCRIBE.

// DefaultSubscriberBuffer is how many messages a subscriber may have
// waiting before it is disconnected.
const DefaultSubscriberBuffer = 4096

const (
	keyspacePrefix = "__keyspace@0__:"
	keyeventPrefix = "__keyevent@0__:"
)

// message is one published message.
type message struct {
	pattern string // set for a pmessage
	channel string
	payload string
}

// subscription is the pub/sub state of one client.
type subscription struct {
	channels map[string]bool
	patterns map[string]bool
	out      chan message
	dropped  atomic.Bool // the buffer overflowed: the client is being disconnected
}

// hub routes key events to subscribers.
type hub struct {
	mu   sync.RWMutex
	subs map[*client]*subscription
	// routes lists every channel and pattern of every subscriber, rebuilt
	// under mu whenever one changes: publish, which runs for every change
	// the mirror applies, walks a slice instead of maps.
	routes []route
	n      atomic.Int32 // subscribers: zero makes Publish free
}

// route is one channel or pattern of one subscriber.
type route struct {
	c       *client
	sub     *subscription
	name    string
	pattern bool
	lit     string // a pattern's literal start (before any of *?[\): a cheap first test
}

// rebuild recomputes h.routes; h.mu is held for writing.
func (h *hub) rebuild() {
	h.routes = h.routes[:0]
	for c, sub := range h.subs {
		for ch := range sub.channels {
			h.routes = append(h.routes, route{c: c, sub: sub, name: ch})
		}
		for p := range sub.patterns {
			lit := p
			if i := strings.IndexAny(p, "*?[\\"); i >= 0 {
				lit = p[:i]
			}
			h.routes = append(h.routes, route{c: c, sub: sub, name: p, pattern: true, lit: lit})
		}
	}
}

// publish delivers the notifications of one key event, the keyspace
// message to every subscriber before the keyevent one, as Redis does. It
// never blocks: a subscriber whose buffer is full is disconnected. Channel
// names are only built for a route that can match.
func (s *Server) publish(key, event string) {
	h := &s.hub
	if h.n.Load() == 0 || !strings.HasPrefix(key, s.Namespace) {
		return
	}
	key = key[len(s.Namespace):]
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, kind := range [2]struct{ prefix, name, payload string }{
		{keyspacePrefix, key, event},
		{keyeventPrefix, event, key},
	} {
		channel := ""
		for i := range h.routes {
			r := &h.routes[i]
			if r.pattern {
				if !hasPrefixOf2(kind.prefix, kind.name, r.lit) {
					continue
				}
				if channel == "" {
					channel = kind.prefix + kind.name
				}
				if globMatch(r.name, channel) {
					r.sub.send(r.c, message{pattern: r.name, channel: channel, payload: kind.payload})
				}
			} else if len(r.name) == len(kind.prefix)+len(kind.name) && strings.HasPrefix(r.name, kind.prefix) &&
				r.name[len(kind.prefix):] == kind.name {
				r.sub.send(r.c, message{channel: r.name, payload: kind.payload})
			}
		}
	}
}

// hasPrefixOf2 reports whether a+b starts with p, without building a+b.
func hasPrefixOf2(a, b, p string) bool {
	if len(p) <= len(a) {
		return strings.HasPrefix(a, p)
	}
	return strings.HasPrefix(p, a) && strings.HasPrefix(b, p[len(a):])
}

// KeyEvent is the hook for mirror.Options.OnKeyEvent.
func (s *Server) KeyEvent(key, event string) { s.publish(key, event) }

func (sub *subscription) send(c *client, m message) {
	if sub.dropped.Load() {
		return
	}
	select {
	case sub.out <- m:
	default:
		// A slow subscriber must never slow the mirror: disconnect it.
		if sub.dropped.CompareAndSwap(false, true) {
			c.s.stats.subscribersDropped.Add(1)
			c.s.Logger.Warn("disconnecting a subscriber that does not keep up", "client", c.id,
				"buffer", cap(sub.out))
			c.nc.Close()
		}
	}
}

// subscribe adds channels or patterns for c, starting its pusher on first use.
func (c *client) subscribe(names [][]byte, pattern bool) {
	h := &c.s.hub
	h.mu.Lock()
	sub := h.subs[c]
	if sub == nil {
		sub = &subscription{channels: map[string]bool{}, patterns: map[string]bool{},
			out: make(chan message, c.s.SubscriberBuffer)}
		if h.subs == nil {
			h.subs = map[*client]*subscription{}
		}
		h.subs[c] = sub
		h.n.Add(1)
		c.sub = sub
		go c.push(sub)
	}
	kind := "subscribe"
	set := sub.channels
	if pattern {
		kind, set = "psubscribe", sub.patterns
	}
	for _, n := range names {
		set[string(n)] = true
		c.pushHeader(3)
		c.bulkString(kind)
		c.bulk(n)
		c.integer(int64(len(sub.channels) + len(sub.patterns)))
	}
	h.rebuild()
	h.mu.Unlock()
}

// unsubscribe removes channels or patterns (all of them when names is empty).
func (c *client) unsubscribe(names [][]byte, pattern bool) {
	h := &c.s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.rebuild()
	sub := h.subs[c]
	kind := "unsubscribe"
	if pattern {
		kind = "punsubscribe"
	}
	var set map[string]bool
	if sub != nil {
		set = sub.channels
		if pattern {
			set = sub.patterns
		}
	}
	if len(names) == 0 {
		for n := range set {
			names = append(names, []byte(n))
		}
	}
	if len(names) == 0 {
		c.pushHeader(3)
		c.bulkString(kind)
		c.null()
		c.integer(0)
		return
	}
	for _, n := range names {
		delete(set, string(n))
		count := 0
		if sub != nil {
			count = len(sub.channels) + len(sub.patterns)
		}
		c.pushHeader(3)
		c.bulkString(kind)
		c.bulk(n)
		c.integer(int64(count))
	}
}

// leave drops c's subscription when it disconnects.
func (c *client) leave() {
	h := &c.s.hub
	h.mu.Lock()
	sub, ok := h.subs[c]
	if ok {
		delete(h.subs, c)
		h.n.Add(-1)
		h.rebuild()
	}
	h.mu.Unlock()
	if ok {
		close(sub.out)
	}
}

// subscribed reports whether c is in subscribe mode (any subscription).
func (c *client) subscribed() bool {
	if c.sub == nil {
		return false
	}
	h := &c.s.hub
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(c.sub.channels)+len(c.sub.patterns) > 0
}

// push writes published messages to the client as they come, all that are
// queued in one write.
func (c *client) push(sub *subscription) {
	for m := range sub.out {
		c.wmu.Lock()
		c.writeMessage(m)
		for queued := len(sub.out); queued > 0; queued-- {
			c.writeMessage(<-sub.out)
		}
		err := c.wr.Flush()
		c.wmu.Unlock()
		if err != nil {
			c.nc.Close()
			for range sub.out { // drain until leave closes it
			}
			return
		}
	}
}

func (c *client) writeMessage(m message) {
	if m.pattern != "" {
		c.pushHeader(4)
		c.bulkString("pmessage")
		c.bulkString(m.pattern)
	} else {
		c.pushHeader(3)
		c.bulkString("message")
	}
	c.bulkString(m.channel)
	c.bulkString(m.payload)
}

// pushHeader starts a push message: a RESP3 push, or an array in RESP2.
func (c *client) pushHeader(n int) {
	if c.proto == 3 {
		c.wr.WriteRaw([]byte(">" + strconv.Itoa(n) + "\r\n"))
		return
	}
	c.wr.WriteArray(n)
}
