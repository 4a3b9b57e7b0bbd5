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
	// DefaultShutdownTimeout bounds how long Close lets in-flight commands
	// finish and answer.
	DefaultShutdownTimeout = 10 * time.Second
	// writeTimeout bounds one write command, queueing included: a write
	// fails with an error rather than hang when Postgres is away.
	writeTimeout = 10 * time.Second
)

// Mirror is what the server reads from; *mirror.Mirror implements it.
type Mirror interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	GetMulti(ctx context.Context, keys []string, valueBound int64, emit func(v []byte)) error
	Exists(key string) (mirror.Lookup, error)
	PTTL(key string) (int64, bool, error)
	StrLen(ctx context.Context, key string) (int64, error)
	Scan(cursor uint64, count int, match func(string) bool) (uint64, []string)
	State() mirror.State
	Stats() mirror.Stats
	RequestResync(reason string)
	// Handle registers for the mirror's events (keyspace notifications).
	Handle(h func(mirror.Event))
	// ClockLead and Touch serve TIME and TOUCH (simple.go).
	ClockLead() time.Duration
	Touch(key string) (bool, error)
	// ViewSeq lets a block of reads check it read one state (exec.go).
	ViewSeq() uint64
	// IdleTime serves OBJECT IDLETIME (keyspace.go).
	IdleTime(key string) (int64, bool, error)
}

var _ Mirror = (*mirror.Mirror)(nil)

// Server serves the Redis protocol on a Unix socket. Configure the exported
// fields (a struct literal builds it; nothing starts), then Open, and
// finally Close. An accept loop that fails for good reports it on Err.
type Server struct {
	Socket       string
	SocketMode   os.FileMode
	MaxClients   int
	MaxValueSize int64
	// SubscriberBuffer bounds the messages waiting for one subscriber; one
	// that falls further behind is disconnected.
	SubscriberBuffer int
	// MaxClientBuffers bounds the buffers of all clients together: the
	// commands being read and run, replies and pushes waiting to be
	// written, subscriptions. Past it the largest consumers are
	// disconnected (as Redis's maxmemory-clients).
	MaxClientBuffers int64
	// MaxClientOutput bounds the output waiting for one client: the
	// command loop does not read from a client with more pending, and a
	// push past it disconnects the client.
	MaxClientOutput int64
	// OutputTimeout disconnects a client whose output has not drained for
	// this long.
	OutputTimeout time.Duration
	Namespace     string // transparent key prefix
	NoFlush       bool   // refuse FLUSHDB and FLUSHALL
	Mirror        Mirror
	Writer        mirror.Writer
	Logger        hclog.Logger
	// Info adds lines to INFO's # Mirror section (e.g. the listener's state).
	Info func() [][2]string
	// Channels sends PUBLISH's messages through Postgres (channels.go);
	// without it PUBLISH answers an error.
	Channels ChannelPublisher
	// Password, when set, is required of every client (AUTH, HELLO AUTH)
	// before any other command, as Redis's requirepass.
	Password string
	// Version is pgmirror's version, reported by INFO; "dev" when empty.
	Version string
	// ShutdownTimeout bounds how long Close lets the connections finish the
	// commands they have read; past it in-flight work is abandoned. 0 means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// ScriptTimeout bounds one script run (EVAL); 0 means DefaultScriptTimeout.
	ScriptTimeout time.Duration
	// TrackingTableMaxKeys bounds the keys CLIENT TRACKING remembers; past
	// it keys are evicted by invalidating them. 0 means
	// DefaultTrackingTableMaxKeys.
	TrackingTableMaxKeys int
	// Loops is the number of event loops serving the clients; 0 means one
	// per two processors (GOMAXPROCS), at least one.
	Loops int
	// LoopSpin is how long a loop serving a few busy clients polls for
	// their next command before it sleeps (see spin); 0 means
	// DefaultLoopSpin, a negative value never spins.
	LoopSpin time.Duration

	ln       net.Listener
	sockFile os.FileInfo     // the socket file Open created: Close removes only it
	ctx      context.Context // cancelled by Close's deadline: aborts in-flight work
	cancel   context.CancelFunc
	stop     chan struct{} // closed by Close: ends the accept backoff and the helpers
	draining atomic.Bool
	wg       sync.WaitGroup // client connections
	handoffs sync.WaitGroup // clients' goroutines running their commands off the loop
	loops    []*loop
	helpers  sync.WaitGroup // publisher and evictor
	accepter sync.WaitGroup // the accept loop
	errOnce  sync.Once
	errc     chan error // Err
	mu       sync.Mutex
	conns    map[*client]struct{}
	nextID   atomic.Int64
	started  time.Time
	stats    serverStats
	hub      hub
	pub      publisher
	budget   budget
	cmds     commandTable  // the commands and their counters (commands())
	notify   atomic.Uint32 // notify-keyspace-events (configcmds.go); 0: the default
	scr      scripts       // the script engine (scriptEngine())
	watches  watchRegistry
	trk      tracker // client-side caching (tracktable.go)
}

type serverStats struct {
	connections, commands, rejected, protocolErrors atomic.Int64
	subscribersDropped                              atomic.Int64
	evictedBudget, evictedOutput                    atomic.Int64
	acceptErrors                                    atomic.Int64
	handoffs, loopCommands, writes                  atomic.Int64
	spinHits, spinNanos                             atomic.Int64
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
	if s.MaxClientBuffers <= 0 {
		s.MaxClientBuffers = DefaultMaxClientBuffers
	}
	if s.MaxClientOutput <= 0 {
		s.MaxClientOutput = DefaultMaxClientOutput
	}
	if s.LoopSpin == 0 {
		s.LoopSpin = DefaultLoopSpin
	}
	if s.OutputTimeout <= 0 {
		s.OutputTimeout = DefaultOutputTimeout
	}
	if s.SocketMode == 0 {
		s.SocketMode = DefaultSocketMode
	}
	if s.ShutdownTimeout <= 0 {
		s.ShutdownTimeout = DefaultShutdownTimeout
	}
	if s.Logger == nil {
		s.Logger = hclog.NewNullLogger()
	}
}

// Open creates the socket and serves clients on it in the background until
// Close. A socket file left by a crashed process is replaced; one a live
// server answers on is an error, as is a path that is not a socket.
func (s *Server) Open() error {
	if s.ln != nil {
		return errors.New("socket server: already opened")
	}
	if err := s.listen(); err != nil {
		return err
	}
	s.Mirror.Handle(s.handleMirrorEvent)
	s.Mirror.Handle(s.handleWatchEvent)
	s.Mirror.Handle(s.handleTrackingEvent)
	errc := s.errChan()
	s.accepter.Add(1)
	go func() {
		defer s.accepter.Done()
		if err := s.serve(); err != nil {
			errc <- err
		}
	}()
	return nil
}

// Err receives the error that stopped the accept loop, at most one; the
// connected clients are still served until Close. Nothing is sent when
// Close stops it.
func (s *Server) Err() <-chan error { return s.errChan() }

func (s *Server) errChan() chan error {
	s.errOnce.Do(func() { s.errc = make(chan error, 1) })
	return s.errc
}

// listen creates the socket and starts the helpers.
func (s *Server) listen() error {
	s.defaults()
	if err := clearStale(s.Socket); err != nil {
		return err
	}
	ln, err := net.Listen("unix", s.Socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.Socket, err)
	}
	// Closing must not unlink the path: by then it may be another
	// server's socket. Close removes the file only if it is still ours.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	fi, err := os.Lstat(s.Socket)
	if err == nil {
		err = os.Chmod(s.Socket, s.SocketMode)
	}
	if err != nil {
		ln.Close()
		os.Remove(s.Socket)
		return fmt.Errorf("chmod %s to %#o: %w", s.Socket, s.SocketMode, err)
	}
	if err := s.startLoops(); err != nil {
		ln.Close()
		os.Remove(s.Socket)
		return err
	}
	s.ln, s.sockFile = ln, fi
	s.mu.Lock() // Stats (a metrics scrape) may already count the clients
	s.conns = map[*client]struct{}{}
	s.mu.Unlock()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.stop = make(chan struct{})
	s.started = time.Now()
	s.startHelpers()
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

// Close stops accepting, lets every connection finish the commands it has
// read and flush their replies, then closes them and removes the socket
// file if it is still the one Open created (a newer server may have
// replaced it). Past ShutdownTimeout, in-flight work is abandoned. Close is
// safe to call when Open never ran or failed, and twice.
func (s *Server) Close() error {
	if s.ln == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.ShutdownTimeout)
	defer cancel()
	return s.shutdown(ctx)
}

// shutdown is Close with ctx as the bound.
func (s *Server) shutdown(ctx context.Context) error {
	if s.ln == nil || !s.draining.CompareAndSwap(false, true) {
		return nil
	}
	close(s.stop)
	err := s.ln.Close()
	s.accepter.Wait()
	for _, l := range s.loops {
		l.wake() // each ends its idle clients (drainIdle)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.cancel()
		s.mu.Lock()
		for c := range s.conns {
			c.kill()
		}
		s.mu.Unlock()
		<-done
	}
	s.handoffs.Wait()
	s.stopLoops()
	s.cancel()
	s.helpers.Wait()
	if fi, lerr := os.Lstat(s.Socket); lerr == nil && os.SameFile(fi, s.sockFile) {
		_ = os.Remove(s.Socket)
	} else if lerr == nil {
		s.Logger.Info("leaving the socket file: another server replaced it", "socket", s.Socket)
	}
	return err
}

// Stats are the server's counters.
type Stats struct {
	Clients            int           // connected now
	Connections        int64         // accepted since start
	Rejected           int64         // refused: --max-clients reached
	Commands           int64         // commands processed
	ProtocolErrors     int64         // connections closed for breaking the protocol
	Subscribers        int           // clients subscribed to keyspace notifications now
	SubscribersDropped int64         // subscribers disconnected for falling behind
	ClientBuffers      int64         // bytes of client buffers now, as counted against MaxClientBuffers
	MaxClientBuffers   int64         // the budget
	EvictedBudget      int64         // clients disconnected to keep ClientBuffers within MaxClientBuffers
	EvictedOutput      int64         // clients disconnected for not reading their output within OutputTimeout
	KeyEventsDropped   int64         // keyspace events and messages not published: the publisher's queue was full
	AcceptErrors       int64         // accepts that failed and were retried (out of file descriptors, ...)
	LoopCommands       int64         // commands the event loops answered themselves
	Handoffs           int64         // times a client left its loop for its goroutine (a command that may wait)
	Writes             int64         // writes to client sockets (system calls)
	LoopSpinHits       int64         // spins that found a client's next command (not ready at once) before LoopSpin passed
	LoopSpinTime       time.Duration // time the loops spent polling instead of sleeping (the CPU LoopSpin costs)
	Tracking           TrackingStats
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
		ClientBuffers:      s.budget.total.Load(),
		MaxClientBuffers:   s.MaxClientBuffers,
		EvictedBudget:      s.stats.evictedBudget.Load(),
		EvictedOutput:      s.stats.evictedOutput.Load(),
		KeyEventsDropped:   s.pub.dropped.Load(),
		AcceptErrors:       s.stats.acceptErrors.Load(),
		LoopCommands:       s.stats.loopCommands.Load(),
		Handoffs:           s.stats.handoffs.Load(),
		Writes:             s.stats.writes.Load(),
		LoopSpinHits:       s.stats.spinHits.Load(),
		LoopSpinTime:       time.Duration(s.stats.spinNanos.Load()),
		Tracking:           s.trk.stats(),
	}
}

// Clients returns the number of connected clients.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
