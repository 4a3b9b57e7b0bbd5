// Package sidecartest runs whole pgmirror sidecars in a test process: the
// mirror, its listener, the writer, the loaders, the jobs and the socket
// server, wired as main wires them, on a real Postgres.
package sidecartest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
	"pgmirror/jobs"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
	"pgmirror/unixsock"
)

// Config adjusts a sidecar; zero fields take test-friendly defaults.
type Config struct {
	Mirror   mirror.Options
	Jobs     jobs.Config
	NoJobs   bool // do not start the jobs
	Listener func(*listener.Listener)
	Loaders  func(*pgstore.Loaders)
	// MaxDBConns limits the pool as --max-db-conns does; 0: no limit.
	MaxDBConns int
	// LoaderTimeout is --loader-timeout; 0: the default.
	LoaderTimeout time.Duration
	// MaxValueSize is --max-value-size; 0: the default.
	MaxValueSize int64
}

// Sidecar is one running sidecar.
type Sidecar struct {
	Mirror  *mirror.Mirror
	Store   *pgstore.Store
	Loaders *pgstore.Loaders
	Jobs    *jobs.Jobs
	Writer  *pgstore.Writer
	Server  *unixsock.Server
	Socket  string
	// Client is a go-redis client on Socket.
	Client *redis.Client
	stop   func()
}

// Start runs a sidecar on dsn (a migrated database) and waits until it is
// ready; it stops when the test ends (or at Stop).
func Start(t testing.TB, dsn string, cfg Config) *Sidecar {
	t.Helper()
	db := testdb.Open(t, dsn)
	var gate *pgstore.Gate
	if cfg.MaxDBConns > 0 {
		var err error
		if gate, err = pgstore.LimitPool(db, cfg.MaxDBConns, 1); err != nil {
			t.Fatal(err)
		}
	}
	s := &Sidecar{Store: pgstore.New(db, nil)}
	s.Store.Gate, s.Store.GateWait = gate, cfg.LoaderTimeout
	s.Loaders = pgstore.NewLoaders(db, nil)
	s.Loaders.Gate, s.Loaders.Timeout = gate, cfg.LoaderTimeout
	if cfg.Loaders != nil {
		cfg.Loaders(s.Loaders)
	}
	opts := cfg.Mirror
	if opts.SentinelWait == 0 {
		opts.SentinelWait = 5 * time.Second
	}
	opts.Loader = s.Loaders
	m, err := mirror.New(s.Store, opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Mirror = m
	s.Jobs = jobs.New(s.Store, s.Loaders, m, cfg.Jobs)
	s.Writer = pgstore.NewWriter(db, m, pgstore.WriterOptions{Timeout: 5 * time.Second})
	dir, err := os.MkdirTemp("", "pgm")
	if err != nil {
		t.Fatal(err)
	}
	s.Socket = filepath.Join(dir, "s.sock")
	s.Server = &unixsock.Server{Socket: s.Socket, Mirror: m, Writer: s.Writer, MaxValueSize: cfg.MaxValueSize}
	m.Handle(s.Server.HandleMirrorEvent)
	if err := s.Server.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Server.Serve() }()
	ctx := context.Background()
	if err := s.Loaders.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	m.Open()
	l := &listener.Listener{DSN: dsn, Sink: m, PingInterval: 500 * time.Millisecond, MaxReconnect: 500 * time.Millisecond}
	if cfg.Listener != nil {
		cfg.Listener(l)
	}
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(lctx) }()
	if !cfg.NoJobs {
		if err := s.Jobs.Open(); err != nil {
			t.Fatal(err)
		}
	}
	s.Client = redis.NewClient(&redis.Options{Network: "unix", Addr: s.Socket, PoolSize: 64, MaxRetries: -1,
		ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second})
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		s.Client.Close()
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		defer scancel()
		if err := s.Server.Shutdown(sctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-served
		s.Jobs.Close()
		s.Writer.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("listener: %v", err)
		}
		m.Close()
		os.RemoveAll(dir)
	}
	t.Cleanup(s.stop)
	select {
	case <-m.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("sidecar not ready within 30s")
	}
	return s
}

// Stop stops the sidecar now (it is also stopped when the test ends).
func (s *Sidecar) Stop() { s.stop() }

// Eventually polls cond until it holds or fails the test at the deadline.
func Eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
