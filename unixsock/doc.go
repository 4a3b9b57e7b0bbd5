// Package unixsock is pgmirror's client-facing server: RESP over the Unix
// socket. Each Server has its own command table (name, arity, key
// positions and flags as Redis's COMMAND reports them, and the handler),
// counters and version; reads are answered from the mirror, writes go
// through a mirror.Writer to Postgres, and the server registers for the
// mirror's events (mirror.Handle) to publish keyspace notifications. It
// also holds the bounds a local client meets (a bounded, resumable RESP
// parser; a bounded output queue per connection; a budget of all clients'
// buffers; an output deadline) and graceful shutdown (Close). The Parser
// and the output queue do not depend on a goroutine per connection, for an
// event-loop layer to reuse.
package unixsock
