package unixsock

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event loop's system calls on non-blocking descriptors, which never
// wait: made raw, without telling the scheduler the goroutine enters a
// system call (as unix.Read does), which costs more than the call itself
// for a small request and keeps the runtime's monitor thread busy taking
// processors back. Only epoll_wait may block; it first polls raw, and
// blocks through the scheduler only when nothing is ready.

func rawRead(fd int, b []byte) (int, error)  { return rawIO(unix.SYS_READ, fd, b) }
func rawWrite(fd int, b []byte) (int, error) { return rawIO(unix.SYS_WRITE, fd, b) }

// rawIO is read(2) or write(2) of b.
func rawIO(trap uintptr, fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// rawWritev writes bufs with one writev; iov is scratch space of at least
// len(bufs) entries.
func rawWritev(fd int, bufs [][]byte, iov []unix.Iovec) (int, error) {
	k := 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		iov[k].Base = &b[0]
		iov[k].SetLen(len(b))
		k++
	}
	if k == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(k))
	clear(iov[:k]) // no pointers kept to the buffers
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// epollWait returns ready events, waiting up to msec (-1: no bound). When
// the last wait returned several events (busy), it first polls raw, which
// usually finds more at once.
func epollWait(epfd int, events []unix.EpollEvent, msec int, busy bool) (int, error) {
	if busy {
		if n, err := epollPoll(epfd, events); n > 0 || err != nil {
			return n, err
		}
	}
	return unix.EpollWait(epfd, events, msec)
}

// epollPoll returns the events ready now, without waiting.
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
