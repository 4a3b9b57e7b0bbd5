// Package sidecartest runs whole pgmirror sidecars in a test process, built
// and opened by package sidecar exactly as the binary does, on a real Postgres.
package sidecartest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"pgmirror/jobs"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
	"pgmirror/sidecar"
	"pgmirror/unixsock"
)

// Config adjusts a sidecar; zero fields take test-friendly defaults.
type Config struct {
	// Mirror replaces the mirror's options (the wiring's hooks stay); zero
	// fields take the mirror's defaults.
	Mirror mirror.Options
	// Jobs replaces the jobs' configuration; zero fields take the defaults.
	Jobs   jobs.Config
	NoJobs bool // do not start the jobs
	// Listener and Loaders adjust those components before they open.
	Listener func(*listener.Listener)
	Loaders  func(*pgstore.Loaders)
	// MaxDBConns limits the pool as --max-db-conns does; 0: practically no limit.
	MaxDBConns int
	// LoaderTimeout is --loader-timeout; 0: the default.
	LoaderTimeout time.Duration
	// MaxValueSize is --max-value-size; 0: the default.
	MaxValueSize int64
	// HTTPAddr is --http; "" (the default here) disables the admin server.
	HTTPAddr string
	// Server adjusts the socket server before it opens.
	Server func(*unixsock.Server)
	// WriteTimeout bounds one write batch; 0: 5 s.
	WriteTimeout time.Duration
	// Logger receives the sidecar's logs; nil: none.
	Logger hclog.Logger
	// Sidecar adjusts the rest of the configuration, last.
	Sidecar func(*sidecar.Config)
}

// unlimitedConns stands for "no limit" on the pool.
const unlimitedConns = 10000

// Sidecar is one running sidecar.
type Sidecar struct {
	*sidecar.Sidecar
	Socket string
	// Client is a go-redis client on Socket.
	Client *redis.Client

	openDone   chan struct{} // closed when Open returned
	openResult error         // what Open returned, once openDone is closed
	stop       func()
}

// Start runs a sidecar on dsn (a migrated database) and waits until it is
// ready; it stops when the test ends (or at Stop).
func Start(t testing.TB, dsn string, cfg Config) *Sidecar {
	t.Helper()
	s := StartNoWait(t, dsn, cfg)
	s.WaitReady(t, 30*time.Second)
	return s
}

// StartNoWait builds a sidecar and opens it in the background, as the
// binary does, without waiting for Postgres or the first load.
func StartNoWait(t testing.TB, dsn string, cfg Config) *Sidecar {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // after the stop: cleanups run last first
	s := &Sidecar{Socket: filepath.Join(dir, "s.sock"), openDone: make(chan struct{})}
	sc, err := sidecar.New(config(dsn, s.Socket, cfg), sidecar.Options{Logger: cfg.Logger, Tune: tuning(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	s.Sidecar = sc
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		s.openResult = sc.Open(ctx)
		close(s.openDone)
	}()
	s.Client = redis.NewClient(&redis.Options{Network: "unix", Addr: s.Socket, PoolSize: 64, MaxRetries: -1,
		ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second})
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		s.Client.Close()
		cancel()
		if err := s.openErr(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("open: %v", err)
		}
		if err := sc.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		select {
		case err := <-sc.Err():
			t.Errorf("sidecar failed: %v", err)
		default:
		}
	}
	t.Cleanup(s.stop)
	return s
}

// openErr waits for Open to return and returns its error.
func (s *Sidecar) openErr() error {
	<-s.openDone
	return s.openResult
}

// WaitReady waits until the mirror completed its first load, and fails the
// test if Open failed, a component failed, or timeout passed.
func (s *Sidecar) WaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	select {
	case <-s.openDone:
		if s.openResult != nil {
			t.Fatalf("open: %v", s.openResult)
		}
	case <-deadline:
		t.Fatalf("sidecar not opened within %v", timeout)
	}
	select {
	case <-s.Mirror.Ready():
	case err := <-s.Err():
		t.Fatalf("sidecar failed: %v", err)
	case <-deadline:
		t.Fatalf("sidecar not ready within %v: %+v", timeout, s.Mirror.Stats())
	}
}

// config is the sidecar's configuration for cfg.
func config(dsn, socket string, cfg Config) sidecar.Config {
	c := sidecar.DefaultConfig()
	c.DSN, c.ListenDSN, c.Socket, c.HTTPAddr = dsn, dsn, socket, cfg.HTTPAddr
	c.MaxDBConns = unlimitedConns
	if cfg.MaxDBConns > 0 {
		c.MaxDBConns = cfg.MaxDBConns
	}
	if cfg.LoaderTimeout > 0 {
		c.LoaderTimeout = cfg.LoaderTimeout
	}
	if cfg.MaxValueSize > 0 {
		c.MaxValueSize = cfg.MaxValueSize
	}
	if cfg.Sidecar != nil {
		cfg.Sidecar(&c)
	}
	return c
}

// tuning applies cfg's component settings over the wiring's.
func tuning(cfg Config) sidecar.Tuning {
	return sidecar.Tuning{
		Mirror: func(o *mirror.Options) {
			wired := *o
			*o = cfg.Mirror
			o.Loader, o.Logger = wired.Loader, wired.Logger
			if o.SentinelWait == 0 {
				o.SentinelWait = 5 * time.Second
			}
		},
		Jobs: func(j *jobs.Config) { *j = cfg.Jobs },
		Listener: func(l *listener.Listener) {
			l.PingInterval, l.MaxReconnect = 500*time.Millisecond, 500*time.Millisecond
			if cfg.Listener != nil {
				cfg.Listener(l)
			}
		},
		Loaders: cfg.Loaders,
		Writer: func(w *pgstore.WriterOptions) {
			w.Timeout = 5 * time.Second
			if cfg.WriteTimeout > 0 {
				w.Timeout = cfg.WriteTimeout
			}
		},
		Server: cfg.Server,
		NoJobs: cfg.NoJobs,
	}
}

// Stop stops the sidecar now (it is also stopped when the test ends).
func (s *Sidecar) Stop() { s.stop() }
