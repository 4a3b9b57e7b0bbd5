//go:build linux || darwin || freebsd

package pgstore

import "syscall"

// peerClosed peeks at the socket fd without blocking: true when a byte or an
// end of file waits on it, or the socket is in error.
func peerClosed(fd uintptr) bool {
	var b [1]byte
	for {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			return false // nothing waits: open
		case err != nil:
			return true // reset, or otherwise broken
		default:
			return true // a byte (n 1) or the end of file (n 0)
		}
	}
}
