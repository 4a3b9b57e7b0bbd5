package listener

import (
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
)

// freezer is a TCP proxy whose current connections can be frozen: bytes stop
// flowing but nothing is closed, as when a network path dies silently.
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen []chan struct{}
}

func newFreezer(t *testing.T, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go f.accept()
	return f
}

func (f *freezer) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", f.target)
		if err != nil {
			c.Close()
			continue
		}
		stop := make(chan struct{})
		f.mu.Lock()
		f.frozen = append(f.frozen, stop)
		f.mu.Unlock()
		go pipe(c, up, stop)
		go pipe(up, c, stop)
	}
}

// pipe copies until stop is closed, then holds both ends open and silent.
func pipe(dst, src net.Conn, stop chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		_ = src.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n, err := src.Read(buf)
		select {
		case <-stop:
			<-make(chan struct{}) // frozen: never read or write again
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil && !isTimeout(err) {
			if err == io.EOF {
				dst.Close()
			}
			return
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// freeze silences every connection made so far.
func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.frozen {
		close(c)
	}
	f.frozen = nil
}

// TestHalfOpenConnectionIsCut freezes the listener's TCP path: the bounded
// ping notices, cuts the connection, and the listener reconnects and resyncs.
func TestHalfOpenConnectionIsCut(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t)
	dsn := srv.CreateDB(t)
	testdb.Migrate(t, dsn)
	tcp := srv.TCPDSN(dsnDB(dsn))
	host := "127.0.0.1:" + itoa(srv.Port())
	f := newFreezer(t, host)
	proxied := strings.Replace(tcp, "port="+itoa(srv.Port()), "port="+itoa(f.ln.Addr().(*net.TCPAddr).Port), 1)
	r := &recorder{}
	l := &Listener{DSN: proxied, Sink: r, PingInterval: 100 * time.Millisecond, PingTimeout: 300 * time.Millisecond,
		MaxReconnect: 200 * time.Millisecond}
	run(t, l)
	f.freeze()
	poll(t, "reconnect after the frozen connection was cut", func() bool { return r.has("up:reconnected") })
}

func dsnDB(dsn string) string {
	return strings.Fields(dsn[strings.Index(dsn, "dbname=")+7:])[0]
}

func itoa(n int) string { return strconv.Itoa(n) }
