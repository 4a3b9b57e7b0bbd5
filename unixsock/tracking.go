package unixsock

// Client-side caching (issue 18): CLIENT TRACKING, CACHING, GETREDIR and
// TRACKINGINFO as Redis 7 answers them, and CLUSTER, which clients probe
// before they enable it. The table of tracked keys and the invalidations
// it sends are in tracktable.go.
//
// A tracking client's reads register their keys (trackKeys) before the
// command reads the mirror, so a change applied after the read is always
// invalidated; the invalidations come from the mirror's events and go
// through the client's outbox, which a tracking client holds while it
// answers a batch, so none overtakes a reply that carries an older value.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// trackOpts is one client's tracking mode, as CLIENT TRACKING ON set it.
type trackOpts struct {
	bcast, optin, optout, noloop bool
	redirect                     int64    // 0: pushes go to the client itself
	prefixes                     []string // BCAST: the client's view of keys
}

// trackState is a connection's tracking state (command loop only).
type trackState struct {
	tc      *trackingClient // nil while tracking is off
	caching bool            // CLIENT CACHING YES (OPTIN) or NO (OPTOUT) given
	clear   bool            // caching ends before the next command
}

// registerTracking adds CLUSTER; CLIENT's tracking subcommands are
// answered by cmdClient through clientTracking.
func registerTracking(t *commandTable) {
	// Redis's CLUSTER subcommands are "stale" but not "loading", and run in
	// MULTI and scripts.
	t.handle("cluster", -2, noKeys, flagMulti|flagScript|flagMirror, cmdCluster)
}

// cmdCluster answers every CLUSTER subcommand as a Redis without cluster
// support does: rueidis and other cluster-aware clients fall back to a
// single node on exactly this error.
func cmdCluster(c *client, a [][]byte) {
	sub := lower(a[1])
	switch sub {
	case "help", "info", "links", "myid", "myshardid", "nodes", "shards", "slots":
		if len(a) != 2 {
			c.errorReply(fmt.Sprintf("ERR wrong number of arguments for 'cluster|%s' command", sub))
			return
		}
	}
	switch sub {
	case "addslots", "addslotsrange", "bumpepoch", "count-failure-reports", "countkeysinslot", "delslots",
		"delslotsrange", "failover", "flushslots", "forget", "getkeysinslot", "help", "info", "keyslot", "links",
		"meet", "myid", "myshardid", "nodes", "replicas", "replicate", "reset", "saveconfig", "set-config-epoch",
		"setslot", "shards", "slaves", "slots":
		c.errorReply("ERR This instance has cluster support disabled")
	default:
		c.errorReply(fmt.Sprintf("ERR unknown subcommand '%s'. Try CLUSTER HELP.", clip(a[1])))
	}
}

// clientTracking answers CLIENT TRACKING, CACHING, GETREDIR and
// TRACKINGINFO; it reports false for other subcommands.
func clientTracking(c *client, sub string, a [][]byte) bool {
	arity := map[string]int{"tracking": -3, "caching": 3, "getredir": 2, "trackinginfo": 2}[sub]
	switch {
	case arity == 0:
		return false
	case arity > 0 && len(a) != arity || arity < 0 && len(a) < -arity:
		c.errorReply(fmt.Sprintf("ERR wrong number of arguments for 'client|%s' command", sub))
	case sub == "tracking":
		c.clientTrackingOnOff(a)
	case sub == "caching":
		c.clientCaching(a[2])
	case sub == "getredir":
		if tc := c.trk.tc; tc != nil {
			c.integer(tc.opts.redirect)
		} else {
			c.integer(-1)
		}
	default:
		c.trackingInfo()
	}
	return true
}

// parseTrackOpts parses CLIENT TRACKING's options; ok is false after an
// error reply.
func (c *client) parseTrackOpts(a [][]byte) (o trackOpts, ok bool) {
	for j := 3; j < len(a); j++ {
		more := len(a) - 1 - j
		switch opt := lower(a[j]); {
		case opt == "redirect" && more > 0:
			j++
			if o.redirect != 0 {
				c.errorReply("ERR A client can only redirect to a single other client")
				return o, false
			}
			id, err := strconv.ParseInt(string(a[j]), 10, 64)
			if err != nil {
				c.errorReply(errNotInteger)
				return o, false
			}
			if !c.s.trk.addTarget(c.s, id) {
				c.errorReply("ERR The client ID you want redirect to does not exist")
				return o, false
			}
			o.redirect = id
		case opt == "bcast":
			o.bcast = true
		case opt == "optin":
			o.optin = true
		case opt == "optout":
			o.optout = true
		case opt == "noloop":
			o.noloop = true
		case opt == "prefix" && more > 0:
			j++
			o.prefixes = append(o.prefixes, string(a[j]))
		default:
			c.errorReply(errSyntax)
			return o, false
		}
	}
	return o, true
}

// clientTrackingOnOff answers CLIENT TRACKING ON|OFF [options].
func (c *client) clientTrackingOnOff(a [][]byte) {
	o, ok := c.parseTrackOpts(a)
	if !ok {
		return
	}
	switch lower(a[2]) {
	case "on":
		if msg := c.checkTrackOpts(o); msg != "" {
			c.errorReply(msg)
			return
		}
		c.enableTracking(o)
	case "off":
		c.disableTracking()
	default:
		c.errorReply(errSyntax)
		return
	}
	c.ok()
}

// checkTrackOpts returns Redis's error for options that conflict with
// each other or with the client's current mode, or "".
func (c *client) checkTrackOpts(o trackOpts) string {
	old := c.trk.tc
	switch {
	case !o.bcast && len(o.prefixes) > 0:
		return "ERR PREFIX option requires BCAST mode to be enabled"
	case old != nil && old.opts.bcast != o.bcast:
		return "ERR You can't switch BCAST mode on/off before disabling tracking for this client, " +
			"and then re-enabling it with a different mode."
	case o.bcast && (o.optin || o.optout):
		return "ERR OPTIN and OPTOUT are not compatible with BCAST"
	case o.optin && o.optout:
		return "ERR You can't specify both OPTIN mode and OPTOUT mode"
	case old != nil && (o.optin && old.opts.optout || o.optout && old.opts.optin):
		return "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, " +
			"and then re-enabling it with a different mode."
	}
	if o.bcast {
		var have []string
		if old != nil {
			have = old.opts.prefixes
		}
		return prefixCollision(have, o.prefixes)
	}
	return ""
}

// prefixCollision returns Redis's error when a new prefix overlaps one the
// client has (the same one included) or another new one.
func prefixCollision(have, add []string) string {
	overlap := func(a, b string) bool { return strings.HasPrefix(a, b) || strings.HasPrefix(b, a) }
	for i, p := range add {
		for _, h := range have {
			if overlap(p, h) {
				return fmt.Sprintf("ERR Prefix '%s' overlaps with an existing prefix '%s'. "+
					"Prefixes for a single client must not overlap.", p, h)
			}
		}
		for _, q := range add[i+1:] {
			if overlap(p, q) {
				return fmt.Sprintf("ERR Prefix '%s' overlaps with another provided prefix '%s'. "+
					"Prefixes for a single client must not overlap.", p, q)
			}
		}
	}
	return ""
}

// enableTracking turns tracking on, or changes its options; prefixes add
// to the client's, as in Redis.
func (c *client) enableTracking(o trackOpts) {
	if o.bcast && len(o.prefixes) == 0 {
		o.prefixes = []string{""}
	}
	if old := c.trk.tc; old != nil && o.bcast {
		for _, p := range old.opts.prefixes {
			if !slices.Contains(o.prefixes, p) {
				o.prefixes = append(o.prefixes, p)
			}
		}
	}
	slices.Sort(o.prefixes) // as Redis lists them (a radix tree)
	c.trk.tc = c.s.trk.enable(c, o)
	c.holdOutput() // pushes from now on wait for the batch's replies
}

// disableTracking turns tracking off; its keys are forgotten lazily.
func (c *client) disableTracking() {
	if c.trk.tc != nil {
		c.s.trk.disable(c)
	}
	c.trk = trackState{}
}

// clientCaching answers CLIENT CACHING YES|NO.
func (c *client) clientCaching(arg []byte) {
	tc := c.trk.tc
	if tc == nil {
		c.errorReply("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled")
		return
	}
	switch lower(arg) {
	case "yes":
		if !tc.opts.optin {
			c.errorReply("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")
			return
		}
	case "no":
		if !tc.opts.optout {
			c.errorReply("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
			return
		}
	default:
		c.errorReply(errSyntax)
		return
	}
	c.trk.caching = true
	c.ok()
}

// trackingInfo answers CLIENT TRACKINGINFO.
func (c *client) trackingInfo() {
	tc := c.trk.tc
	flags := []string{"off"}
	redirect := int64(-1)
	var prefixes []string
	if tc != nil {
		o := tc.opts
		flags = []string{"on"}
		for _, f := range []struct {
			on   bool
			name string
		}{{o.bcast, "bcast"}, {o.optin, "optin"}, {o.optin && c.trk.caching, "caching-yes"},
			{o.optout, "optout"}, {o.optout && c.trk.caching, "caching-no"}, {o.noloop, "noloop"},
			{c.s.trk.broken(tc), "broken_redirect"}} {
			if f.on {
				flags = append(flags, f.name)
			}
		}
		redirect = o.redirect
		if o.bcast {
			prefixes = o.prefixes
		}
	}
	c.mapHeader(3)
	c.bulkString("flags")
	c.setHeader(len(flags))
	for _, f := range flags {
		c.bulkString(f)
	}
	c.bulkString("redirect")
	c.integer(redirect)
	c.bulkString("prefixes")
	c.array(len(prefixes))
	for _, p := range prefixes {
		c.bulkString(p)
	}
}

// setHeader starts a set of n elements: a RESP3 set, or an array in RESP2.
func (c *client) setHeader(n int) {
	if c.proto == 3 {
		c.wbuf = appendNumber(c.wbuf, '~', int64(n))
		return
	}
	c.array(n)
}

// beforeCommand runs for a tracking client before each command it
// dispatches: CLIENT CACHING's flag lasts for the next command (a whole
// MULTI block: MULTI and the queued commands keep it, EXEC uses it), and a
// read registers its keys.
func (c *client) beforeCommand(cmd *command, args [][]byte) {
	c.beforeCommandTry(cmd, args, false)
}

// beforeCommandNow is beforeCommand for the event loop: false, with the
// keys not registered, when the tracking table's lock is taken.
func (c *client) beforeCommandNow(cmd *command, args [][]byte) bool {
	return c.beforeCommandTry(cmd, args, true)
}

func (c *client) beforeCommandTry(cmd *command, args [][]byte, try bool) bool {
	if c.trk.clear {
		c.trk.caching, c.trk.clear = false, false
	}
	if cmd.name != "client" && cmd.name != "multi" {
		c.trk.clear = true
	}
	return c.trackKeysTry(cmd, args, try)
}

// trackKeys registers the keys a read command names, when the client's
// mode tracks this command (OPTIN needs CLIENT CACHING YES, OPTOUT skips
// after CLIENT CACHING NO; BCAST tracks no keys). Keys pgmirror refuses are
// skipped: their command answers the error.
func (c *client) trackKeys(cmd *command, args [][]byte) {
	c.trackKeysTry(cmd, args, false)
}

// trackKeysTry is trackKeys; with try, it registers nothing and returns
// false when the tracking table's lock is taken.
func (c *client) trackKeysTry(cmd *command, args [][]byte, try bool) bool {
	tc := c.trk.tc
	if tc == nil || tc.opts.bcast || !cmd.has(flagReadonly) || cmd.keys.first == 0 {
		return true
	}
	if tc.opts.optin && !c.trk.caching || tc.opts.optout && c.trk.caching {
		return true
	}
	keys := c.cmdKeys(cmd, args) // exec.go
	return c.s.trk.remember(c.s, tc, keys, try)
}
