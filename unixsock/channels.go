package unixsock

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"pgmirror/pgstore"
)

// Application pub/sub: PUBLISH sends a message through Postgres
// (pgmirror_publish_channel, migrations/0012), which carries it on the
// notification channel every sidecar LISTENs on, signed like every
// payload; each sidecar's mirror hands it back as a KindMessage event, and
// the publisher delivers it to the subscribers here (pubsub.go), exactly
// as a message published from SQL. So a message reaches the subscribers
// of every sidecar, this one's included, after its commit, in commit
// order; one connection's messages are committed one after the other, in
// the order it sent them. PUBLISH answers the subscribers of this sidecar
// only, as Redis Cluster answers for its node. Under --namespace the
// channel is prefixed like a key, so sidecars of other namespaces never
// see it.

// ChannelPublisher sends application messages through Postgres;
// *pgstore.Store implements it.
type ChannelPublisher interface {
	// PublishChannel returns once the message is committed: nil, or an
	// error wrapping pgstore.ErrMessageTooLarge, or why it failed.
	PublishChannel(ctx context.Context, channel string, message []byte) error
}

var _ ChannelPublisher = (*pgstore.Store)(nil)

func registerChannels(t *commandTable) {
	// As Redis 7.0: PUBLISH may run in MULTI, in scripts and while
	// loading; PUBSUB, like the other pub/sub commands, is refused in
	// MULTI. In a block or a script that runs in a Postgres transaction
	// the message is sent when it commits, after its writes.
	t.handle("publish", 3, noKeys, flagPostgres|flagScript|flagMulti, cmdPublish)
	t.handle("pubsub", -2, noKeys, flagScript, cmdPubsub)
}

// cmdPublish sends a message and answers the subscribers it has on this
// sidecar.
func cmdPublish(c *client, a [][]byte) {
	if c.s.Channels == nil {
		c.errorReply("ERR PUBLISH needs pgmirror's Postgres store (Server.Channels)")
		return
	}
	channel, message := a[1], a[2]
	if !utf8.Valid(channel) || strings.IndexByte(string(channel), 0) >= 0 {
		c.errorReply("ERR invalid channel: channels PUBLISH sends through Postgres must be valid UTF-8 without NUL bytes")
		return
	}
	room := pgstore.MaxMessageBytes - len(c.s.Namespace)
	if n := len(channel) + len(message); n > room {
		c.errorReply(fmt.Sprintf("ERR message too large: channel and message take %d bytes, at most %d "+
			"(a message travels in one Postgres notification)", n, room))
		return
	}
	if c.blockPublish(c.s.Namespace+string(channel), message, func() int { return c.s.hub.receivers(string(channel)) }) {
		return // in a block or a script that writes: sent at its commit, after its writes (exec.go)
	}
	ctx, cancel := context.WithTimeout(c.ctx(), writeTimeout)
	defer cancel()
	if err := c.s.Channels.PublishChannel(ctx, c.s.Namespace+string(channel), message); err != nil {
		if errors.Is(err, pgstore.ErrMessageTooLarge) {
			c.errorReply("ERR " + err.Error())
		} else {
			c.errorReply("ERR pgmirror: " + err.Error())
		}
		return
	}
	c.integer(int64(c.s.hub.receivers(string(channel))))
}

// receivers counts the deliveries a message on channel gets here: each
// client subscribed to it, and each pattern of a client that matches it
// (a client subscribed both ways counts twice, as in Redis).
func (h *hub) receivers(channel string) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := len(h.channels[channel])
	for i := range h.patterns {
		r := &h.patterns[i]
		if strings.HasPrefix(channel, r.lit) && globMatch(r.pattern, channel) {
			n++
		}
	}
	return n
}

// publishMessage delivers an application message (its channel without the
// namespace) to the channel's subscribers, then to the matching patterns',
// as Redis does; the publisher calls it.
func (s *Server) publishMessage(channel, payload string, touched map[*client]struct{}) {
	h := &s.hub
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.channels[channel] {
		s.deliver(c, "", channel, payload, touched)
	}
	for i := range h.patterns {
		r := &h.patterns[i]
		if strings.HasPrefix(channel, r.lit) && globMatch(r.pattern, channel) {
			s.deliver(r.c, r.pattern, channel, payload, touched)
		}
	}
}

const pubsubHelp = `PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:
CHANNELS [<pattern>]
    Return the currently active channels matching a <pattern> (default: '*').
NUMPAT
    Return number of subscriptions to patterns.
NUMSUB [<channel> ...]
    Return the number of subscribers for the specified channels, excluding
    pattern subscriptions(default: no channels).
SHARDCHANNELS [<pattern>]
    Return the currently active shard level channels matching a <pattern> (default: '*').
SHARDNUMSUB [<shardchannel> ...]
    Return the number of subscribers for the specified shard level channel(s)
HELP
    Prints this help.`

// cmdPubsub answers PUBSUB about this sidecar's subscribers, as Redis
// Cluster answers about its node's. pgmirror has no sharded pub/sub: its
// SHARD subcommands find nothing.
func cmdPubsub(c *client, a [][]byte) {
	sub := lower(a[1])
	h := &c.s.hub
	switch {
	case sub == "help" && len(a) == 2:
		lines := strings.Split(pubsubHelp, "\n")
		c.array(len(lines))
		for _, l := range lines {
			c.status(l)
		}
	case (sub == "channels" || sub == "shardchannels") && len(a) <= 3:
		var names []string
		if sub == "channels" {
			names = h.activeChannels(a[2:])
		}
		c.array(len(names))
		for _, n := range names {
			c.bulkString(n)
		}
	case sub == "numsub" || sub == "shardnumsub":
		c.array(2 * (len(a) - 2))
		for _, ch := range a[2:] {
			c.bulk(ch)
			n := 0
			if sub == "numsub" {
				h.mu.RLock()
				n = len(h.channels[string(ch)])
				h.mu.RUnlock()
			}
			c.integer(int64(n))
		}
	case sub == "numpat" && len(a) == 2:
		c.integer(int64(h.uniquePatterns()))
	case sub == "channels", sub == "shardchannels":
		c.errorReply(fmt.Sprintf("ERR unknown subcommand or wrong number of arguments for '%s'. Try PUBSUB HELP.", clip(a[1])))
	case sub == "numpat", sub == "help":
		c.errorReply(fmt.Sprintf("ERR wrong number of arguments for 'pubsub|%s' command", sub))
	default:
		c.errorReply(fmt.Sprintf("ERR unknown subcommand '%s'. Try PUBSUB HELP.", clip(a[1])))
	}
}

// activeChannels returns the channels with at least one subscriber that
// match the pattern in match (every one when it is empty), sorted.
func (h *hub) activeChannels(match [][]byte) []string {
	h.mu.RLock()
	names := make([]string, 0, len(h.channels))
	for n := range h.channels {
		if len(match) == 0 || globMatch(string(match[0]), n) {
			names = append(names, n)
		}
	}
	h.mu.RUnlock()
	sort.Strings(names)
	return names
}

// uniquePatterns counts the distinct patterns subscribed (Redis 7's NUMPAT).
func (h *hub) uniquePatterns() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	seen := make(map[string]struct{}, len(h.patterns))
	for i := range h.patterns {
		seen[h.patterns[i].pattern] = struct{}{}
	}
	return len(seen)
}

// channelCount counts the channels with a subscriber (INFO's pubsub_channels).
func (h *hub) channelCount() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.channels)
}
