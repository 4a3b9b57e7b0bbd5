// Package unixsock will own pgmirror's client-facing server: RESP over the
// Unix socket, the commands of SPEC §5, limits and graceful shutdown. It is
// built by the socket-server issue; until then serve opens no socket.
package unixsock
