// Package unixsock is pgmirror's client-facing server: RESP over the Unix
// socket. Each Server has its own command table (name, arity, key
// positions and flags as Redis's COMMAND reports them, and the handler),
// counters and version; reads are answered from the mirror, writes go
// through a mirror.Writer to Postgres, and the server registers for the
// mirror's events (mirror.Handle) to publish keyspace notifications,
// messages and tracking invalidations.
//
// Connections are served by a few epoll event loops (loop.go): a loop
// reads a client's input, parses it (a bounded, resumable Parser per
// client) and answers what the mirror answers at once; a command that may
// wait, or costs more than a lookup, is handed off to one goroutine of the
// client's until its input is answered (loopconn.go). Output goes through
// a bounded queue per client (outbox.go), written by whoever answers and
// by the loop when the socket is writable again. The server also holds
// the other bounds a local client meets (a budget of all clients'
// buffers, an output deadline) and graceful shutdown (Close).
package unixsock
