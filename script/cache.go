package script

import (
	"container/list"
	"sync"

	lua "github.com/yuin/gopher-lua"
)

// Script is a compiled script of the cache.
type Script struct {
	SHA   string // hex SHA-1 of the body
	Flags Flags  // from its shebang line
	Size  int    // bytes of its body

	proto *lua.FunctionProto
}

// cacheEntry is a script in the cache. Scripts loaded with SCRIPT LOAD are
// pinned: only SCRIPT FLUSH removes them. Scripts the cache learned from EVAL
// are evicted, least recently used first, to make room (as Redis 7.4 does).
type cacheEntry struct {
	script *Script
	pinned bool
	elem   *list.Element // in lru while not pinned
}

// cache maps shas to compiled scripts within a count and a byte bound (the
// bytes of the scripts' bodies).
type cache struct {
	mu       sync.Mutex
	maxCount int
	maxBytes int64
	byID     map[string]*cacheEntry
	lru      *list.List // of *cacheEntry, most recently used first
	bytes    int64
	evicted  uint64
}

func newCache(maxCount int, maxBytes int64) *cache {
	return &cache{maxCount: maxCount, maxBytes: maxBytes, byID: map[string]*cacheEntry{}, lru: list.New()}
}

// get returns the script of sha and marks it used.
func (c *cache) get(sha string) *Script {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.byID[sha]
	if e == nil {
		return nil
	}
	if e.elem != nil {
		c.lru.MoveToFront(e.elem)
	}
	return e.script
}

func (c *cache) has(sha string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byID[sha] != nil
}

// add stores s (pinned for SCRIPT LOAD), evicting unpinned scripts to make
// room. It reports false when s does not fit even after evicting every
// unpinned script; the cache is then left as it was.
func (c *cache) add(s *Script, pinned bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.byID[s.SHA]; e != nil {
		if pinned && !e.pinned {
			c.lru.Remove(e.elem)
			e.elem, e.pinned = nil, true
		} else if e.elem != nil {
			c.lru.MoveToFront(e.elem)
		}
		return true
	}
	if !c.makeRoom(int64(s.Size)) {
		return false
	}
	e := &cacheEntry{script: s, pinned: pinned}
	if !pinned {
		e.elem = c.lru.PushFront(e)
	}
	c.byID[s.SHA] = e
	c.bytes += int64(s.Size)
	return true
}

// makeRoom evicts unpinned scripts until one more of size bytes fits, or
// reports false, evicting nothing, when it cannot.
func (c *cache) makeRoom(size int64) bool {
	count, bytes := len(c.byID), c.bytes
	for el := c.lru.Back(); el != nil && !c.fits(count, bytes, size); el = el.Prev() {
		count--
		bytes -= int64(el.Value.(*cacheEntry).script.Size)
	}
	if !c.fits(count, bytes, size) {
		return false
	}
	for !c.fits(len(c.byID), c.bytes, size) {
		e := c.lru.Remove(c.lru.Back()).(*cacheEntry)
		delete(c.byID, e.script.SHA)
		c.bytes -= int64(e.script.Size)
		c.evicted++
	}
	return true
}

func (c *cache) fits(count int, bytes, size int64) bool {
	return (c.maxCount <= 0 || count+1 <= c.maxCount) && (c.maxBytes <= 0 || bytes+size <= c.maxBytes)
}

func (c *cache) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byID = map[string]*cacheEntry{}
	c.lru.Init()
	c.bytes = 0
}

// CacheStats describes the script cache.
type CacheStats struct {
	Scripts int    // scripts cached
	Pinned  int    // of which loaded with SCRIPT LOAD
	Bytes   int64  // bytes of their bodies
	Evicted uint64 // EVAL scripts evicted to make room, since the engine started
}

func (c *cache) stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Scripts: len(c.byID), Pinned: len(c.byID) - c.lru.Len(), Bytes: c.bytes, Evicted: c.evicted}
}
