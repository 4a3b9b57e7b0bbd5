// Package sidecar assembles one pgmirror sidecar from its components and
// runs it: the Postgres pool, the mirror and its listener, the writer, the
// loaders and jobs, the socket server and the admin HTTP server. It also
// holds the sidecar's configuration (Config) and how it is read from flags
// and the environment. main and every test that needs a whole sidecar
// (through internal/sidecartest) call New and Open, so the binary and the
// tests run the same wiring.
//
// Data flows one way: Postgres -> listener -> mirror -> socket server (and
// admin, which only reads). Each component is given what it depends on
// when it is built (New builds them all without starting any), and those
// that observe another register with it (mirror.Mirror.Handle,
// listener.Listener.HandleLag) before it opens; nothing is patched in after
// construction. Open starts them, Close stops them in the reverse of the
// data flow.
package sidecar

import (
	"context"
	"database/sql"
	"errors"
	"sync"

	"github.com/hashicorp/go-hclog"
	_ "github.com/lib/pq" // registers the "postgres" driver

	"pgmirror/admin"
	"pgmirror/jobs"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
	"pgmirror/unixsock"
)

// Options are what the process gives a sidecar beside its Config.
type Options struct {
	// Logger receives the sidecar's logs; nil logs nothing.
	Logger hclog.Logger
	// Version is reported by INFO, HELLO and the admin server.
	Version string
	// TriggersSQL is installed by Config.Migrate (main embeds triggers.sql).
	TriggersSQL string
	// Tune adjusts components before they open; tests only.
	Tune Tuning
}

// Tuning lets tests adjust what Config cannot express; every field is nil
// or false in production.
type Tuning struct {
	Mirror   func(*mirror.Options)
	Listener func(*listener.Listener)
	Loaders  func(*pgstore.Loaders)
	Writer   func(*pgstore.WriterOptions)
	Server   func(*unixsock.Server)
	Jobs     func(*jobs.Config)
	// NoJobs leaves the jobs built but not started: tests run them by hand.
	NoJobs bool
}

// Sidecar is one sidecar. Its components are exported for tests and for
// the process's signal handling; they must not be replaced.
type Sidecar struct {
	Config   Config
	DB       *sql.DB
	Store    *pgstore.Store
	Loaders  *pgstore.Loaders
	Mirror   *mirror.Mirror
	Jobs     *jobs.Jobs
	Listener *listener.Listener
	Writer   *pgstore.Writer
	Server   *unixsock.Server
	Admin    *admin.Server

	log    hclog.Logger
	opts   Options
	gate   *pgstore.Gate  // loaders' and fetches' share of the pool
	errc   chan error     // the first failure of a running component
	stop   chan struct{}  // closed by Close: ends the sidecar's own goroutines
	wg     sync.WaitGroup // the sidecar's own goroutines
	opened bool           // Open ran: Close reports the stop
	closed bool
}

// New builds a sidecar from cfg: the Postgres pool (not connected yet) and
// every component; nothing runs until Open.
func New(cfg Config, opts Options) (*Sidecar, error) {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	s := &Sidecar{Config: cfg, log: opts.Logger, opts: opts, errc: make(chan error, 1), stop: make(chan struct{})}
	db, gate, err := OpenDB(cfg)
	if err != nil {
		return nil, err
	}
	s.DB, s.gate = db, gate
	s.log.Debug("Postgres pool", "max_conns", cfg.MaxDBConns, "loader_and_fetch_conns", gate.Cap())
	if err := s.build(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Open starts the sidecar: the admin server binds first (a bad --http fails
// before anything is served), then the socket answers LOADING while Postgres
// is reached (with backoff: a sidecar usually starts beside its database),
// migrated if asked and checked, and the mirror loads in the background.
// Open returns once the sidecar is syncing; Mirror.Ready tells when the
// first load completed. A cancelled ctx while Postgres is unreachable
// returns ctx's error. Whatever Open returns, Close stops what it started.
func (s *Sidecar) Open(ctx context.Context) error {
	s.log.Info("starting", "version", s.opts.Version, "socket", s.Config.Socket)
	s.opened = true
	if err := s.openServers(); err != nil {
		return err
	}
	if err := s.connect(ctx); err != nil {
		return err
	}
	if err := s.prepare(ctx); err != nil {
		return err
	}
	return s.startSync()
}

// Err receives the failure of a component that cannot go on (LISTEN
// refused, the socket or the admin server failed); the process should stop.
func (s *Sidecar) Err() <-chan error { return s.errc }

// RequestResync asks for a full reload of the mirror, as SIGHUP and PGMIRROR.RESYNC do.
func (s *Sidecar) RequestResync() {
	s.log.Info("resync requested")
	s.Mirror.RequestResync("SIGHUP")
}

// Close stops the sidecar and returns every error, joined. The order is
// the reverse of the data flow: the admin server first (probes and scrapes
// stop before the components they read), then the socket server (in-flight
// commands finish and answer, the socket is removed), the jobs (the last
// access times are flushed), the writer, the listener, the mirror, and the
// pool last. Every component's Close is safe whether or not it was opened.
// Safe to call twice.
func (s *Sidecar) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.stop)
	errs := []error{
		s.Admin.Close(),
		s.Server.Close(),
		s.Jobs.Close(),
		s.Writer.Close(),
		s.Listener.Close(),
		s.Mirror.Close(),
	}
	// Closing the pool says goodbye on every idle connection; one the server
	// already dropped (a failover, a restart) answers with a broken pipe,
	// which is no failure of the stop.
	if err := s.DB.Close(); err != nil {
		s.log.Debug("closing the Postgres pool", "error", s.Config.Redact(err.Error()))
	}
	s.wg.Wait()
	if s.opened {
		s.log.Info("stopped")
	}
	return errors.Join(errs...)
}
