package sidecar

import (
	"fmt"
	"os"
	"pgmirror/listener"
	"pgmirror/pgstore"
	"pgmirror/unixsock"
	"time"
)

// Defaults of the settings, named so that tests and other packages can refer to them.
const (
	DefaultSocket           = "./pgmirror.sock"
	DefaultSocketMode       = os.FileMode(0o660)
	DefaultNamespace        = ""
	DefaultHTTPAddr         = "127.0.0.1:9187"
	DefaultReloadInterval   = 5 * time.Minute
	DefaultMaxMemory        = 256 * MiB
	DefaultMaxStaleness     = 30 * time.Second
	DefaultStaleReads       = StaleReadsServe
	DefaultMaxClients       = 10000
	DefaultSubscriberBuffer = 4096
	// DefaultTrackingTableMaxKeys is Redis's tracking-table-max-keys default.
	DefaultTrackingTableMaxKeys = unixsock.DefaultTrackingTableMaxKeys
	DefaultMaxClientBuffers     = 0 // auto: see AutoMaxClientBuffers
	DefaultClientOutputTimeout  = 30 * time.Second
	DefaultWriteInFlight        = 1
	DefaultMaxDBConns           = pgstore.DefaultMaxConns
	DefaultLoaderTimeout        = pgstore.DefaultLoaderTimeout
	DefaultScriptTimeout        = unixsock.DefaultScriptTimeout
	// MaxScriptTimeout keeps a script's time limit below the write path's
	// (pgstore.DefaultWriteTimeout), so a batch waiting on a script's keys
	// does not fail for it.
	MaxScriptTimeout           = pgstore.DefaultWriteTimeout - time.Second
	MaxWriteLinger             = 100 * time.Millisecond
	DefaultLoopSpin            = unixsock.DefaultLoopSpin
	MaxLoopSpin                = time.Millisecond
	DefaultMaxValueSize        = 16 * MiB
	DefaultAccessFlushInterval = 5 * time.Second
	DefaultRefreshInterval     = 30 * time.Second
	DefaultRefreshAhead        = 10 * time.Second
	DefaultRefreshWindow       = 7 * Day
	DefaultRefreshLockStale    = 5 * time.Minute
	DefaultServeStale          = time.Duration(0)
	DefaultCleanupInterval     = time.Minute
	DefaultRetention           = 7 * Day
	DefaultExpiredGrace        = time.Hour
	DefaultMigrate             = false
	DefaultAllowSharedSchema   = false
	DefaultUnsignedPayloads    = listener.UnsignedAuto
	DefaultLogLevel            = "info"
	DefaultLogJSON             = false
)

// Units of sizes and durations that are not in the standard library.
const (
	KiB = int64(1) << 10
	MiB = int64(1) << 20
	GiB = int64(1) << 30
	TiB = int64(1) << 40

	Day = 24 * time.Hour
)

// Bounds of the settings; each one keeps a typo from turning into an outage.
const (
	// MinMaxMemory is the smallest mirror budget: below it ristretto's own overhead dominates.
	MinMaxMemory = MiB
	// MaxMaxMemory catches a unit typo (GiB for MiB) before the sidecar claims the node's memory.
	MaxMaxMemory = TiB
	// MaxMaxValueSize is Redis's proto-max-bulk-len default, well under Postgres's 1GB field limit
	// once a value is base64-encoded or escaped on its way through the protocol.
	MaxMaxValueSize = 512 * MiB
	// MaxMaxClients is far above what one sidecar should serve, and keeps file descriptors bounded.
	MaxMaxClients = 1_000_000
	// MinAutoClientBuffers is the least --max-client-buffers=auto gives: the fixed part of the
	// container headroom docs/operations.md asks for (1.5 x --max-memory + 64 MiB).
	MinAutoClientBuffers = 64 * MiB
	// maxSocketPath is sun_path on Linux (108 bytes) minus its terminating NUL.
	maxSocketPath = 107
)

// StaleReads says what reads do once the listener has been down longer than MaxStaleness.
type StaleReads string

// The values of StaleReads.
const (
	// StaleReadsServe keeps serving the mirror, which may miss recent changes.
	StaleReadsServe StaleReads = "serve"
	// StaleReadsError answers reads with an error until the listener is back.
	StaleReadsError StaleReads = "error"
)

// LogLevels are the values --log-level accepts, from most to least verbose.
var LogLevels = []string{"trace", "debug", "info", "warn", "error"}

// Config is every setting of serve and migrate (each a flag and its environment variables), already
// validated, with typed values.
type Config struct {
	// DSN is the Postgres connection string (URL or key=value); empty means libpq's PG* variables and defaults.
	DSN string
	// ListenDSN is the connection for the LISTEN session; it equals DSN unless set, because a pooler cannot LISTEN.
	ListenDSN string
	// Socket is the path of the Unix socket clients connect to.
	Socket string
	// SocketMode is the permission bits of the socket file.
	SocketMode os.FileMode
	// Namespace is a key prefix added and removed transparently; clients only see keys under it.
	Namespace string
	// NoFlush refuses FLUSHDB and FLUSHALL (allowed by default, as in Redis).
	NoFlush bool
	// RequirePass, when set, is the password clients must give (AUTH,
	// HELLO AUTH) before any other command; empty: no authentication.
	RequirePass string
	// HTTPAddr is the host:port of the admin HTTP server; empty disables it.
	HTTPAddr string
	// ReloadInterval is the period of full reloads (jittered by the reloader); 0 disables them.
	ReloadInterval time.Duration
	// MaxMemory is the byte budget of the whole mirror: values and the key index.
	MaxMemory int64
	// MaxStaleness is how long the listener may be down before StaleReads applies.
	MaxStaleness time.Duration
	// StaleReads is what reads do once the listener has been down longer than MaxStaleness.
	StaleReads StaleReads
	// MaxClients is the number of concurrent client connections accepted.
	MaxClients int
	// WriteInFlight is how many write batches may run in Postgres at once,
	// each on its own connection (batches in flight never share a key).
	WriteInFlight int
	// WriteLinger holds a write batch back until its oldest command has
	// waited this long, so more writes share a commit and a notification.
	WriteLinger time.Duration
	// MaxDBConns bounds the sidecar's Postgres connections (the listener's
	// comes on top); loaders and fetches may use all but those kept for the
	// writer, reloads and jobs (pgstore.ReservedConns).
	MaxDBConns int
	// LoaderTimeout bounds a loader computation's statements (server-side
	// statement_timeout) and its wait for a connection.
	LoaderTimeout time.Duration
	// ScriptTimeout is the time limit of one script run (EVAL); it stays
	// below the write path's own timeout (MaxScriptTimeout).
	ScriptTimeout time.Duration
	// SubscriberBuffer is how many keyspace notifications may wait for one
	// subscriber before it is disconnected.
	SubscriberBuffer int
	// TrackingTableMaxKeys bounds the keys CLIENT TRACKING remembers; past
	// it keys are evicted by invalidating them.
	TrackingTableMaxKeys int
	// MaxClientBuffers is the budget of all clients' buffers together (commands being read,
	// replies and pushes waiting); past it the largest consumers are disconnected. 0 is "auto":
	// see ClientBuffers.
	MaxClientBuffers int64
	// ClientOutputTimeout disconnects a client whose replies have not drained for this long.
	ClientOutputTimeout time.Duration
	// LoopSpin is how long an event loop serving a few busy clients polls
	// for their next command before it sleeps; 0 never spins.
	LoopSpin time.Duration
	// MaxValueSize is the largest value, in bytes, a client may write.
	MaxValueSize int64
	// AccessFlushInterval is the period of the batched last_accessed_at update.
	AccessFlushInterval time.Duration
	// RefreshInterval is the period of the refresh worker.
	RefreshInterval time.Duration
	// RefreshAhead is how long before expiry a key with a loader is recomputed.
	RefreshAhead time.Duration
	// RefreshWindow is how recently a key must have been used to be worth refreshing.
	RefreshWindow time.Duration
	// RefreshLockStale is the age after which a refresh lock is considered abandoned and reclaimed.
	RefreshLockStale time.Duration
	// ServeStale is how long an expired value may be served while its refresh runs; 0 never.
	ServeStale time.Duration
	// CleanupInterval is the period of the cleanup job.
	CleanupInterval time.Duration
	// Retention is how long an unused key is kept before cleanup deletes it.
	Retention time.Duration
	// ExpiredGrace is how long an expired key is kept before cleanup deletes it.
	ExpiredGrace time.Duration
	// UnsignedPayloads says whether notification payloads without a MAC
	// (format 1, from triggers older than migration 0005) are applied.
	UnsignedPayloads listener.UnsignedPolicy
	// Migrate runs the migrations before serving.
	Migrate bool
	// AllowSharedSchema lets migrate use a schema in which roles other than
	// pgmirror's may create objects (docs/security.md); refused by default.
	AllowSharedSchema bool
	// LogLevel is one of LogLevels.
	LogLevel string
	// LogJSON selects hclog's JSON format instead of its text format.
	LogJSON bool
}

// DefaultConfig returns the configuration used when no flag or environment variable is set.
func DefaultConfig() Config {
	return Config{
		Socket:               DefaultSocket,
		SocketMode:           DefaultSocketMode,
		Namespace:            DefaultNamespace,
		HTTPAddr:             DefaultHTTPAddr,
		ReloadInterval:       DefaultReloadInterval,
		MaxMemory:            DefaultMaxMemory,
		MaxStaleness:         DefaultMaxStaleness,
		StaleReads:           DefaultStaleReads,
		MaxClients:           DefaultMaxClients,
		SubscriberBuffer:     DefaultSubscriberBuffer,
		TrackingTableMaxKeys: DefaultTrackingTableMaxKeys,
		MaxClientBuffers:     DefaultMaxClientBuffers,
		ClientOutputTimeout:  DefaultClientOutputTimeout,
		LoopSpin:             DefaultLoopSpin,
		WriteInFlight:        DefaultWriteInFlight,
		MaxDBConns:           DefaultMaxDBConns,
		LoaderTimeout:        DefaultLoaderTimeout,
		ScriptTimeout:        DefaultScriptTimeout,
		MaxValueSize:         DefaultMaxValueSize,
		AccessFlushInterval:  DefaultAccessFlushInterval,
		RefreshInterval:      DefaultRefreshInterval,
		RefreshAhead:         DefaultRefreshAhead,
		RefreshWindow:        DefaultRefreshWindow,
		RefreshLockStale:     DefaultRefreshLockStale,
		ServeStale:           DefaultServeStale,
		CleanupInterval:      DefaultCleanupInterval,
		Retention:            DefaultRetention,
		ExpiredGrace:         DefaultExpiredGrace,
		UnsignedPayloads:     DefaultUnsignedPayloads,
		Migrate:              DefaultMigrate,
		AllowSharedSchema:    DefaultAllowSharedSchema,
		LogLevel:             DefaultLogLevel,
		LogJSON:              DefaultLogJSON,
	}
}

// validate checks what no single value can check alone, and resolves ListenDSN.
func (c *Config) validate(byName map[string]*setting) error {
	if c.MaxValueSize > c.MaxMemory {
		return fmt.Errorf("--max-value-size %s (from %s) is larger than --max-memory %s (from %s): no such value could be cached",
			formatSize(c.MaxValueSize), byName["max-value-size"].source, formatSize(c.MaxMemory), byName["max-memory"].source)
	}
	if least := c.MaxValueSize + 2*MiB; c.MaxClientBuffers != 0 && c.MaxClientBuffers < least {
		return fmt.Errorf("--max-client-buffers %s (from %s) is less than --max-value-size + 2MiB (%s): a client sending one largest value would be disconnected",
			formatSize(c.MaxClientBuffers), byName["max-client-buffers"].source, formatSize(least))
	}
	if c.WriteLinger > MaxWriteLinger {
		return fmt.Errorf("--write-linger %s (from %s) is over %s: every write would wait that long; use a few milliseconds at most",
			formatDuration(c.WriteLinger), byName["write-linger"].source, formatDuration(MaxWriteLinger))
	}
	if c.LoopSpin > MaxLoopSpin {
		return fmt.Errorf("--loop-spin %s (from %s) is over %s: a loop would burn that much CPU each time its clients pause; use tens of microseconds",
			formatDuration(c.LoopSpin), byName["loop-spin"].source, formatDuration(MaxLoopSpin))
	}
	if c.ScriptTimeout > MaxScriptTimeout {
		return fmt.Errorf("--script-timeout %s (from %s) is over %s: a write batch waiting on a script's keys would fail first",
			formatDuration(c.ScriptTimeout), byName["script-timeout"].source, formatDuration(MaxScriptTimeout))
	}
	if reserved := pgstore.ReservedConns(c.WriteInFlight); c.MaxDBConns <= reserved {
		return fmt.Errorf("--max-db-conns %d (from %s) leaves no connection for loaders and fetches: the writer "+
			"(--write-inflight %d), a reload and the jobs keep %d; set it to at least %d",
			c.MaxDBConns, byName["max-db-conns"].source, c.WriteInFlight, reserved, reserved+1)
	}
	if err := checkDSN(c.DSN, byName["dsn"]); err != nil {
		return err
	}
	if c.ListenDSN == "" {
		c.ListenDSN = c.DSN
	} else if err := checkDSN(c.ListenDSN, byName["listen-dsn"]); err != nil {
		return err
	}
	return nil
}

// ClientBuffers returns MaxClientBuffers, resolving "auto".
func (c Config) ClientBuffers() int64 {
	if c.MaxClientBuffers == 0 {
		return AutoMaxClientBuffers(c.MaxMemory, c.MaxValueSize)
	}
	return c.MaxClientBuffers
}

// AutoMaxClientBuffers is --max-client-buffers=auto: the largest of 64 MiB, a quarter of
// --max-memory and four largest values. The container limit docs/operations.md asks for leaves
// 0.5 x --max-memory + 64 MiB beside the mirror; client buffers may take about half of it, and
// at least four clients may send or hold a largest value at once.
func AutoMaxClientBuffers(maxMemory, maxValueSize int64) int64 {
	return max(MinAutoClientBuffers, maxMemory/4, 4*maxValueSize)
}
