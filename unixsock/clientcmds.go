package unixsock

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// clientInfo is what CLIENT LIST shows of a connection beyond its id and
// name; other connections' commands read it.
type clientInfo struct {
	created time.Time                 // set before the connection is served
	active  atomic.Int64              // unix nanoseconds of the last batch read
	last    atomic.Pointer[command]   // the last command run
	noEvict atomic.Bool               // CLIENT NO-EVICT: not disconnected by --max-client-buffers
	noTouch atomic.Bool               // CLIENT NO-TOUCH: reads are not accesses (ctx)
	lib     atomic.Pointer[[2]string] // CLIENT SETINFO: library name and version
	authed  bool                      // AUTH or HELLO AUTH succeeded (command loop only)
}

func cmdClient(c *client, a [][]byte) {
	switch sub := lower(a[1]); sub {
	case "setname":
		clientSetName(c, a)
	case "getname":
		c.mu.Lock()
		name := c.name
		c.mu.Unlock()
		if name == "" {
			c.null()
			return
		}
		c.bulkString(name)
	case "id":
		c.integer(c.id)
	case "setinfo":
		clientSetInfo(c, a)
	case "info":
		c.verbatim(c.describe())
	case "list":
		clientList(c, a)
	case "kill":
		clientKill(c, a)
	case "help":
		if len(a) != 2 {
			wrongSubArity(c, "client", sub)
			return
		}
		helpReply(c, clientHelp) // introspect.go
	case "no-evict", "no-touch":
		if len(a) != 3 {
			c.errorReply(fmt.Sprintf("ERR wrong number of arguments for 'client|%s' command", sub))
			return
		}
		flag := &c.info.noEvict
		if sub == "no-touch" {
			flag = &c.info.noTouch
		}
		switch lower(a[2]) {
		case "on":
			flag.Store(true)
		case "off":
			flag.Store(false)
		default:
			c.errorReply(errSyntax)
			return
		}
		c.ok()
	default:
		if !clientTracking(c, sub, a) { // tracking.go
			c.errorReply(fmt.Sprintf("ERR unknown subcommand '%s'. Try CLIENT HELP.", clip(a[1])))
		}
	}
}

func clientSetName(c *client, a [][]byte) {
	if len(a) != 3 {
		c.errorReply("ERR wrong number of arguments for 'client|setname' command")
		return
	}
	if strings.ContainsAny(string(a[2]), " \n") {
		c.errorReply("ERR Client names cannot contain spaces, newlines or special characters.")
		return
	}
	c.mu.Lock()
	c.name = string(a[2])
	c.mu.Unlock()
	c.ok()
}

// clientSetInfo answers CLIENT SETINFO LIB-NAME|LIB-VER value (Redis 7.2).
func clientSetInfo(c *client, a [][]byte) {
	if len(a) != 4 {
		c.errorReply("ERR wrong number of arguments for 'client|setinfo' command")
		return
	}
	attr, v := lower(a[2]), string(a[3])
	if attr != "lib-name" && attr != "lib-ver" {
		c.errorReply(fmt.Sprintf("ERR Unrecognized option '%s'", clip(a[2])))
		return
	}
	for _, r := range v {
		if r < '!' || r > '~' {
			c.errorReply(fmt.Sprintf("ERR %s cannot contain spaces, newlines or special characters.", attr))
			return
		}
	}
	var lib [2]string
	if old := c.info.lib.Load(); old != nil {
		lib = *old
	}
	if attr == "lib-name" {
		lib[0] = v
	} else {
		lib[1] = v
	}
	c.info.lib.Store(&lib)
	c.ok()
}

// describe is c's line of CLIENT LIST, as Redis 7.2 words it (a Unix
// socket client: address "path:0", flag U). Buffers Redis breaks down
// are reported together as tot-mem.
func (c *client) describe() string {
	c.mu.Lock()
	name := c.name
	c.mu.Unlock()
	now := time.Now()
	flags := ""
	sub, psub := c.subscriptions()
	if sub+psub > 0 {
		flags += "P"
	}
	flags += "U"
	if c.info.noEvict.Load() {
		flags += "e"
	}
	if c.info.noTouch.Load() {
		flags += "T"
	}
	tflags, redir := c.s.trk.listed(c.id)
	flags += tflags
	cmd := "NULL"
	if last := c.info.last.Load(); last != nil {
		cmd = last.name
	}
	idle := int64(0)
	if at := c.info.active.Load(); at != 0 {
		idle = int64(now.Sub(time.Unix(0, at)).Seconds())
	}
	resp := 2
	if c.push3.Load() {
		resp = 3
	}
	var lib [2]string
	if l := c.info.lib.Load(); l != nil {
		lib = *l
	}
	addr := c.s.Socket + ":0"
	return fmt.Sprintf("id=%d addr=%s laddr=%s fd=%d name=%s age=%d idle=%d flags=%s db=0 sub=%d psub=%d ssub=0 "+
		"multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=%d events=r "+
		"cmd=%s user=default redir=%d resp=%d lib-name=%s lib-ver=%s\n",
		c.id, addr, addr, c.sockFD(), name, int64(now.Sub(c.info.created).Seconds()), idle, flags, sub, psub,
		c.used.Load(), cmd, redir, resp, lib[0], lib[1])
}

// subscriptions counts c's channels and patterns.
func (c *client) subscriptions() (int, int) {
	h := &c.s.hub
	h.mu.RLock()
	defer h.mu.RUnlock()
	if c.sub == nil {
		return 0, 0
	}
	return len(c.sub.channels), len(c.sub.patterns)
}

// sockFD is the connection's file descriptor, or -1.
func (c *client) sockFD() int {
	if c.lp == nil {
		return -1
	}
	return c.fd
}

// clientType is c's type as CLIENT LIST TYPE and CLIENT KILL TYPE name it.
func (c *client) clientType() string {
	if sub, psub := c.subscriptions(); sub+psub > 0 {
		return "pubsub"
	}
	return "normal"
}

// connected returns the server's clients, by id.
func (s *Server) connected() []*client {
	s.mu.Lock()
	out := make([]*client, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	s.mu.Unlock()
	sortClients(out)
	return out
}

func sortClients(cs []*client) {
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j].id < cs[j-1].id; j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
}

// clientList answers CLIENT LIST [TYPE type] [ID id ...].
func clientList(c *client, a [][]byte) {
	var typ string
	var ids map[int64]bool
	switch {
	case len(a) == 2:
	case len(a) == 4 && lower(a[2]) == "type":
		typ = lower(a[3])
		if !validClientType(typ) {
			c.errorReply(fmt.Sprintf("ERR Unknown client type '%s'", clip(a[3])))
			return
		}
	case len(a) > 3 && lower(a[2]) == "id":
		ids = map[int64]bool{}
		for _, b := range a[3:] {
			id, err := strconv.ParseInt(string(b), 10, 64)
			if err != nil || id <= 0 {
				c.errorReply("ERR Invalid client ID")
				return
			}
			ids[id] = true
		}
	default:
		c.errorReply(errSyntax)
		return
	}
	var b strings.Builder
	for _, o := range c.s.connected() {
		if typ != "" && o.clientType() != typ || ids != nil && !ids[o.id] {
			continue
		}
		b.WriteString(o.describe())
	}
	c.verbatim(b.String())
}

func validClientType(t string) bool {
	switch t {
	case "normal", "pubsub", "master", "replica", "slave":
		return true
	}
	return false
}

// killFilter is CLIENT KILL's selection.
type killFilter struct {
	id        int64
	typ, addr string
	laddr     string
	hasAddr   bool
	hasLaddr  bool
	skipMe    bool
}

// clientKill answers CLIENT KILL addr (the old form: OK, or an error when
// no client matched) and CLIENT KILL filter value ... (the number killed).
// A client killing itself is answered before it is disconnected.
func clientKill(c *client, a [][]byte) {
	if len(a) < 3 {
		c.errorReply("ERR wrong number of arguments for 'client|kill' command")
		return
	}
	f := killFilter{skipMe: len(a) != 3}
	if len(a) == 3 {
		f.addr, f.hasAddr = string(a[2]), true
	} else if !parseKillFilter(c, a, &f) {
		return
	}
	killed := 0
	for _, o := range c.s.connected() {
		if !f.matches(c, o) {
			continue
		}
		killed++
		if o == c {
			c.quit = true // after this reply
		} else if o.evicted.CompareAndSwap(false, true) {
			o.kill()
		}
	}
	switch {
	case len(a) != 3:
		c.integer(int64(killed))
	case killed == 0:
		c.quit = false
		c.errorReply("ERR No such client")
	default:
		c.ok()
	}
}

func parseKillFilter(c *client, a [][]byte, f *killFilter) bool {
	if len(a)%2 != 0 {
		c.errorReply(errSyntax)
		return false
	}
	for i := 2; i < len(a); i += 2 {
		v := string(a[i+1])
		switch lower(a[i]) {
		case "id":
			id, err := strconv.ParseInt(v, 10, 64)
			if err != nil || id <= 0 {
				c.errorReply("ERR client-id should be greater than 0")
				return false
			}
			f.id = id
		case "type":
			f.typ = strings.ToLower(v)
			if !validClientType(f.typ) {
				c.errorReply(fmt.Sprintf("ERR Unknown client type '%s'", clip(a[i+1])))
				return false
			}
		case "addr":
			f.addr, f.hasAddr = v, true
		case "laddr":
			f.laddr, f.hasLaddr = v, true
		case "user":
			if v != "default" {
				c.errorReply(fmt.Sprintf("ERR No such user '%s'", clip(a[i+1])))
				return false
			}
		case "skipme":
			switch strings.ToLower(v) {
			case "yes":
				f.skipMe = true
			case "no":
				f.skipMe = false
			default:
				c.errorReply(errSyntax)
				return false
			}
		default:
			c.errorReply(errSyntax)
			return false
		}
	}
	return true
}

// matches reports whether the filter selects o (me is the client asking).
func (f *killFilter) matches(me, o *client) bool {
	addr := o.s.Socket + ":0"
	switch {
	case f.id != 0 && o.id != f.id,
		f.typ != "" && o.clientType() != f.typ,
		f.hasAddr && f.addr != addr,
		f.hasLaddr && f.laddr != addr,
		f.skipMe && o == me:
		return false
	}
	return true
}
