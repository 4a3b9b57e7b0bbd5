// Package unixsock owns pgmirror's client-facing server: RESP over the Unix
// socket, the commands of SPEC §5, keyspace notifications, the bounds a
// local client meets (a bounded, resumable RESP parser; a bounded output
// queue per connection; a budget of all clients' buffers; an output
// deadline) and graceful shutdown. The Parser and the output queue do not
// depend on a goroutine per connection, for an event-loop layer to reuse.
package unixsock
