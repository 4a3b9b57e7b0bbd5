package script

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults of Config.
const (
	DefaultTimeout         = time.Second
	DefaultMaxScriptBytes  = 1 << 20
	DefaultMaxCacheScripts = 1000
	DefaultMaxCacheBytes   = 64 << 20
	DefaultMaxStringBytes  = 64 << 20
	DefaultMaxAllocBytes   = 256 << 20
	DefaultMaxTableEntries = 1 << 20
	DefaultMaxReplyBytes   = 256 << 20
	DefaultMaxCoroutines   = 100
	DefaultMaxCallDepth    = 1000
	DefaultMaxStackSlots   = 1 << 18
	DefaultMaxLogLines     = 100
	DefaultMaxIdleStates   = 8
	DefaultRedisVersion    = "7.0.0"
)

// Config bounds the engine. A zero field takes its default.
type Config struct {
	// Timeout is how long one run may take; past it the run stops and
	// answers an error.
	Timeout time.Duration
	// MaxScriptBytes bounds a script's body (and a loadstring chunk).
	MaxScriptBytes int
	// MaxCacheScripts and MaxCacheBytes bound the script cache: the number of
	// scripts and the bytes of their bodies.
	MaxCacheScripts int
	MaxCacheBytes   int64
	// MaxStringBytes bounds one string a script makes (concatenation,
	// string.rep, string.format, string.gsub, table.concat, cjson.encode ...).
	MaxStringBytes int
	// MaxAllocBytes bounds what one run may make through those, in all: the
	// bytes of the strings, 32 bytes an entry for table.insert and cjson.decode.
	MaxAllocBytes int64
	// MaxTableEntries bounds a table built by table.insert or cjson.decode.
	MaxTableEntries int
	// MaxReplyBytes bounds a run's reply (its strings, 16 bytes an element).
	MaxReplyBytes int64
	// MaxCoroutines bounds the coroutines one run may create.
	MaxCoroutines int
	// MaxCallDepth bounds the Lua call stack (frames).
	MaxCallDepth int
	// MaxStackSlots bounds the Lua value stack (slots of 16 bytes).
	MaxStackSlots int
	// MaxLogLines bounds the redis.log lines of one run; later ones are dropped.
	MaxLogLines int
	// MaxIdleStates is how many idle Lua states the engine keeps for reuse.
	MaxIdleStates int
	// RedisVersion is redis.REDIS_VERSION (and REDIS_VERSION_NUM).
	RedisVersion string
	// Logger receives redis.log lines; nil discards them.
	Logger hclog.Logger
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def64 := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	def(&c.MaxScriptBytes, DefaultMaxScriptBytes)
	def(&c.MaxCacheScripts, DefaultMaxCacheScripts)
	def64(&c.MaxCacheBytes, DefaultMaxCacheBytes)
	def(&c.MaxStringBytes, DefaultMaxStringBytes)
	def64(&c.MaxAllocBytes, DefaultMaxAllocBytes)
	def(&c.MaxTableEntries, DefaultMaxTableEntries)
	def64(&c.MaxReplyBytes, DefaultMaxReplyBytes)
	def(&c.MaxCoroutines, DefaultMaxCoroutines)
	def(&c.MaxCallDepth, DefaultMaxCallDepth)
	def(&c.MaxStackSlots, DefaultMaxStackSlots)
	def(&c.MaxLogLines, DefaultMaxLogLines)
	def(&c.MaxIdleStates, DefaultMaxIdleStates)
	if c.RedisVersion == "" {
		c.RedisVersion = DefaultRedisVersion
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// Engine runs scripts with Redis's semantics. It is safe for concurrent
// use: each run gets a Lua state of its own.
type Engine struct {
	cfg   Config
	log   hclog.Logger
	cache *cache
	idle  chan *vm

	mu      sync.Mutex
	running map[*run]struct{}
}

// New returns an engine with cfg's bounds.
func New(cfg Config) *Engine {
	cfg = cfg.withDefaults()
	return &Engine{
		cfg:     cfg,
		log:     cfg.Logger,
		cache:   newCache(cfg.MaxCacheScripts, cfg.MaxCacheBytes),
		idle:    make(chan *vm, cfg.MaxIdleStates),
		running: map[*run]struct{}{},
	}
}

// Config returns the engine's configuration, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// compile checks and compiles a body. The error reply is worded as Redis's.
func (e *Engine) compile(body []byte) (*Script, Reply) {
	if len(body) > e.cfg.MaxScriptBytes {
		return nil, ErrorReply(fmt.Sprintf("ERR script of %d bytes is larger than the limit of %d bytes",
			len(body), e.cfg.MaxScriptBytes))
	}
	flags, shebang, err := parseShebang(body)
	if err != nil {
		return nil, ErrorReply("ERR " + err.Error())
	}
	src := body[shebang:]
	proto, err := compile(src, chunkName)
	if err != nil {
		return nil, ErrorReply("ERR Error compiling script (new function): " + err.Error())
	}
	return &Script{SHA: SHA1Hex(body), Flags: flags, Size: len(body), proto: proto}, Reply{}
}

// Load is SCRIPT LOAD: it compiles body and keeps it until SCRIPT FLUSH.
// It answers the sha, or an error reply (a compile error, a body over
// MaxScriptBytes, a cache full of loaded scripts).
func (e *Engine) Load(body []byte) (string, Reply) {
	sha := SHA1Hex(body)
	if s := e.cache.get(sha); s != nil {
		e.cache.add(s, true)
		return sha, Reply{}
	}
	s, rep := e.compile(body)
	if s == nil {
		return "", rep
	}
	if !e.cache.add(s, true) {
		st := e.cache.stats()
		return "", ErrorReply(fmt.Sprintf("ERR script cache full: %d scripts loaded with SCRIPT LOAD hold %d bytes "+
			"(limits %d scripts, %d bytes); SCRIPT FLUSH empties it", st.Pinned, st.Bytes, e.cfg.MaxCacheScripts, e.cfg.MaxCacheBytes))
	}
	return sha, Reply{}
}

// Script returns the compiled script of an EVAL body: from the cache, or
// compiled and cached (evicting the least recently used EVAL script when
// the cache is full; when only loaded scripts fill it, the script runs
// without being cached). It answers an error reply for a body that does not
// compile.
func (e *Engine) Script(body []byte) (*Script, Reply) {
	if s := e.cache.get(SHA1Hex(body)); s != nil {
		return s, Reply{}
	}
	s, rep := e.compile(body)
	if s != nil {
		e.cache.add(s, false)
	}
	return s, rep
}

// Lookup returns the cached script of sha (EVALSHA), case-insensitively.
func (e *Engine) Lookup(sha string) (*Script, bool) {
	if len(sha) != 40 {
		return nil, false
	}
	s := e.cache.get(lowerHex(sha))
	return s, s != nil
}

// Exists is SCRIPT EXISTS.
func (e *Engine) Exists(shas ...string) []bool {
	out := make([]bool, len(shas))
	for i, sha := range shas {
		out[i] = len(sha) == 40 && e.cache.has(lowerHex(sha))
	}
	return out
}

// Flush is SCRIPT FLUSH: it empties the cache. Runs in progress finish.
func (e *Engine) Flush() { e.cache.flush() }

// CacheStats describes the script cache.
func (e *Engine) CacheStats() CacheStats { return e.cache.stats() }

func lowerHex(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Kill is SCRIPT KILL: it stops every run in progress that has not written
// (Caller.Wrote). It answers OK, NOTBUSY when nothing runs, and UNKILLABLE
// when every run in progress has written.
func (e *Engine) Kill() Reply {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.running) == 0 {
		return ErrorReply(MsgNotBusy)
	}
	killed := 0
	for r := range e.running {
		if !r.req.Caller.Wrote() {
			r.stop(errKilled)
			killed++
		}
	}
	if killed == 0 {
		return ErrorReply(MsgUnkillable)
	}
	return StatusReply("OK")
}

// Running is how many runs are in progress.
func (e *Engine) Running() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.running)
}

func (e *Engine) register(r *run) {
	e.mu.Lock()
	e.running[r] = struct{}{}
	e.mu.Unlock()
}

func (e *Engine) unregister(r *run) {
	e.mu.Lock()
	delete(e.running, r)
	e.mu.Unlock()
}

// getVM takes an idle state or builds one.
func (e *Engine) getVM() *vm {
	select {
	case v := <-e.idle:
		return v
	default:
		return newVM(e)
	}
}

// putVM keeps a state for reuse, or closes it when enough are idle.
func (e *Engine) putVM(v *vm) {
	select {
	case e.idle <- v:
	default:
		v.L.Close()
	}
}
