// Package admin is pgmirror's admin HTTP server (--http): /healthz (the
// process is alive), /readyz (the mirror may be served) and /metrics
// (Prometheus).
//
// Metrics are read from the components' own cumulative counters at scrape
// time (a custom prometheus.Collector), so nothing is counted twice; only
// what has no counter of its own is observed as it happens: reload
// durations and resyncs (ObserveReload, which New registers for the
// mirror's reload events), propagation lag (ObserveLag, which New
// registers with the listener) and write-batch durations
// (ObserveWriteBatch, which New registers with the writer). Nothing is read
// from Postgres at scrape time: the notification queue's usage is what the
// jobs last read in the background, so a scrape answers at once even when
// Postgres hangs.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"pgmirror/jobs"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
	"pgmirror/unixsock"
)

// Timeouts of the HTTP server: probes and scrapes are small requests, and a
// slow or stuck client must not hold a connection for long.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
)

// DefaultShutdownTimeout bounds how long a probe or scrape in flight may
// delay Close.
const DefaultShutdownTimeout = 2 * time.Second

// Config configures the admin server.
type Config struct {
	// Addr is the host:port to listen on (--http); "" disables the HTTP
	// server: Open and Close do nothing, the instruments still work.
	Addr string
	// Logger; nil logs nothing. It never receives a DSN: the server knows none.
	Logger hclog.Logger
	// MaxStaleness is how long the listener may be down before the sidecar
	// stops being ready (--max-staleness); 0 means not at all.
	MaxStaleness time.Duration
	// MaxMemory is the mirror's byte budget (--max-memory), exported as
	// pgmirror_max_memory_bytes; 0 leaves it out.
	MaxMemory int64
	// Version is reported by pgmirror_build_info.
	Version string
	// ShutdownTimeout bounds how long Close waits for requests in flight;
	// 0 means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
}

// Sources are the components the admin server reads at scrape time and
// observes. Every source is optional: a nil source leaves its metrics out,
// except Mirror, without which the server is never ready.
type Sources struct {
	// Mirror reports the mirror's state and counters; the server registers
	// its reload observer for the mirror's events (*mirror.Mirror).
	Mirror MirrorSource
	// Listener reports the listener's counters; the server registers its
	// lag observer with it (*listener.Listener).
	Listener ListenerSource
	// Socket reports the socket server's counters (*unixsock.Server).
	Socket SocketSource
	// Commands reports the calls of each client command ((*unixsock.Server).CommandCalls).
	Commands func() map[string]int64
	// Writer reports the group-commit writer's counters (*pgstore.Writer).
	Writer WriterSource
	// Jobs reports the background jobs' counters (*jobs.Jobs).
	Jobs JobsSource
}

// MirrorSource is what the server reads of the mirror, and where it
// registers for the mirror's events.
type MirrorSource interface {
	Stats() mirror.Stats
	Handle(h func(mirror.Event))
}

// ListenerSource is what the server reads of the listener, and where it
// registers ObserveLag.
type ListenerSource interface {
	Stats() listener.Stats
	HandleLag(func(time.Duration))
}

// SocketSource is what the server reads of the socket server.
type SocketSource interface{ Stats() unixsock.Stats }

// WriterSource is what the server reads of the writer, and where it
// registers ObserveWriteBatch.
type WriterSource interface {
	Stats() pgstore.WriterStats
	HandleBatch(func(pgstore.BatchDone))
}

// JobsSource is what the server reads of the background jobs.
type JobsSource interface{ Stats() jobs.Stats }

var (
	_ MirrorSource   = (*mirror.Mirror)(nil)
	_ ListenerSource = (*listener.Listener)(nil)
	_ SocketSource   = (*unixsock.Server)(nil)
	_ WriterSource   = (*pgstore.Writer)(nil)
	_ JobsSource     = (*jobs.Jobs)(nil)
)

// Server is the admin HTTP server. New builds it (last, from the
// components it reads) without starting it; Open binds Addr and serves;
// Close stops it. ObserveReload and ObserveLag work from New on, with or
// without HTTP.
type Server struct {
	cfg     Config
	src     Sources
	log     hclog.Logger
	reg     *prometheus.Registry
	inst    *instruments
	handler http.Handler
	errc    chan error // Err

	mu     sync.Mutex
	ln     net.Listener
	srv    *http.Server
	opened bool
	closed bool
	wg     sync.WaitGroup // the serve goroutine

	readyMu   sync.Mutex
	lastReady *Status // the last readiness /readyz answered, to log changes
}

// New builds the admin server over its sources and registers its
// observers with them: ObserveLag with the listener, ObserveWriteBatch
// with the writer and ObserveReload for the mirror's reload events (so New
// must run before they open).
func New(cfg Config, src Sources) *Server {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	s := &Server{cfg: cfg, src: src, log: cfg.Logger, inst: newInstruments(),
		reg: prometheus.NewRegistry(), errc: make(chan error, 1)}
	s.reg.MustRegister(s.inst.collectors()...)
	s.reg.MustRegister(&collector{s: s})
	registerRuntimeCollectors(s.reg)
	s.handler = s.newHandler()
	if src.Listener != nil {
		src.Listener.HandleLag(s.ObserveLag)
	}
	if src.Writer != nil {
		src.Writer.HandleBatch(s.ObserveWriteBatch)
	}
	if src.Mirror != nil {
		src.Mirror.Handle(s.handleMirrorEvent)
	}
	return s
}

// handleMirrorEvent passes the ends of reloads to ObserveReload.
func (s *Server) handleMirrorEvent(ev mirror.Event) {
	if ev.Kind == mirror.KindReload {
		s.ObserveReload(ev.Reason, ev.Reload, ev.Err)
	}
}

// Registry is the server's private Prometheus registry (Go, process and
// pgmirror metrics).
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Handler serves /healthz, /readyz and /metrics.
func (s *Server) Handler() http.Handler { return s.handler }

// Open binds Addr, so a bad or taken address fails at start, before
// anything is served, and serves on it in the background until Close. It
// does nothing when Addr is "".
func (s *Server) Open() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("admin HTTP: server is closed")
	case s.opened:
		return errors.New("admin HTTP: server is already open")
	}
	s.opened = true
	if s.cfg.Addr == "" {
		s.log.Info("admin HTTP disabled (--http \"\")")
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("admin HTTP: listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          s.log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}),
	}
	s.log.Info("admin HTTP listening", "addr", ln.Addr().String(), "endpoints", "/healthz /readyz /metrics")
	s.wg.Add(1)
	go s.serve(s.srv, ln)
	return nil
}

// serve serves until Close; a failure is reported on Err.
func (s *Server) serve(srv *http.Server, ln net.Listener) {
	defer s.wg.Done()
	err := srv.Serve(ln)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("admin HTTP stopped", "error", err)
		s.errc <- fmt.Errorf("admin HTTP: %w", err)
	}
}

// Err receives the error that stopped the HTTP server, at most one.
// Nothing is sent when Close stops it.
func (s *Server) Err() <-chan error { return s.errc }

// ListenAddr is the bound address, e.g. "127.0.0.1:41234" after Open on
// port 0, or "" before Open and when disabled.
func (s *Server) ListenAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops accepting and waits (up to ShutdownTimeout) for requests in
// flight. It is safe to call when Open never ran or failed, and twice.
func (s *Server) Close() error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	srv := s.srv
	s.mu.Unlock()
	if already || srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(ctx)
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("admin HTTP shutdown: %w", err)
	}
	s.log.Debug("admin HTTP stopped")
	return nil
}

// newHandler routes the endpoints; anything else is 404, anything but GET
// and HEAD 405.
func (s *Server) newHandler() http.Handler {
	metrics := promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog:          promLogger{s.log},
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", metrics)
	return s.logRequests(mux)
}

// healthz answers 200 while the process runs and serves HTTP.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 when Readiness says ready, else 503, with the status as JSON.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	st := s.Readiness()
	s.logReadinessChange(st)
	code := http.StatusOK
	if !st.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, st)
}

// Status is the body of /readyz.
type Status struct {
	Ready bool `json:"ready"`
	// State is the mirror's state: loading, ready or stale (listener down);
	// "starting" before the mirror exists.
	State string `json:"state"`
	// Reason says why the sidecar is not ready; empty when it is.
	Reason              string  `json:"reason,omitempty"`
	Entries             int64   `json:"entries"`
	ListenerConnected   bool    `json:"listener_connected"`
	ListenerDownSeconds float64 `json:"listener_down_seconds,omitempty"`
	MaxStalenessSeconds float64 `json:"max_staleness_seconds"`
}

// Readiness evaluates the readiness rule now.
func (s *Server) Readiness() Status {
	if s.src.Mirror == nil {
		return Status{State: "starting", Reason: "the mirror is not created yet",
			MaxStalenessSeconds: s.cfg.MaxStaleness.Seconds()}
	}
	return Readiness(s.src.Mirror.Stats(), s.cfg.MaxStaleness, time.Now())
}

// Readiness is the readiness rule: ready iff the mirror has completed its
// first load, and the listener is connected or has been down for less than
// maxStaleness.
func Readiness(st mirror.Stats, maxStaleness time.Duration, now time.Time) Status {
	out := Status{
		State:               stateOf(st).String(),
		Entries:             st.Entries,
		ListenerConnected:   st.Connected,
		MaxStalenessSeconds: maxStaleness.Seconds(),
	}
	if st.State == mirror.StateLoading {
		out.Reason = "first load not complete"
		return out
	}
	if st.Connected {
		out.Ready = true
		return out
	}
	if st.DownSince.IsZero() {
		// Loaded without the listener ever reporting itself connected.
		out.Reason = "listener not connected"
		return out
	}
	down := now.Sub(st.DownSince)
	out.ListenerDownSeconds = down.Seconds()
	if down < maxStaleness {
		out.Ready = true
		return out
	}
	out.Reason = fmt.Sprintf("listener down for %s, longer than --max-staleness %s",
		down.Round(time.Millisecond), maxStaleness)
	return out
}

// stateOf is the mirror's state as its other fields say: Stats reads State
// and Connected one after the other, so a reconnect between the two can
// pair StateStale with Connected.
func stateOf(st mirror.Stats) mirror.State {
	switch {
	case st.State == mirror.StateLoading:
		return mirror.StateLoading
	case st.Connected:
		return mirror.StateReady
	}
	return mirror.StateStale
}

// logReadinessChange logs when the answer of /readyz changes.
func (s *Server) logReadinessChange(st Status) {
	s.readyMu.Lock()
	prev := s.lastReady
	s.lastReady = &st
	s.readyMu.Unlock()
	switch {
	case prev != nil && prev.Ready == st.Ready && prev.State == st.State:
	case st.Ready:
		s.log.Info("readiness: ready", "state", st.State, "entries", st.Entries)
	default:
		s.log.Warn("readiness: not ready", "state", st.State, "reason", st.Reason)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// logRequests logs every request at debug level (probes come every few seconds).
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.log.IsDebug() {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", rec.code,
			"took", time.Since(start).Round(time.Microsecond), "remote", r.RemoteAddr)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// promLogger passes promhttp's errors (a failed scrape) to hclog.
type promLogger struct{ log hclog.Logger }

func (l promLogger) Println(v ...any) { l.log.Error("metrics scrape", "error", fmt.Sprint(v...)) }
