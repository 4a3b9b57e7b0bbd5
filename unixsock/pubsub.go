package unixsock

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"pgmirror/mirror"
)

// Keyspace notifications as Redis names them: for a change of key K with
// event E, channel "__keyspace@0__:K" carries E and "__keyevent@0__:E"
// carries K. Subscribers get them through SUBSCRIBE and PSUBSCRIBE.
//
// The mirror hands its events to handleMirrorEvent, which only queues each
// key change: a publisher goroutine matches it against the subscriptions
// and queues the messages in each subscriber's outbox. A full queue drops
// events (counted) rather than slow the mirror's other handlers.

// DefaultSubscriberBuffer is how many messages a subscriber may have
// waiting before it is disconnected.
const DefaultSubscriberBuffer = 4096

// Bounds of subscriptions and of the publisher's queue.
const (
	// MaxChannelsPerClient and MaxPatternsPerClient bound one client's
	// subscriptions: every published event is matched against every
	// pattern.
	MaxChannelsPerClient = 10000
	MaxPatternsPerClient = 1000
	// maxChannelName bounds a channel or pattern (a keyspace channel is at
	// most 15 bytes of prefix and a 4000-byte key).
	maxChannelName = 4096
	// subscriptionCost is what a subscription costs beyond its name.
	subscriptionCost = 64
	// publishQueue and publishQueueBytes bound the events waiting for the
	// publisher; publishBatch is how many it takes at once.
	publishQueue      = 16384
	publishQueueBytes = 8 << 20
	publishBatch      = 256
)

const (
	keyspacePrefix = "__keyspace@0__:"
	keyeventPrefix = "__keyevent@0__:"
)

// subscription is the pub/sub state of one client; hub.mu guards it.
type subscription struct {
	channels map[string]struct{}
	patterns map[string]int // index in hub.patterns
	bytes    int64          // accounted to the client
}

func (sub *subscription) count() int { return len(sub.channels) + len(sub.patterns) }

// hub routes key events to subscribers.
type hub struct {
	mu       sync.RWMutex
	channels map[string]map[*client]struct{} // exact channel -> subscribers
	// patterns lists every pattern of every subscriber; a removed one is
	// replaced by the last, so subscribing and unsubscribing cost O(1).
	patterns []patternRoute
	n        atomic.Int32 // subscribed clients: zero makes handleMirrorEvent free
}

// patternRoute is one pattern of one subscriber.
type patternRoute struct {
	c       *client
	pattern string
	lit     string // the pattern's literal start (before any of *?[\): a cheap first test
}

// keyEvent is one change waiting for the publisher, or (message set) an
// application's message: key is then the channel and event the message.
type keyEvent struct {
	key, event string
	message    bool
}

// size is what e counts against publishQueueBytes.
func (e *keyEvent) size() int64 {
	if e.message {
		return int64(len(e.key)+len(e.event)) + 32
	}
	return int64(len(e.key)) + 32
}

// publisher is the queue between the mirror's apply path and publishLoop.
type publisher struct {
	events  chan keyEvent
	bytes   atomic.Int64 // of the queued keys
	dropped atomic.Int64
	hook    func() // tests: runs before each batch is published
}

func (p *publisher) start() { p.events = make(chan keyEvent, publishQueue) }

// handleMirrorEvent is the server's handler of the mirror's events, registered by Open
// (mirror.Handle): each key change becomes keyspace notifications. It
// never blocks: a change is queued for the publisher, or dropped and
// counted when the queue is full.
func (s *Server) handleMirrorEvent(ev mirror.Event) {
	if s.hub.n.Load() == 0 {
		return
	}
	switch ev.Kind {
	case mirror.KindChanges:
		for i := range ev.Changes {
			s.queueEvent(keyEvent{key: ev.Changes[i].Key, event: ev.Changes[i].Event})
		}
	case mirror.KindMessage: // channels.go
		for i := range ev.Messages {
			m := &ev.Messages[i]
			s.queueEvent(keyEvent{key: m.Channel, event: string(m.Data), message: true})
		}
	}
}

// queueEvent queues one key change or message for the publisher; one
// outside the namespace is nobody's here.
func (s *Server) queueEvent(e keyEvent) {
	if s.hub.n.Load() == 0 || !strings.HasPrefix(e.key, s.Namespace) {
		return
	}
	p := &s.pub
	size := e.size()
	if p.bytes.Add(size) > publishQueueBytes {
		p.bytes.Add(-size)
		p.dropped.Add(1)
		return
	}
	select {
	case p.events <- e:
	default:
		p.bytes.Add(-size)
		p.dropped.Add(1)
	}
}

// publishLoop publishes queued events until Close.
func (s *Server) publishLoop() {
	defer s.helpers.Done()
	p := &s.pub
	batch := make([]keyEvent, 0, publishBatch)
	touched := map[*client]struct{}{}
	var reported int64
	var lastLog time.Time
	for {
		select {
		case <-s.stop:
			return
		case ev := <-p.events:
			batch = append(batch[:0], ev)
		}
	more:
		for len(batch) < publishBatch {
			select {
			case ev := <-p.events:
				batch = append(batch, ev)
			default:
				break more
			}
		}
		if p.hook != nil {
			p.hook()
		}
		for i, ev := range batch {
			p.bytes.Add(-ev.size())
			if ev.message {
				s.publishMessage(ev.key[len(s.Namespace):], ev.event, touched)
			} else {
				s.publish(ev.key[len(s.Namespace):], ev.event, touched)
			}
			batch[i] = keyEvent{}
		}
		for c := range touched {
			c.out.kick(c)
			delete(touched, c)
		}
		if d := p.dropped.Load(); d != reported && time.Since(lastLog) >= 10*time.Second {
			s.Logger.Warn("keyspace events or messages dropped: the publisher's queue was full (too many events, or subscribers with many patterns)",
				"dropped", d-reported, "dropped_total", d, "queue", publishQueue)
			reported, lastLog = d, time.Now()
		}
	}
}

// publish delivers the notifications of one key event (the key without
// the namespace), the keyspace message to every subscriber before the
// keyevent one, as Redis does. Channel names are built only when a route
// can match.
func (s *Server) publish(key, event string, touched map[*client]struct{}) {
	h := &s.hub
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, kind := range [2]struct{ prefix, name, payload string }{
		{keyspacePrefix, key, event},
		{keyeventPrefix, event, key},
	} {
		if !s.notifies(event, kind.prefix) { // CONFIG SET notify-keyspace-events
			continue
		}
		channel := ""
		if len(h.channels) > 0 {
			channel = kind.prefix + kind.name
			for c := range h.channels[channel] {
				s.deliver(c, "", channel, kind.payload, touched)
			}
		}
		for i := range h.patterns {
			r := &h.patterns[i]
			if !hasPrefixOf2(kind.prefix, kind.name, r.lit) {
				continue
			}
			if channel == "" {
				channel = kind.prefix + kind.name
			}
			if globMatch(r.pattern, channel) {
				s.deliver(r.c, r.pattern, channel, kind.payload, touched)
			}
		}
	}
}

// deliver queues one message for c, or disconnects c when it has more
// waiting than its bounds allow: a slow subscriber never slows the others.
func (s *Server) deliver(c *client, pattern, channel, payload string, touched map[*client]struct{}) {
	if c.evicted.Load() {
		return
	}
	if !c.out.push(c, appendMessage(nil, c.push3.Load(), pattern, channel, payload)) {
		s.evict(c, reasonSubscriber, fmt.Sprintf("a subscriber does not keep up (more than %d messages or %d bytes waiting)",
			s.SubscriberBuffer, s.MaxClientOutput))
		return
	}
	touched[c] = struct{}{}
}

// appendMessage encodes a message or pmessage push.
func appendMessage(b []byte, resp3 bool, pattern, channel, payload string) []byte {
	kind := byte('*')
	if resp3 {
		kind = '>'
	}
	if pattern != "" {
		b = appendNumber(b, kind, 4)
		b = appendBulkString(b, "pmessage")
		b = appendBulkString(b, pattern)
	} else {
		b = appendNumber(b, kind, 3)
		b = appendBulkString(b, "message")
	}
	b = appendBulkString(b, channel)
	return appendBulkString(b, payload)
}

func appendBulkString(b []byte, s string) []byte {
	return append(append(appendNumber(b, '$', int64(len(s))), s...), '\r', '\n')
}

// hasPrefixOf2 reports whether a+b starts with p, without building a+b.
func hasPrefixOf2(a, b, p string) bool {
	if len(p) <= len(a) {
		return strings.HasPrefix(a, p)
	}
	return strings.HasPrefix(p, a) && strings.HasPrefix(b, p[len(a):])
}

// subscribe adds channels or patterns for c. A command that would take c
// past its bounds subscribes nothing and answers an error.
func (c *client) subscribe(names [][]byte, pattern bool) {
	for _, n := range names {
		if len(n) > maxChannelName {
			c.errorReply(fmt.Sprintf("ERR channel or pattern too long: at most %d bytes", maxChannelName))
			return
		}
	}
	c.holdOutput() // no message before the confirmation
	h := &c.s.hub
	counts := make([]int, len(names))
	h.mu.Lock()
	sub := c.sub
	if sub == nil {
		sub = &subscription{channels: map[string]struct{}{}, patterns: map[string]int{}}
	}
	if err := sub.room(names, pattern); err != "" {
		h.mu.Unlock()
		c.errorReply(err)
		return
	}
	if c.sub == nil {
		c.sub = sub
	}
	if sub.count() == 0 {
		h.n.Add(1)
	}
	added := int64(0)
	for i, n := range names {
		name := string(n)
		if pattern {
			if _, ok := sub.patterns[name]; !ok {
				lit := name
				if j := strings.IndexAny(name, "*?[\\"); j >= 0 {
					lit = name[:j]
				}
				sub.patterns[name] = len(h.patterns)
				h.patterns = append(h.patterns, patternRoute{c: c, pattern: name, lit: lit})
				added += int64(len(name)) + subscriptionCost
			}
		} else if _, ok := sub.channels[name]; !ok {
			sub.channels[name] = struct{}{}
			if h.channels == nil {
				h.channels = map[string]map[*client]struct{}{}
			}
			if h.channels[name] == nil {
				h.channels[name] = map[*client]struct{}{}
			}
			h.channels[name][c] = struct{}{}
			added += int64(len(name)) + subscriptionCost
		}
		counts[i] = sub.count()
	}
	sub.bytes += added
	h.mu.Unlock()
	c.account(added)
	kind := "subscribe"
	if pattern {
		kind = "psubscribe"
	}
	for i, n := range names {
		c.pushHeader(3)
		c.bulkString(kind)
		c.bulk(n)
		c.integer(int64(counts[i]))
	}
}

// room returns an error when names would take sub past its bounds.
func (sub *subscription) room(names [][]byte, pattern bool) string {
	have, limit, what := len(sub.channels), MaxChannelsPerClient, "channels"
	if pattern {
		have, limit, what = len(sub.patterns), MaxPatternsPerClient, "patterns"
	}
	if have+len(names) <= limit {
		return ""
	}
	fresh := 0
	for _, n := range names {
		_, ok := sub.channels[string(n)]
		if pattern {
			_, ok = sub.patterns[string(n)]
		}
		if !ok {
			fresh++
		}
	}
	if have+fresh <= limit {
		return ""
	}
	return fmt.Sprintf("ERR too many %s subscribed: at most %d per client", what, limit)
}

// unsubscribe removes channels or patterns (all of them when names is empty).
func (c *client) unsubscribe(names [][]byte, pattern bool) {
	h := &c.s.hub
	kind := "unsubscribe"
	if pattern {
		kind = "punsubscribe"
	}
	h.mu.Lock()
	sub := c.sub
	if len(names) == 0 && sub != nil {
		if pattern {
			for n := range sub.patterns {
				names = append(names, []byte(n))
			}
		} else {
			for n := range sub.channels {
				names = append(names, []byte(n))
			}
		}
		// In name order, not the map's random one: the same session gets
		// the same confirmations (Redis confirms patterns in subscription
		// order, channels in its dictionary's).
		slices.SortFunc(names, bytes.Compare)
	}
	counts := make([]int, len(names))
	freed := int64(0)
	for i, n := range names {
		if sub != nil {
			freed += h.remove(c, sub, string(n), pattern)
			counts[i] = sub.count()
		}
	}
	if sub != nil {
		sub.bytes -= freed
	}
	h.mu.Unlock()
	c.account(-freed)
	// Messages delivered while the batch held the output were published
	// before the unsubscription: they go before its confirmation, as in
	// Redis. After it none can come for these channels, and a RESP2 client
	// told it has no subscription left reads the next array as a reply.
	c.wbuf = append(c.wbuf, c.out.takeSide(c)...)
	if len(names) == 0 {
		c.pushHeader(3)
		c.bulkString(kind)
		c.null()
		c.integer(0)
		return
	}
	for i, n := range names {
		c.pushHeader(3)
		c.bulkString(kind)
		c.bulk(n)
		c.integer(int64(counts[i]))
	}
}

// remove drops one channel or pattern of c and returns its accounted
// bytes; h.mu is held for writing.
func (h *hub) remove(c *client, sub *subscription, name string, pattern bool) int64 {
	had := sub.count() > 0
	if pattern {
		i, ok := sub.patterns[name]
		if !ok {
			return 0
		}
		delete(sub.patterns, name)
		last := len(h.patterns) - 1
		if i != last {
			moved := h.patterns[last]
			h.patterns[i] = moved
			moved.c.sub.patterns[moved.pattern] = i
		}
		h.patterns[last] = patternRoute{}
		h.patterns = h.patterns[:last]
	} else {
		if _, ok := sub.channels[name]; !ok {
			return 0
		}
		delete(sub.channels, name)
		if subs := h.channels[name]; subs != nil {
			delete(subs, c)
			if len(subs) == 0 {
				delete(h.channels, name)
			}
		}
	}
	if had && sub.count() == 0 {
		h.n.Add(-1)
	}
	return int64(len(name)) + subscriptionCost
}

// leave drops c's subscriptions when it disconnects.
func (c *client) leave() {
	if c.sub == nil {
		return
	}
	h := &c.s.hub
	h.mu.Lock()
	sub := c.sub
	for n := range sub.channels {
		h.remove(c, sub, n, false)
	}
	for n := range sub.patterns {
		h.remove(c, sub, n, true)
	}
	freed := sub.bytes
	sub.bytes = 0
	h.mu.Unlock()
	c.account(-freed)
}

// subscribed reports whether c is in subscribe mode (any subscription).
func (c *client) subscribed() bool {
	if c.sub == nil {
		return false
	}
	h := &c.s.hub
	h.mu.RLock()
	defer h.mu.RUnlock()
	return c.sub.count() > 0
}
