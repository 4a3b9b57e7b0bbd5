// Command txbench measures what redis-benchmark cannot send as one request:
// a MULTI/EXEC block of 5 SETs, and EVALSHA of redis-py's lock-release
// script. It runs -clients connections against -socket for -duration and
// writes one JSON object (ops/s, p50/p99 latency in ms) to -out or stdout.
//
// Modes:
//
//	multi    one MULTI, 5 SETs of 100-byte values, EXEC per operation (go-redis TxPipelined)
//	evalsha  SET lock:<client> <token>, then EVALSHA of the release script on that key;
//	         only the EVALSHA is timed and counted (the DEL runs every time)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/bench/internal/benchutil"
)

// releaseScript is redis-py's Lock release script.
const releaseScript = `if redis.call("get",KEYS[1]) == ARGV[1] then return redis.call("del",KEYS[1]) else return 0 end`

// result is what txbench writes.
type result struct {
	Mode      string  `json:"mode"`
	Clients   int     `json:"clients"`
	Seconds   float64 `json:"seconds"`
	Ops       int     `json:"ops"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("txbench: ")
	socket := flag.String("socket", "", "Unix socket of the server")
	clients := flag.Int("clients", 50, "concurrent connections")
	dur := flag.Duration("duration", 10*time.Second, "how long to run")
	mode := flag.String("mode", "multi", "multi or evalsha")
	keys := flag.Int("keys", 100000, "key space of the multi mode's SETs")
	out := flag.String("out", "", "file for the JSON result (empty: stdout)")
	flag.Parse()
	if *socket == "" || *clients < 1 || (*mode != "multi" && *mode != "evalsha") {
		log.Fatal("need -socket, -clients ≥ 1 and -mode multi|evalsha")
	}
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: *socket, PoolSize: *clients,
		MinIdleConns: *clients, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second})
	defer rdb.Close()
	res, err := run(rdb, *mode, *clients, *keys, *dur)
	if err != nil {
		log.Fatal(err)
	}
	b, _ := json.Marshal(res)
	if *out == "" {
		fmt.Println(string(b))
		return
	}
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
}

// run starts the clients, waits for the duration and summarises.
func run(rdb *redis.Client, mode string, clients, keys int, dur time.Duration) (result, error) {
	ctx := context.Background()
	sha, err := rdb.ScriptLoad(ctx, releaseScript).Result()
	if err != nil {
		return result{}, fmt.Errorf("SCRIPT LOAD: %w", err)
	}
	lats := make([][]float64, clients)
	errs := make([]error, clients)
	deadline := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lats[c], errs[c] = client(ctx, rdb, mode, sha, c, keys, deadline)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	var all []float64
	for c := range clients {
		if errs[c] != nil {
			return result{}, fmt.Errorf("client %d: %w", c, errs[c])
		}
		all = append(all, lats[c]...)
	}
	s := benchutil.Summarise(all)
	return result{Mode: mode, Clients: clients, Seconds: elapsed, Ops: s.N,
		OpsPerSec: float64(s.N) / elapsed, P50ms: s.P50 / 1000, P99ms: s.P99 / 1000}, nil
}

// client runs operations until the deadline; latencies in µs.
func client(ctx context.Context, rdb *redis.Client, mode, sha string, c, keys int, deadline time.Time) ([]float64, error) {
	value := make([]byte, 100)
	for i := range value {
		value[i] = 'x'
	}
	lockKey := "txbench:lock:" + strconv.Itoa(c)
	var lats []float64
	for n := 0; time.Now().Before(deadline); n++ {
		if mode == "evalsha" {
			token := strconv.Itoa(c) + ":" + strconv.Itoa(n)
			if err := rdb.Set(ctx, lockKey, token, 0).Err(); err != nil {
				return nil, fmt.Errorf("SET: %w", err)
			}
			t := time.Now()
			got, err := rdb.EvalSha(ctx, sha, []string{lockKey}, token).Int()
			if err != nil || got != 1 {
				return nil, fmt.Errorf("EVALSHA: %d, %v (expected 1)", got, err)
			}
			lats = append(lats, float64(time.Since(t).Nanoseconds())/1000)
			continue
		}
		t := time.Now()
		_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for j := range 5 {
				k := (c*7919 + n*5 + j) % keys
				p.Set(ctx, fmt.Sprintf("key:%012d", k), value, 0)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("MULTI/EXEC: %w", err)
		}
		lats = append(lats, float64(time.Since(t).Nanoseconds())/1000)
	}
	return lats, nil
}
