package unixsock

import (
	"cmp"
	"slices"
	"sync/atomic"
)

// DefaultMaxClientBuffers is the budget of all clients' buffers together
// when none is given: four values of the default --max-value-size.
const DefaultMaxClientBuffers = 64 << 20

// Reasons a client is disconnected by the server, as logged and counted.
const (
	reasonBudget        = "budget"
	reasonOutputTimeout = "output_timeout"
	reasonSubscriber    = "subscriber_backlog"
)

// budget counts the bytes of every client's buffers against
// MaxClientBuffers: the command being read and the batch being run (from
// accountFrom bytes), copies of replies and pushes waiting to be written,
// and subscription names. Values sent from the mirror's memory are not
// copies and do not count; OutputTimeout bounds how long a client holds
// one. A client's fixed costs (its read buffer, a reply buffer of up to
// keptReplyBuffer, its goroutine) are bounded by --max-clients instead.
type budget struct {
	total atomic.Int64
	kick  chan struct{} // wakes the evictor
}

// account adds d bytes (negative: frees them) to the client's buffers,
// and wakes the evictor when all clients' together pass the budget.
func (c *client) account(d int64) {
	if d == 0 {
		return
	}
	c.used.Add(d)
	b := &c.s.budget
	if b.total.Add(d) > c.s.MaxClientBuffers && d > 0 && b.kick != nil {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
}

// evictLoop disconnects the largest consumers whenever the clients'
// buffers pass the budget.
func (s *Server) evictLoop() {
	defer s.helpers.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-s.budget.kick:
		}
		s.evictLargest()
	}
}

// evictLargest disconnects clients, largest buffers first, until the
// others' buffers fit the budget. An evicted client's bytes count until
// its goroutine has let them go, but not in this choice.
func (s *Server) evictLargest() {
	type usage struct {
		c    *client
		used int64
	}
	var all []usage
	var total int64
	s.mu.Lock()
	for c := range s.conns {
		if u := c.used.Load(); u > 0 && !c.evicted.Load() {
			total += u
			if !c.info.noEvict.Load() { // CLIENT NO-EVICT: counted, never chosen
				all = append(all, usage{c, u})
			}
		}
	}
	s.mu.Unlock()
	if total <= s.MaxClientBuffers {
		return
	}
	slices.SortFunc(all, func(a, b usage) int { return cmp.Compare(b.used, a.used) })
	for _, u := range all {
		if total <= s.MaxClientBuffers {
			return
		}
		s.evict(u.c, reasonBudget, "client buffers past --max-client-buffers; disconnecting the largest")
		total -= u.used
	}
}

// evict disconnects c once, logging why and counting it.
func (s *Server) evict(c *client, reason, why string) {
	if !c.evicted.CompareAndSwap(false, true) {
		return
	}
	switch reason {
	case reasonBudget:
		s.stats.evictedBudget.Add(1)
	case reasonOutputTimeout:
		s.stats.evictedOutput.Add(1)
	case reasonSubscriber:
		s.stats.subscribersDropped.Add(1)
	}
	c.mu.Lock()
	name := c.name
	c.mu.Unlock()
	s.Logger.Warn("disconnecting a client: "+why, "client", c.id, "name", name, "reason", reason,
		"client_bytes", c.used.Load(), "all_clients_bytes", s.budget.total.Load(),
		"max_client_buffers", s.MaxClientBuffers, "output_timeout", s.OutputTimeout.String())
	c.kill()
}

// startHelpers starts the goroutines Close stops: the keyspace
// publisher and the evictor.
func (s *Server) startHelpers() {
	s.budget.kick = make(chan struct{}, 1)
	s.pub.start()
	s.trk.wake = make(chan struct{}, 1)
	s.helpers.Add(3)
	go s.evictLoop()
	go s.publishLoop()
	go s.expiryLoop() // tracktable.go
}
