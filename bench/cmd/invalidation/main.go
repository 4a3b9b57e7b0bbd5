// Command invalidation measures client-side caching (CLIENT TRACKING): how
// long a committed change takes to reach, as an invalidation, a RESP3
// tracking client on each of N pgmirror sidecars, next to the raw NOTIFY
// floor of a bare pq.Listener in the same run; and rueidis DoCache hits per
// second against plain GETs over the socket.
//
// For each N of -sidecars it starts N `pgmirror serve` processes on -dsn,
// one tracking connection per sidecar, and the bare listener. Each of
// -probes probes is a key every tracking connection GETs (so it is
// tracked), then one upsert of it in Postgres; the probe's invalidation
// time is the slowest sidecar's push receipt, measured from the payload's
// sent_at (clock_timestamp() in the notify trigger, just before the
// commit), as the floor is.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lib/pq"
	"github.com/redis/rueidis"

	"pgmirror/bench/internal/benchutil"
	"pgmirror/listener"
	"pgmirror/mirror"
)

// Result is the outcome for one number of sidecars.
type Result struct {
	Sidecars     int             `json:"sidecars"`
	Probes       int             `json:"probes"`
	Lost         int             `json:"lost"`         // probes whose invalidation or floor delivery did not arrive within 2 s
	Invalidation benchutil.Stats `json:"invalidation"` // µs from sent_at to the slowest sidecar's push
	Floor        benchutil.Stats `json:"floor"`        // µs from sent_at to the bare listener's receipt
	// One sidecar only: rueidis DoCache of one key (cache hits) and plain
	// GETs of it, one at a time, per second.
	DoCacheHitsPerSec float64 `json:"docache_hits_per_sec,omitempty"`
	GetsPerSec        float64 `json:"gets_per_sec,omitempty"`
}

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	log.SetPrefix("invalidation: ")
	bin := flag.String("bin", "bin/pgmirror", "pgmirror binary")
	dsn := flag.String("dsn", "", "Postgres DSN of a migrated database (its cache_entries is emptied)")
	dir := flag.String("dir", "", "directory for sockets and logs")
	out := flag.String("out", "", "write the results as JSON here")
	sidecars := flag.String("sidecars", "1,10", "numbers of sidecars, comma-separated")
	probes := flag.Int("probes", 300, "probes per number of sidecars")
	hitsFor := flag.Duration("hits-for", 3*time.Second, "how long to count DoCache hits and GETs (0 skips)")
	flag.Parse()
	if *dsn == "" || *dir == "" {
		log.Fatal("-dsn and -dir are required")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}
	db, err := sql.Open("postgres", *dsn)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	var results []Result
	for _, s := range strings.Split(*sidecars, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			log.Fatalf("bad -sidecars %q", *sidecars)
		}
		f, err := benchutil.StartFleet(benchutil.FleetOptions{Bin: *bin, DSN: *dsn, Dir: *dir, Name: fmt.Sprintf("inv%d", n)}, n)
		if err != nil {
			f.Stop()
			log.Fatal(err)
		}
		r, err := measure(db, *dsn, f, *probes)
		if err == nil && n == 1 && *hitsFor > 0 {
			r.DoCacheHitsPerSec, r.GetsPerSec, err = hits(f.Socks[0], *hitsFor)
		}
		f.Stop()
		if err != nil {
			log.Fatalf("%d sidecars: %v", n, err)
		}
		log.Printf("%d sidecars: invalidation p50 %.3f ms p99 %.3f ms; NOTIFY floor p50 %.3f ms p99 %.3f ms; lost %d; DoCache hits %.0f/s, GETs %.0f/s",
			n, r.Invalidation.P50/1000, r.Invalidation.P99/1000, r.Floor.P50/1000, r.Floor.P99/1000, r.Lost, r.DoCacheHitsPerSec, r.GetsPerSec)
		results = append(results, r)
	}
	if *out != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

// measure runs the probes on a fleet.
func measure(db *sql.DB, dsn string, f *benchutil.Fleet, probes int) (Result, error) {
	res := Result{Sidecars: len(f.Socks), Probes: probes}
	if _, err := db.Exec(`DELETE FROM cache_entries`); err != nil {
		return res, err
	}
	fl, err := listenFloor(dsn)
	if err != nil {
		return res, err
	}
	defer fl.pl.Close()
	var trackers []*tracker
	for _, sock := range f.Socks {
		t, err := dialTracker(sock)
		if err != nil {
			return res, err
		}
		defer t.nc.Close()
		trackers = append(trackers, t)
	}
	var inv, floor []float64
	for i := range probes {
		key, value := fmt.Sprintf("inv:%d:%d", len(f.Socks), i), fmt.Sprintf("v%d-%d", i, time.Now().UnixNano())
		for _, t := range trackers {
			if err := t.get(key); err != nil {
				return res, err
			}
		}
		if _, err := db.Exec(`INSERT INTO cache_entries(key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, []byte(value)); err != nil {
			return res, err
		}
		deadline := time.Now().Add(2 * time.Second)
		var last int64
		for _, t := range trackers {
			at := t.await(key, deadline)
			if at == 0 {
				last = -1
				break
			}
			last = max(last, at)
		}
		d, ok := fl.await(value, deadline)
		if last < 0 || !ok {
			res.Lost++
			continue
		}
		inv = append(inv, float64(last-d.sentAt))
		floor = append(floor, float64(d.recv-d.sentAt))
	}
	res.Invalidation, res.Floor = benchutil.Summarise(inv), benchutil.Summarise(floor)
	return res, nil
}

// delivery is what the bare listener saw of one write: sent_at and receipt, unix µs.
type delivery struct{ sentAt, recv int64 }

type floorListener struct {
	pl *pq.Listener
	mu sync.Mutex
	by map[string]delivery // by value
}

func listenFloor(dsn string) (*floorListener, error) {
	fl := &floorListener{pl: pq.NewListener(dsn, 10*time.Millisecond, time.Second, nil), by: map[string]delivery{}}
	if err := fl.pl.Listen(listener.Channel); err != nil {
		fl.pl.Close()
		return nil, err
	}
	go func() {
		for nt := range fl.pl.Notify {
			recv := time.Now().UnixMicro()
			if nt == nil {
				continue
			}
			b, err := listener.Decode(nt.Extra)
			if err != nil {
				continue
			}
			fl.mu.Lock()
			for _, ch := range b.Changes {
				if ch.Op == mirror.OpSet {
					fl.by[string(ch.Value)] = delivery{b.SentAt, recv}
				}
			}
			fl.mu.Unlock()
		}
	}()
	return fl, nil
}

func (fl *floorListener) await(value string, deadline time.Time) (delivery, bool) {
	for {
		fl.mu.Lock()
		d, ok := fl.by[value]
		fl.mu.Unlock()
		if ok || time.Now().After(deadline) {
			return d, ok
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// tracker is a RESP3 connection with CLIENT TRACKING ON; a goroutine reads
// it, handing replies to get and recording when each key's invalidation
// arrived.
type tracker struct {
	nc      net.Conn
	replies chan string
	mu      sync.Mutex
	seen    map[string]int64 // key -> unix µs of its invalidation
}

func dialTracker(sock string) (*tracker, error) {
	nc, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	t := &tracker{nc: nc, replies: make(chan string, 4), seen: map[string]int64{}}
	go t.read(bufio.NewReader(nc))
	for _, cmd := range []string{"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n", "*3\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\non\r\n"} {
		if _, err := nc.Write([]byte(cmd)); err != nil {
			return nil, err
		}
		if r, ok := <-t.replies; !ok || strings.HasPrefix(r, "-") {
			return nil, fmt.Errorf("%s: %q", strings.TrimSpace(cmd), r)
		}
	}
	return t, nil
}

func (t *tracker) get(key string) error {
	if _, err := fmt.Fprintf(t.nc, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(key), key); err != nil {
		return err
	}
	select {
	case <-t.replies:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("no reply to GET %s", key)
	}
}

func (t *tracker) await(key string, deadline time.Time) int64 {
	for {
		t.mu.Lock()
		at := t.seen[key]
		t.mu.Unlock()
		if at != 0 || time.Now().After(deadline) {
			return at
		}
		time.Sleep(50 * time.Microsecond)
	}
}

func (t *tracker) read(rd *bufio.Reader) {
	defer close(t.replies)
	for {
		kind, items, err := readValue(rd)
		if err != nil {
			return
		}
		if kind == '>' && len(items) == 2 && items[0] == "invalidate" {
			now := time.Now().UnixMicro()
			t.mu.Lock()
			for _, k := range strings.Fields(items[1]) {
				t.seen[k] = now
			}
			t.mu.Unlock()
			continue
		}
		t.replies <- string(kind) + strings.Join(items, " ")
	}
}

// readValue reads one RESP3 value: its type and its elements (an aggregate's
// elements flattened, space-separated, one level down).
func readValue(rd *bufio.Reader) (byte, []string, error) {
	line, err := rd.ReadString('\n')
	if err != nil || len(line) < 3 {
		return 0, nil, fmt.Errorf("read: %q %v", line, err)
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '$', '=':
		n, _ := strconv.Atoi(body)
		if n < 0 {
			return kind, nil, nil
		}
		b := make([]byte, n+2)
		if _, err := readFull(rd, b); err != nil {
			return 0, nil, err
		}
		return kind, []string{string(b[:n])}, nil
	case '*', '>', '%', '~':
		n, _ := strconv.Atoi(body)
		if kind == '%' {
			n *= 2
		}
		items := make([]string, 0, max(n, 0))
		for range n {
			_, sub, err := readValue(rd)
			if err != nil {
				return 0, nil, err
			}
			items = append(items, strings.Join(sub, " "))
		}
		return kind, items, nil
	}
	return kind, []string{body}, nil
}

func readFull(rd *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := rd.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// hits counts rueidis DoCache hits and plain GETs of one key, one at a
// time, for d each.
func hits(sock string, d time.Duration) (float64, float64, error) {
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{sock},
		DialFn: func(_ string, dl *net.Dialer, _ *tls.Config) (net.Conn, error) { return dl.Dial("unix", sock) }})
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, c.B().Set().Key("hot").Value("v").Build()).Error(); err != nil {
		return 0, 0, err
	}
	count := func(do func() error) (float64, error) {
		n, start := 0, time.Now()
		for time.Since(start) < d {
			if err := do(); err != nil {
				return 0, err
			}
			n++
		}
		return float64(n) / time.Since(start).Seconds(), nil
	}
	cached, err := count(func() error { return c.DoCache(ctx, c.B().Get().Key("hot").Cache(), time.Minute).Error() })
	if err != nil {
		return 0, 0, err
	}
	plain, err := count(func() error { return c.Do(ctx, c.B().Get().Key("hot").Build()).Error() })
	return cached, plain, err
}
