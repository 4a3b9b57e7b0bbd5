package listener

import (
	"time"

	"pgmirror/pgstore/hung"
)

// dialTimeout bounds a connection attempt when the DSN sets no connect_timeout.
const dialTimeout = 10 * time.Second

// dialer is the pq.Dialer of the listener: a hung.Dialer, whose
// connections the listener cuts when a Ping does not answer or when it
// closes (pq.Listener.Ping has no timeout, and Close waits behind a stuck
// Ping).
type dialer struct{ *hung.Dialer }

func newDialer() *dialer { return &dialer{hung.NewDialer(dialTimeout)} }

// killAll closes every open connection of the dialer.
func (d *dialer) killAll() { d.KillAll() }
