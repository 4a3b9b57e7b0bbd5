// Command profile is the Twitter-like profile counters of the reactive-cache
// article, on pgmirror: a POST increments a counter in Postgres with one SQL
// statement; a watch in copy mode puts the row into the cache in the same
// transaction, and a trigger publishes the row from SQL on the pub/sub
// channel profile:{user} of every pgmirror sidecar; every open
// /stream/{user} pushes each message to its browser (Server-Sent Events).
// The app never polls and never reads counters with SQL.
//
// See README.md beside this file for how to run it against `make run`.
package main

import (
	"context"
	"crypto/tls"
	"database/sql"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

//go:embed index.html
var indexHTML []byte

// keyPrefix is the --prefix of the watch on table profile (schema.sql).
const keyPrefix = "profile:"

// validUser is what a user name may be: it becomes part of a URL and a key.
var validUser = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// increments holds the one statement each action runs. It creates the
// profile on first use, so the page works for any user name.
var increments = map[string]string{
	"inc_likes":      incrementSQL("likes"),
	"inc_followers":  incrementSQL("followers"),
	"inc_followings": incrementSQL("followings"),
}

func incrementSQL(column string) string {
	return `INSERT INTO profile AS p (username, ` + column + `) VALUES ($1, 1)
		ON CONFLICT (username) DO UPDATE SET ` + column + ` = p.` + column + ` + 1
		RETURNING likes, followers, followings`
}

// app serves the page, the counter updates and the streams.
type app struct {
	db  *sql.DB       // the write path only
	rdb *redis.Client // the pgmirror sidecar's socket: reads and notifications
	// csc reads counters through rueidis's client-side cache: the values
	// live in this process, and the sidecar invalidates them (CLIENT
	// TRACKING) when Postgres changes the row, whoever changed it.
	csc rueidis.Client
}

// newCSC connects rueidis, with its client-side caching on, to the sidecar's socket.
func newCSC(socket string) (rueidis.Client, error) {
	return rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{socket},
		DialFn: func(_ string, d *net.Dialer, _ *tls.Config) (net.Conn, error) { return d.Dial("unix", socket) }})
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(indexHTML)
	})
	mux.HandleFunc("POST /v1/profile/{user}", a.increment)
	mux.HandleFunc("GET /v1/counters/{user}", a.read)
	mux.HandleFunc("GET /stream/{user}", a.stream)
	return mux
}

// increment runs the action's statement and answers the new counters.
func (a *app) increment(w http.ResponseWriter, r *http.Request) {
	user, action := r.PathValue("user"), r.URL.Query().Get("action")
	query, ok := increments[action]
	switch {
	case !validUser.MatchString(user):
		http.Error(w, "bad user name: want 1 to 64 letters, digits, '_' or '-'", http.StatusBadRequest)
		return
	case !ok:
		http.Error(w, fmt.Sprintf("unknown action %q: want inc_likes, inc_followers or inc_followings", action), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	var c struct { // in the order of the cached JSON
		Likes      int64 `json:"likes"`
		Followers  int64 `json:"followers"`
		Followings int64 `json:"followings"`
	}
	if err := a.db.QueryRowContext(ctx, query, user).Scan(&c.Likes, &c.Followers, &c.Followings); err != nil {
		log.Printf("%s %s: %v", action, user, err)
		http.Error(w, "counter not updated: "+err.Error(), dbFailureStatus(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(c)
}

// read (GET /v1/counters/{user}) answers the user's counters from the
// client-side cache (X-Cache: hit when they came from this process's
// memory, miss when from the sidecar), "null" when there are none.
func (a *app) read(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user")
	if !validUser.MatchString(user) {
		http.Error(w, "bad user name: want 1 to 64 letters, digits, '_' or '-'", http.StatusBadRequest)
		return
	}
	if a.csc == nil {
		http.Error(w, "no client-side cache configured", http.StatusServiceUnavailable)
		return
	}
	res := a.csc.DoCache(r.Context(), a.csc.B().Get().Key(keyPrefix+user).Cache(), time.Hour)
	value, err := res.ToString()
	switch {
	case rueidis.IsRedisNil(err):
		value = "null"
	case err != nil:
		http.Error(w, "reading the cache: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("X-Cache", map[bool]string{true: "hit", false: "miss"}[res.IsCacheHit()])
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintln(w, value)
}

// dbFailureStatus is 503 when Postgres could not be reached or is shutting
// down (try again later), 500 when it refused the statement.
func dbFailureStatus(err error) int {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && pqErr.Code.Class() != "08" && pqErr.Code.Class() != "57" {
		return http.StatusInternalServerError
	}
	return http.StatusServiceUnavailable
}

// stream pushes the user's counters as Server-Sent Events: the current value
// from the cache once subscribed (and again after go-redis resubscribes),
// then each message on channel profile:{user}, which the table's trigger
// publishes from SQL (schema.sql) with the row as the cached JSON, or null
// once it is deleted. Messages arrive in commit order, each after its
// transaction's change of the cache entry, so the stream ends on the
// latest value (a change committed just as the stream subscribes may show
// its message after the GET of a newer value, then that value's own).
func (a *app) stream(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user")
	if !validUser.MatchString(user) {
		http.Error(w, "bad user name: want 1 to 64 letters, digits, '_' or '-'", http.StatusBadRequest)
		return
	}
	ctx, key := r.Context(), keyPrefix+user
	sub := a.rdb.Subscribe(ctx, key) // the channel has the key's name
	defer sub.Close()
	events := sub.ChannelWithSubscriptions() // *redis.Subscription or *redis.Message
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher := http.NewResponseController(w)
	last := ""
	for {
		var value string
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if m, isMessage := ev.(*redis.Message); isMessage {
				value = m.Payload
				break
			}
			var err error
			if value, err = a.rdb.Get(ctx, key).Result(); errors.Is(err, redis.Nil) {
				value = "null"
			} else if err != nil {
				log.Printf("stream %s: GET %s: %v", user, key, err)
				continue // the next message or resubscription tries again
			}
		}
		if value == last {
			continue
		}
		last = value
		fmt.Fprintf(w, "data: %s\n\n", value)
		if err := flusher.Flush(); err != nil {
			return
		}
	}
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("profile: ")
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	cwd, _ := os.Getwd()
	makeRunDSN := "host=" + filepath.Join(cwd, ".pgdata") + " port=54329 user=postgres dbname=postgres sslmode=disable"
	dsn := flag.String("dsn", env("PGMIRROR_DSN", makeRunDSN), "Postgres connection (env PGMIRROR_DSN; default: the cluster of `make run` when run from the repository root)")
	socket := flag.String("socket", env("PGMIRROR_SOCKET", "./pgmirror.sock"), "the pgmirror sidecar's Unix socket (env PGMIRROR_SOCKET)")
	addr := flag.String("addr", env("PROFILE_ADDR", "127.0.0.1:8080"), "HTTP listen address (env PROFILE_ADDR)")
	demoMode := flag.Bool("demo", false, "first start a throwaway Postgres with schema.sql, the watch and a sidecar, and use them (make demo-profile); Ctrl-C stops all")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *demoMode {
		stopDemo, err := startDemo(ctx, dsn, socket)
		if err != nil {
			return err
		}
		defer stopDemo()
	}

	db, err := sql.Open("postgres", *dsn)
	if err != nil {
		return fmt.Errorf("-dsn: %w", err)
	}
	defer db.Close()
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: *socket})
	defer rdb.Close()
	csc, err := newCSC(*socket)
	if err != nil {
		return fmt.Errorf("no pgmirror sidecar answers rueidis on %s (-socket; is `make run` running?): %w", *socket, err)
	}
	defer csc.Close()

	checkCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.PingContext(checkCtx); err != nil {
		return fmt.Errorf("cannot reach Postgres (-dsn): %w", err)
	}
	if err := rdb.Ping(checkCtx).Err(); err != nil {
		return fmt.Errorf("no pgmirror sidecar answers on %s (-socket; is `make run` running?): %w", *socket, err)
	}
	var prefix string
	err = db.QueryRowContext(checkCtx, `SELECT prefix FROM pgmirror_watches WHERE tbl = to_regclass('profile')`).Scan(&prefix)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return errors.New("table profile is not watched: apply examples/profile/schema.sql and run the `pgmirror watch` command of examples/profile/README.md")
	case err != nil:
		return fmt.Errorf("looking up the watch of table profile (has `pgmirror migrate` run on this database?): %w", err)
	case prefix != keyPrefix:
		return fmt.Errorf("table profile is watched under prefix %q, but this app reads %q", prefix, keyPrefix)
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	srv := &http.Server{Handler: (&app{db: db, rdb: rdb, csc: csc}).routes(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(_ net.Listener) context.Context { return ctx }} // a signal ends the streams too
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdownCtx)
	}()
	log.Printf("listening on http://%s/?user=ada", ln.Addr())
	demoHints(ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
