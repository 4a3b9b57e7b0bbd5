// Package admin is pgmirror's admin HTTP server (--http): /healthz (the
// process is alive), /readyz (the mirror may be served) and /metrics
// (Prometheus).
//
// Metrics are read from the components' own cumulative counters at scrape
// time (a custom prometheus.Collector), so nothing is counted twice; only
// what has no counter of its own is observed as it happens: reload
// durations and resyncs (ObserveReload, for the mirror's reload events) and
// propagation lag (ObserveLag, for listener.Listener.OnLag).
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

// JobStats are the cumulative counters of the background jobs (access
// tracking, loaders, refresh, cleanup).
type JobStats struct {
	LoaderRuns       int64            // loader computations (reads and refreshes)
	LoaderFailures   int64            // loader computations that failed
	AccessFlushes    int64            // batched last_accessed_at updates run
	AccessRows       int64            // rows whose last_accessed_at those updates advanced
	Refreshes        map[string]int64 // refreshes by result, e.g. "ok", "removed", "fenced", "error"
	CleanupDeletions int64            // rows the cleanup deleted
}

// Server is the admin HTTP server. Set the fields, then Listen, Serve and
// finally Shutdown. Logger must be set before any method is called; the
// sources may be set later, but not once Serve has been called.
// ObserveReload and ObserveLag may be used before Listen (and without it,
// when the HTTP server is disabled).
//
// Every source is optional: a nil source leaves its metrics out, except
// Mirror, without which the server is never ready.
type Server struct {
	// Addr is the host:port to listen on (--http); "" disables the server:
	// Listen, Serve and Shutdown do nothing.
	Addr string
	// Logger; nil logs nothing. It never receives a DSN: the server knows none.
	Logger hclog.Logger
	// MaxStaleness is how long the listener may be down before the sidecar
	// stops being ready (--max-staleness); 0 means not at all.
	MaxStaleness time.Duration
	// Version is reported by pgmirror_build_info.
	Version string

	// Mirror reports the mirror's state and counters (mirror.Mirror.Stats).
	Mirror func() mirror.Stats
	// Listener reports the listener's counters (listener.Listener.Stats).
	Listener func() listener.Stats
	// Socket reports the socket server's counters (unixsock.Server.Stats).
	Socket func() unixsock.Stats
	// Commands reports the calls of each client command (unixsock.CommandCalls).
	Commands func() map[string]int64
	// Writer reports the group-commit writer's counters (pgstore.Writer.Stats).
	Writer func() pgstore.WriterStats
	// Jobs reports the background jobs' counters.
	Jobs func() JobStats

	initOnce sync.Once
	reg      *prometheus.Registry
	inst     *instruments
	handler  http.Handler
	log      hclog.Logger

	mu     sync.Mutex
	ln     net.Listener
	srv    *http.Server
	closed bool

	readyMu   sync.Mutex
	lastReady *Status // the last readiness /readyz answered, to log changes
}

// init builds the registry and the instruments, once; safe for concurrent use.
func (s *Server) init() {
	s.initOnce.Do(func() {
		s.log = s.Logger
		if s.log == nil {
			s.log = hclog.NewNullLogger()
		}
		s.inst = newInstruments()
		s.reg = prometheus.NewRegistry()
		s.reg.MustRegister(s.inst.collectors()...)
		s.reg.MustRegister(&collector{s: s})
		registerRuntimeCollectors(s.reg)
		s.handler = s.newHandler()
	})
}

// Registry is the server's private Prometheus registry (Go, process and
// pgmirror metrics).
func (s *Server) Registry() *prometheus.Registry {
	s.init()
	return s.reg
}

// Handler serves /healthz, /readyz and /metrics; Serve uses it.
func (s *Server) Handler() http.Handler {
	s.init()
	return s.handler
}

// Listen binds Addr, so a bad or taken address fails at start, before
// anything is served. It does nothing when Addr is "".
func (s *Server) Listen() error {
	s.init()
	if s.Addr == "" {
		s.log.Info("admin HTTP disabled (--http \"\")")
		return nil
	}
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return fmt.Errorf("admin HTTP: listen on %s: %w", s.Addr, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		ln.Close()
		return errors.New("admin HTTP: server is shut down")
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
	return nil
}

// ListenAddr is the bound address, e.g. "127.0.0.1:41234" after Listen on
// port 0, or "" before Listen and when disabled.
func (s *Server) ListenAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Serve serves on the listener Listen bound until Shutdown, and then
// returns nil; it returns at once when the server is disabled.
func (s *Server) Serve() error {
	s.mu.Lock()
	srv, ln := s.srv, s.ln
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	if err != nil {
		s.log.Error("admin HTTP stopped", "error", err)
		return fmt.Errorf("admin HTTP: %w", err)
	}
	return nil
}

// Shutdown stops accepting and waits (up to ctx) for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	srv, ln := s.srv, s.ln
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	ln.Close() // in case Serve never ran; closing twice is harmless
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
	if s.Mirror == nil {
		return Status{State: "starting", Reason: "the mirror is not created yet",
			MaxStalenessSeconds: s.MaxStaleness.Seconds()}
	}
	return Readiness(s.Mirror(), s.MaxStaleness, time.Now())
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
