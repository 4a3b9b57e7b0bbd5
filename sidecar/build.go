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

// openDB creates the pool, limited to --max-db-conns connections of which
// loaders and fetches may use all but those the writer, reloads and jobs
// keep; it does not connect, so it fails only on a malformed DSN.
func (s *Sidecar) openDB() error {
	db, gate, err := OpenDB(s.Config)
	if err != nil {
		return err
	}
	s.DB, s.gate = db, gate
	s.started("postgres pool", db.Close)
	s.log.Debug("Postgres pool", "max_conns", s.Config.MaxDBConns, "loader_and_fetch_conns", gate.Cap())
	return nil
}

// OpenDB creates the pool Config describes, with the share of it loaders
// and fetches may use; it does not connect.
func OpenDB(cfg Config) (*sql.DB, *pgstore.Gate, error) {
	db, err := sql.Open("postgres", cfg.DSN)
	if err != nil {
		return nil, nil, fmt.Errorf("open Postgres (%s): %s", cfg.DSNForLogs(), RedactSecrets(err.Error(), cfg.DSN))
	}
	gate, err := pgstore.LimitPool(db, cfg.MaxDBConns, cfg.WriteInFlight)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("--max-db-conns: %w", err)
	}
	return db, gate, nil
}

// build constructs every component, each given what it depends on, in the
// order data flows; nothing runs yet.
func (s *Sidecar) build() error {
	c, tune := s.Config, s.opts.Tune
	s.Store = pgstore.New(s.DB, s.log.Named("store"))
	s.Store.Gate, s.Store.GateWait = s.gate, c.LoaderTimeout
	s.Loaders = pgstore.NewLoaders(s.DB, nil, s.log.Named("loaders"))
	s.Loaders.Gate, s.Loaders.Timeout = s.gate, c.LoaderTimeout
	if tune.Loaders != nil {
		tune.Loaders(s.Loaders)
	}
	jcfg := jobs.Config{
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
	if tune.Jobs != nil {
		tune.Jobs(&jcfg)
	}
	s.Jobs = jobs.New(s.Store, s.Loaders, nil, jcfg)
	s.Admin = &admin.Server{
		Addr:         c.HTTPAddr,
		Logger:       s.log.Named("http"),
		MaxStaleness: c.MaxStaleness,
		Version:      s.opts.Version,
	}
	var server *unixsock.Server // set below, before anything can change the mirror
	mopts := mirror.Options{
		OnKeyEvent:       func(key, event string) { server.KeyEvent(key, event) },
		MaxMemory:        c.MaxMemory,
		ManageGC:         true,
		MaxStaleness:     max(c.MaxStaleness, time.Nanosecond), // 0: stale at once (0 means "default" to mirror)
		StaleError:       c.StaleReads == StaleReadsError,
		ReloadInterval:   c.ReloadInterval,
		Loader:           s.Loaders,
		ServeStale:       c.ServeStale,
		OnLoadersChanged: s.Jobs.LoadersChanged,
		Logger:           s.log.Named("mirror"),
		OnReload:         s.Admin.ObserveReload,
	}
	if tune.Mirror != nil {
		tune.Mirror(&mopts)
	}
	mir, err := mirror.New(s.Store, mopts)
	if err != nil {
		return err
	}
	s.Mirror = mir
	s.Loaders.Applier = mir
	s.Jobs.Access = mir
	s.Listener = &listener.Listener{DSN: c.ListenDSN, Sink: mir, Logger: s.log.Named("listener"),
		OnLag: s.Admin.ObserveLag, Unsigned: c.UnsignedPayloads}
	if tune.Listener != nil {
		tune.Listener(s.Listener)
	}
	wopts := pgstore.WriterOptions{
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
		Version:          s.opts.Version,
		Socket:           c.Socket,
		SocketMode:       c.SocketMode,
		MaxClients:       c.MaxClients,
		SubscriberBuffer: c.SubscriberBuffer,
		MaxValueSize:     c.MaxValueSize,
		MaxClientBuffers: c.ClientBuffers(),
		OutputTimeout:    c.ClientOutputTimeout,
		Namespace:        c.Namespace,
		Mirror:           mir,
		Writer:           s.Writer,
		Logger:           s.log.Named("socket"),
		Info:             s.listenerInfo,
	}
	server = s.Server
	return nil
}

// openServers binds the admin server, then opens the socket, whose clients
// get LOADING until the mirror has loaded.
func (s *Sidecar) openServers() error {
	a := s.Admin
	a.Mirror = s.Mirror.Stats
	a.Listener = s.Listener.Stats
	a.Socket = s.Server.Stats
	a.Commands = s.Server.CommandCalls
	a.Writer = s.Writer.Stats
	a.Jobs = s.jobStats
	if err := a.Listen(); err != nil {
		return err
	}
	s.started("admin", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), adminShutdownTimeout)
		defer cancel()
		return a.Shutdown(ctx)
	})
	s.serve(a.Serve)
	if err := s.Writer.Open(); err != nil {
		return err
	}
	s.started("writer", s.Writer.Close)
	srv := s.Server
	if err := srv.Listen(); err != nil {
		return err
	}
	s.started("socket", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		return srv.Shutdown(ctx)
	})
	s.serve(srv.Serve)
	return nil
}

// serve runs fn in the background; its error stops the sidecar through Err.
func (s *Sidecar) serve(fn func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := fn(); err != nil {
			s.fail(err)
		}
	}()
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

// startSync starts the mirror's background work, the listener (which
// LISTENs first and then asks the mirror to load) and the jobs.
func (s *Sidecar) startSync() {
	mir := s.Mirror
	mir.Open()
	s.started("mirror", mir.Close)
	lctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.started("listener", func() error {
		cancel()
		<-done
		return nil
	})
	go func() {
		defer close(done)
		if err := s.Listener.Run(lctx); err != nil {
			s.fail(err)
		}
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-mir.Ready():
			st := mir.Stats()
			s.log.Info("ready", "entries", st.Entries, "load_took", st.LastReloadTook.Round(time.Millisecond))
		case <-lctx.Done():
		}
	}()
	if !s.opts.Tune.NoJobs {
		s.Jobs.Start()
	}
	s.started("jobs", s.Jobs.Close)
}
