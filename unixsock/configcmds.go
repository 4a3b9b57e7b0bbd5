package unixsock

import (
	"fmt"
	"strconv"
	"strings"
)

// CONFIG GET answers the parameters clients and tools probe; CONFIG SET
// changes notify-keyspace-events, which selects the keyspace notifications
// this server publishes, with Redis's flags.

// Keyspace notification classes, as Redis's notify-keyspace-events flags.
const (
	notifyGeneric  uint32 = 1 << iota // g: del, expire, rename, ...
	notifyString                      // $
	notifyList                        // l
	notifySet                         // s
	notifyHash                        // h
	notifyZset                        // z
	notifyExpired                     // x
	notifyEvicted                     // e
	notifyStream                      // t
	notifyModule                      // d
	notifyNew                         // n
	notifyKeyspace                    // K
	notifyKeyevent                    // E
	notifyKeyMiss                     // m
	// notifyConfigured marks a value set by CONFIG SET (0: the default).
	notifyConfigured uint32 = 1 << 31

	notifyAll = notifyGeneric | notifyString | notifyList | notifySet | notifyHash | notifyZset |
		notifyExpired | notifyEvicted | notifyStream | notifyModule
	// notifyDefault is what pgmirror publishes unless told otherwise:
	// every event it has (set, del, expire, expired) on both channels.
	notifyDefault = notifyGeneric | notifyString | notifyExpired | notifyKeyspace | notifyKeyevent
)

// notifyClasses are the flag characters, in the order Redis prints them.
var notifyClasses = []struct {
	c    byte
	flag uint32
}{
	{'g', notifyGeneric}, {'$', notifyString}, {'l', notifyList}, {'s', notifySet}, {'h', notifyHash},
	{'z', notifyZset}, {'x', notifyExpired}, {'e', notifyEvicted}, {'t', notifyStream}, {'d', notifyModule},
	{'n', notifyNew},
}

// parseNotify reads a notify-keyspace-events value; ok is false for a
// character that is not a flag.
func parseNotify(v string) (uint32, bool) {
	var f uint32
	for i := 0; i < len(v); i++ {
		switch ch := v[i]; ch {
		case 'A':
			f |= notifyAll
		case 'K':
			f |= notifyKeyspace
		case 'E':
			f |= notifyKeyevent
		case 'm':
			f |= notifyKeyMiss
		default:
			found := false
			for _, cl := range notifyClasses {
				if cl.c == ch {
					f |= cl.flag
					found = true
				}
			}
			if !found {
				return 0, false
			}
		}
	}
	return f, true
}

// formatNotify prints flags as Redis does.
func formatNotify(f uint32) string {
	var b strings.Builder
	if f&notifyAll == notifyAll {
		b.WriteByte('A')
	} else {
		for _, cl := range notifyClasses {
			if f&cl.flag != 0 {
				b.WriteByte(cl.c)
			}
		}
	}
	for _, x := range []struct {
		c    byte
		flag uint32
	}{{'K', notifyKeyspace}, {'E', notifyKeyevent}, {'m', notifyKeyMiss}} {
		if f&x.flag != 0 {
			b.WriteByte(x.c)
		}
	}
	return b.String()
}

// notifyFlags returns the server's notify-keyspace-events flags.
func (s *Server) notifyFlags() uint32 {
	f := s.notify.Load()
	if f == 0 {
		return notifyDefault
	}
	return f &^ notifyConfigured
}

// notifies reports whether the server publishes a mirror event on the
// channels of prefix (keyspace or keyevent).
func (s *Server) notifies(event, prefix string) bool {
	f := s.notifyFlags()
	class := notifyGeneric // del, expire
	switch event {
	case "set":
		class = notifyString
	case "expired":
		class = notifyExpired
	}
	channel := notifyKeyspace
	if prefix == keyeventPrefix {
		channel = notifyKeyevent
	}
	return f&class != 0 && f&channel != 0
}

// configParams are the parameters CONFIG GET answers.
func (s *Server) configParams() map[string]string {
	return map[string]string{
		"save": "", "appendonly": "no", "databases": "1",
		"maxclients":             strconv.Itoa(s.MaxClients),
		"proto-max-bulk-len":     strconv.FormatInt(s.MaxValueSize, 10),
		"maxmemory":              "0", // keys are never evicted (values may be, and are fetched again)
		"maxmemory-policy":       "noeviction",
		"notify-keyspace-events": formatNotify(s.notifyFlags()),
	}
}

func cmdConfig(c *client, a [][]byte) {
	switch lower(a[1]) {
	case "get":
		configGet(c, a)
	case "set":
		configSet(c, a)
	case "resetstat", "help":
		sub := lower(a[1])
		switch {
		case len(a) != 2:
			wrongSubArity(c, "config", sub) // introspect.go
		case sub == "help":
			helpReply(c, configHelp)
		default:
			c.ok()
		}
	default:
		c.errorReply(fmt.Sprintf("ERR unknown subcommand '%s'. Try CONFIG HELP.", clip(a[1])))
	}
}

// configGet answers CONFIG GET pattern ...: the known parameters that
// match; others are unknown (an empty reply).
func configGet(c *client, a [][]byte) {
	if len(a) < 3 {
		c.errorReply("ERR wrong number of arguments for 'config|get' command")
		return
	}
	known := c.s.configParams()
	var pairs [][2]string
	for _, p := range a[2:] {
		pat := strings.ToLower(string(p))
		for name, v := range known {
			if globMatch(pat, name) {
				pairs = append(pairs, [2]string{name, v})
			}
		}
	}
	c.mapHeader(len(pairs))
	for _, p := range pairs {
		c.bulkString(p[0])
		c.bulkString(p[1])
	}
}

// configSet answers CONFIG SET name value ...: only
// notify-keyspace-events changes; the other parameters pgmirror reports
// come from its flags. All pairs are checked before any applies.
func configSet(c *client, a [][]byte) {
	if len(a) < 4 || len(a)%2 != 0 {
		c.errorReply("ERR wrong number of arguments for 'config|set' command")
		return
	}
	known := c.s.configParams()
	seen := map[string]bool{}
	var notify uint32
	for i := 2; i < len(a); i += 2 {
		name := lower(a[i])
		if _, ok := known[name]; !ok {
			c.errorReply(fmt.Sprintf("ERR Unknown option or number of arguments for CONFIG SET - '%s'", clip(a[i])))
			return
		}
		failed := func(why string) {
			c.errorReply(fmt.Sprintf("ERR CONFIG SET failed (possibly related to argument '%s') - %s", name, why))
		}
		if seen[name] {
			failed("duplicate parameter")
			return
		}
		seen[name] = true
		if name != "notify-keyspace-events" {
			failed("pgmirror does not change it at run time (see its command-line flags)")
			return
		}
		f, ok := parseNotify(string(a[i+1]))
		if !ok {
			failed("Invalid event class character. Use 'Ag$lshzxeKEtmdn'.")
			return
		}
		notify = f | notifyConfigured
	}
	c.s.notify.Store(notify)
	c.ok()
}
