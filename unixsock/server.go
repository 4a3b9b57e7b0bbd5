package unixsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"pgmirror/mirror"
)

// Defaults of Server.
const (
	DefaultMaxClients   = 10000
	DefaultMaxValueSize = 16 << 20
	DefaultSocketMode   = 0o660
	maxKeyBytes         = 4000
	// writeTimeout bounds one write command, queueing included: a write
	// fails with an error rather than hang when Postgres is away.
	writeTimeout = 10 * time.Second
)

// Mirror is what the server reads from; *mirror.Mirror implements it.
type Mirror interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	GetMulti(ctx context.Context, keys []string) ([][]byte, error)
	Exists(key string) (mirror.Lookup, error)
	PTTL(key string) (int64, bool, error)
	StrLen(ctx context.Context, key string) (int64, error)
	Scan(cursor uint64, count int, match func(string) bool) (uint64, []string)
	State() mirror.State
	Stats() mirror.Stats
	RequestResync(reason string)
}

var _ Mirror = (*mirror.Mirror)(nil)

// Server serves the Redis protocol on a Unix socket. Configure the exported
// fields, then Listen, Serve, and finally Shutdown.
type Server struct {
	Socket       string
	SocketMode   os.FileMode
	MaxClients   int
	MaxValueSize int64
	// SubscriberBuffer bounds the messages waiting for one subscriber; one
	// that falls further behind is disconnected.
	SubscriberBuffer int
	Namespace        string // transparent key prefix
	Mirror           Mirror
	Writer           mirror.Writer
	Logger           hclog.Logger
	// Info adds lines to INFO's # Mirror section (e.g. the listener's state).
	Info func() [][2]string

	ln       net.Listener
	ctx      context.Context // cancelled by Shutdown's deadline: aborts in-flight work
	cancel   context.CancelFunc
	draining atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[*client]struct{}
	nextID   atomic.Int64
	started  time.Time
	stats    serverStats
	hub      hub
}

type serverStats struct {
	connections, commands, rejected, protocolErrors atomic.Int64
	subscribersDropped                              atomic.Int64
}

func (s *Server) defaults() {
	if s.MaxClients <= 0 {
		s.MaxClients = DefaultMaxClients
	}
	if s.MaxValueSize <= 0 {
		s.MaxValueSize = DefaultMaxValueSize
	}
	if s.SubscriberBuffer <= 0 {
		s.SubscriberBuffer = DefaultSubscriberBuffer
	}
	if s.SocketMode == 0 {
		s.SocketMode = DefaultSocketMode
	}
	if s.Logger == nil {
		s.Logger = hclog.NewNullLogger()
	}
}

// Listen creates the socket. A socket file left by a crashed process is
// replaced; one a live server answers on is an error, as is a path that is
// not a socket.
func (s *Server) Listen() error {
	s.defaults()
	if err := clearStale(s.Socket); err != nil {
		return err
	}
	ln, err := net.Listen("unix", s.Socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.Socket, err)
	}
	if err := os.Chmod(s.Socket, s.SocketMode); err != nil {
		ln.Close()
		return fmt.Errorf("chmod %s to %#o: %w", s.Socket, s.SocketMode, err)
	}
	s.ln = ln
	s.conns = map[*client]struct{}{}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.started = time.Now()
	s.Logger.Info("listening", "socket", s.Socket, "mode", fmt.Sprintf("%#o", s.SocketMode))
	return nil
}

// clearStale removes a socket file nobody answers on.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("socket %s: the path exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %s: another server is answering on it; stop it or choose another --socket", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("socket %s: cannot tell whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}

// Serve accepts clients until Shutdown. It returns nil after Shutdown.
func (s *Server) Serve() error {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.draining.Load() {
				return nil
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		s.stats.connections.Add(1)
		c := s.newClient(nc)
		s.mu.Lock()
		full := len(s.conns) >= s.MaxClients
		if !full {
			s.conns[c] = struct{}{}
			s.wg.Add(1)
		}
		s.mu.Unlock()
		if full {
			s.stats.rejected.Add(1)
			_, _ = nc.Write([]byte("-ERR max number of clients reached\r\n"))
			nc.Close()
			continue
		}
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Shutdown stops accepting, lets every connection finish the commands it
// has read and flush their replies, then closes them and removes the
// socket. When ctx ends first, in-flight work is abandoned.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.ln == nil || !s.draining.CompareAndSwap(false, true) {
		return nil
	}
	err := s.ln.Close() // also unlinks the socket file
	s.mu.Lock()
	for c := range s.conns {
		c.wakeIdle()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
	}
	s.cancel()
	_ = os.Remove(s.Socket) // in case Close did not (it does for listeners it created)
	return err
}

// Stats are the server's counters.
type Stats struct {
	Clients            int   // connected now
	Connections        int64 // accepted since start
	Rejected           int64 // refused: --max-clients reached
	Commands           int64 // commands processed
	ProtocolErrors     int64 // connections closed for breaking the protocol
	Subscribers        int   // clients subscribed to keyspace notifications now
	SubscribersDropped int64 // subscribers disconnected for falling behind
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Clients:            s.Clients(),
		Connections:        s.stats.connections.Load(),
		Rejected:           s.stats.rejected.Load(),
		Commands:           s.stats.commands.Load(),
		ProtocolErrors:     s.stats.protocolErrors.Load(),
		Subscribers:        int(s.hub.n.Load()),
		SubscribersDropped: s.stats.subscribersDropped.Load(),
	}
}

// Clients returns the number of connected clients.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
