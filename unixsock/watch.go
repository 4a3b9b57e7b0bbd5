package unixsock

import (
	"sync"
	"sync/atomic"

	"pgmirror/mirror"
)

// WATCH records, per key, what the mirror held (existence, version,
// expiry), and registers the connection with the server's watch registry:
// any change the mirror applies to the key afterwards (this sidecar's
// writes, notifications of other sidecars' and of plain SQL, keys found
// expired) marks the connection's watch dirty, and a flush of the mirror
// marks every watch dirty. EXEC aborts (null array) on a dirty watch without
// a query; otherwise, under the block's key locks, it reads the watched
// rows FOR UPDATE and aborts if a key's existence or version differs from
// what was recorded, or if it was live and has expired since: plain SQL
// takes no advisory lock, versions do not order writes, and expiry does
// not change the version, so each check is needed.

// watchedKey is a key's state in the mirror at WATCH.
type watchedKey struct {
	found   bool
	version int64
	pending bool // registered, not read yet
}

// watchRegistry is the server's watched keys (watchers, with the state each
// watcher recorded), guarded by mu.
type watchRegistry struct {
	mu       sync.Mutex
	watchers map[string]map[*client]watchedKey
	n        atomic.Int64 // watched keys: zero makes the event handler free
}

// watchFlag is a connection's dirty mark (the event handler sets it).
type watchFlag struct{ dirty atomic.Bool }

func cmdWatch(c *client, a [][]byte) {
	if c.txn.multi != nil {
		c.errorReply("ERR WATCH inside MULTI is not allowed")
		return
	}
	keys, ok := c.keys(a[1:])
	if !ok {
		return
	}
	r := &c.s.watches
	r.mu.Lock()
	if r.watchers == nil {
		r.watchers = map[string]map[*client]watchedKey{}
	}
	var fresh []string
	for _, k := range keys {
		if _, dup := c.txn.watched[k]; dup || r.watchers[k] != nil && r.watchers[k][c].pending {
			continue
		}
		if r.watchers[k] == nil {
			r.watchers[k] = map[*client]watchedKey{}
			r.n.Add(1)
		}
		r.watchers[k][c] = watchedKey{pending: true}
		fresh = append(fresh, k)
	}
	r.mu.Unlock()
	// Registered first, read second: the state read includes every change
	// applied before, and the event handler compares later ones with it.
	if c.txn.watched == nil {
		c.txn.watched = map[string]watchedKey{}
	}
	for _, k := range fresh {
		l, err := c.s.Mirror.Exists(k)
		if err != nil {
			c.watch.dirty.Store(true) // EXEC aborts: nothing sure was seen
		}
		w := watchedKey{found: l.Found, version: l.Version}
		c.txn.watched[k] = w
		r.mu.Lock()
		r.watchers[k][c] = w
		r.mu.Unlock()
	}
	c.ok()
}

// unwatchAll forgets the connection's watched keys.
func (c *client) unwatchAll() {
	if len(c.txn.watched) > 0 {
		r := &c.s.watches
		r.mu.Lock()
		for k := range c.txn.watched {
			if w := r.watchers[k]; w != nil {
				delete(w, c)
				if len(w) == 0 {
					delete(r.watchers, k)
					r.n.Add(-1)
				}
			}
		}
		r.mu.Unlock()
	}
	c.txn.watched = nil
	c.watch.dirty.Store(false)
}

func (c *client) watchDirty() bool { return c.watch.dirty.Load() }

// handleWatchEvent marks the watchers of changed keys dirty (the mirror's
// event handler): a watcher whose recorded state differs from the key's
// state in the mirror now. (The event of a change the watcher's WATCH
// already saw, handled late, leaves it clean.)
func (s *Server) handleWatchEvent(ev mirror.Event) {
	r := &s.watches
	if r.n.Load() == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch ev.Kind {
	case mirror.KindChanges:
		for _, ch := range ev.Changes {
			ws := r.watchers[ch.Key]
			if len(ws) == 0 {
				continue
			}
			l, err := s.Mirror.Exists(ch.Key)
			for c, w := range ws {
				if !w.pending && (err != nil || l.Found != w.found || l.Found && l.Version != w.version) {
					c.watch.dirty.Store(true)
				}
			}
		}
	case mirror.KindFlush:
		if ev.Flush == mirror.FlushDB {
			break // its deletes came as key changes: as in Redis, they touch the keys that existed
		}
		for _, w := range r.watchers {
			for c := range w {
				c.watch.dirty.Store(true)
			}
		}
	}
}
