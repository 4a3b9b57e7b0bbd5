package sidecar

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"pgmirror/admin"
	"pgmirror/jobs"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
	"pgmirror/unixsock"
)

// Timings of stopping.
const (
	// shutdownTimeout bounds how long in-flight commands may take to finish on SIGTERM.
	shutdownTimeout = 10 * time.Second
	// adminShutdownTimeout bounds how long a scrape or probe in flight may delay the stop.
	adminShutdownTimeout = 2 * time.Second
)

// OpenDB creates the pool Config describes, limited to --max-db-conns
// connections of which loaders and fetches may use all but those the
// writer, reloads and jobs keep (the gate); it does not connect, so it
// fails only on a malformed DSN.
func OpenDB(cfg Config) (*sql.DB, *pgstore.Gate, error) {
	db, err := sql.Open("postgres", cfg.DSN)
	if err != nil {
		return nil, nil, fmt.Errorf("open Postgres (%s): %s", cfg.DSNForLogs(), cfg.Redact(err.Error()))
	}
	gate, err := pgstore.LimitPool(db, cfg.MaxDBConns, cfg.WriteInFlight)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("--max-db-conns: %w", err)
	}
	// The writer's batches run on a pool of their own (WriterOptions.DSN:
	// one round trip a batch), within the same budget.
	db.SetMaxOpenConns(cfg.MaxDBConns - max(cfg.WriteInFlight, 1))
	return db, gate, nil
}

// build constructs every component, each given what it depends on; the
// jobs and the admin server register here with the mirror, and the admin
// server with the listener (the socket server registers with the mirror
// when it opens, before the mirror does). Nothing runs yet.
func (s *Sidecar) build() error {
	c, tune := s.Config, s.opts.Tune
	s.Store = pgstore.New(s.DB, s.log.Named("store"))
	s.Store.Gate, s.Store.GateWait = s.gate, c.LoaderTimeout
	s.Loaders = pgstore.NewLoaders(s.DB, s.log.Named("loaders"))
	s.Loaders.Gate, s.Loaders.Timeout = s.gate, c.LoaderTimeout
	if tune.Loaders != nil {
		tune.Loaders(s.Loaders)
	}
	mir, err := mirror.New(s.Store, s.mirrorOptions())
	if err != nil {
		return err
	}
	s.Mirror = mir
	s.Jobs = jobs.New(s.Store, s.Loaders, mir, s.jobsConfig())
	s.Listener = &listener.Listener{DSN: c.ListenDSN, Sink: mir, Logger: s.log.Named("listener"),
		Unsigned: c.UnsignedPayloads}
	if tune.Listener != nil {
		tune.Listener(s.Listener)
	}
	wopts := pgstore.WriterOptions{
		DSN:          c.DSN,
		MaxValueSize: c.MaxValueSize,
		InFlight:     c.WriteInFlight,
		Linger:       c.WriteLinger,
		Log:          s.log.Named("writer"),
	}
	if tune.Writer != nil {
		tune.Writer(&wopts)
	}
	s.Writer = pgstore.NewWriter(s.DB, mir, wopts)
	s.Server = &unixsock.Server{
		Socket:               c.Socket,
		SocketMode:           c.SocketMode,
		MaxClients:           c.MaxClients,
		SubscriberBuffer:     c.SubscriberBuffer,
		TrackingTableMaxKeys: c.TrackingTableMaxKeys,
		MaxValueSize:         c.MaxValueSize,
		MaxClientBuffers:     c.ClientBuffers(),
		OutputTimeout:        c.ClientOutputTimeout,
		LoopSpin:             loopSpin(c.LoopSpin),
		Namespace:            c.Namespace,
		NoFlush:              c.NoFlush,
		Password:             c.RequirePass,
		Mirror:               mir,
		Writer:               s.Writer,
		Channels:             s.Store,
		Logger:               s.log.Named("socket"),
		Info:                 s.Listener.Info,
		Version:              s.opts.Version,
		ShutdownTimeout:      shutdownTimeout,
		ScriptTimeout:        c.ScriptTimeout,
	}
	if tune.Server != nil {
		tune.Server(s.Server)
	}
	s.Admin = admin.New(admin.Config{
		Addr:            c.HTTPAddr,
		Logger:          s.log.Named("http"),
		MaxStaleness:    c.MaxStaleness,
		MaxMemory:       c.MaxMemory,
		Version:         s.opts.Version,
		ShutdownTimeout: adminShutdownTimeout,
	}, admin.Sources{Mirror: mir, Listener: s.Listener, Socket: s.Server, Commands: s.Server.CommandCalls,
		Writer: s.Writer, Jobs: s.Jobs})
	return nil
}

// mirrorOptions are the mirror's options for Config.
func (s *Sidecar) mirrorOptions() mirror.Options {
	c := s.Config
	o := mirror.Options{
		MaxMemory:      c.MaxMemory,
		ManageGC:       true,
		MaxStaleness:   max(c.MaxStaleness, time.Nanosecond), // 0: stale at once (0 means "default" to mirror)
		StaleError:     c.StaleReads == StaleReadsError,
		ReloadInterval: c.ReloadInterval,
		Loader:         s.Loaders,
		ServeStale:     c.ServeStale,
		Logger:         s.log.Named("mirror"),
	}
	if s.opts.Tune.Mirror != nil {
		s.opts.Tune.Mirror(&o)
	}
	return o
}

// jobsConfig is the jobs' configuration for Config.
func (s *Sidecar) jobsConfig() jobs.Config {
	c := s.Config
	j := jobs.Config{
		AccessFlushInterval: c.AccessFlushInterval,
		RefreshInterval:     c.RefreshInterval,
		RefreshAhead:        c.RefreshAhead,
		RefreshWindow:       c.RefreshWindow,
		RefreshLockStale:    c.RefreshLockStale,
		CleanupInterval:     c.CleanupInterval,
		Retention:           c.Retention,
		ExpiredGrace:        c.ExpiredGrace,
		Logger:              s.log.Named("jobs"),
	}
	if s.opts.Tune.Jobs != nil {
		s.opts.Tune.Jobs(&j)
	}
	return j
}

// openServers binds the admin server, then opens the writer and the
// socket, whose clients get LOADING until the mirror has loaded.
func (s *Sidecar) openServers() error {
	if err := s.Admin.Open(); err != nil {
		return err
	}
	s.watch(s.Admin.Err())
	if err := s.Writer.Open(); err != nil {
		return err
	}
	if err := s.Server.Open(); err != nil {
		return err
	}
	s.watch(s.Server.Err())
	return nil
}

// prepare migrates if asked, checks that the database is a primary with
// pgmirror's schema, and reads the loaders.
func (s *Sidecar) prepare(ctx context.Context) error {
	if s.Config.Migrate {
		res, err := Migrate(ctx, s.DB, s.opts.TriggersSQL, s.Config, s.log)
		if err != nil {
			return err
		}
		for _, file := range res.Applied {
			s.log.Info("migration applied", "file", file)
		}
		s.log.Info("schema ready", "migrations_applied", len(res.Applied), "triggers_updated", res.TriggersUpdated,
			"privilege_fixes", len(res.Secured))
	}
	if err := s.Store.CheckPrimary(ctx); err != nil {
		return err
	}
	if err := s.Store.CheckSchema(ctx); err != nil {
		return err
	}
	return s.Loaders.Reload(ctx)
}

// startSync opens the mirror, the listener (which LISTENs first and then
// asks the mirror to load) and the jobs.
func (s *Sidecar) startSync() error {
	if err := s.Mirror.Open(); err != nil {
		return err
	}
	if err := s.Listener.Open(); err != nil {
		return err
	}
	s.watch(s.Listener.Err())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-s.Mirror.Ready():
			st := s.Mirror.Stats()
			s.log.Info("ready", "entries", st.Entries, "load_took", st.LastReloadTook.Round(time.Millisecond))
		case <-s.stop:
		}
	}()
	if s.opts.Tune.NoJobs {
		return nil
	}
	return s.Jobs.Open()
}

// watch passes a component's failure to Err.
func (s *Sidecar) watch(errc <-chan error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case err := <-errc:
			select {
			case s.errc <- err:
			default: // the first failure is enough to stop
			}
		case <-s.stop:
		}
	}()
}

// loopSpin is the socket server's LoopSpin for --loop-spin: 0 (never) is
// negative there, where 0 is its default.
func loopSpin(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
