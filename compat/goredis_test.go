package compat

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func newGoRedis(socket string) *redis.Client {
	return redis.NewClient(&redis.Options{Network: "unix", Addr: socket, DialTimeout: 5 * time.Second,
		ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second, PoolSize: 16})
}

// goRedisCase is one case of the go-redis part: it writes its lines to out.
type goRedisCase struct {
	name string
	fn   func(ctx context.Context, c *redis.Client, k func(string) string, out *strings.Builder)
}

// runGoRedis runs the go-redis cases in process and renders their
// transcript as the scripts print theirs.
func runGoRedis(t *testing.T, socket, prefix string) string {
	c := newGoRedis(socket)
	defer c.Close()
	k := func(s string) string { return prefix + s }
	var out strings.Builder
	for _, cs := range goRedisCases() {
		fmt.Fprintf(&out, "== %s\n", cs.name)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cs.fn(ctx, c, k, &out)
		cancel()
	}
	return out.String()
}

// show renders a command's reply, or its error.
func show(c redis.Cmder) string {
	if err := c.Err(); err != nil {
		return fmt.Sprintf("%v: error: %v", c.Args(), err)
	}
	return c.String()
}

func showAll(out *strings.Builder, cmds ...redis.Cmder) {
	for _, c := range cmds {
		out.WriteString(show(c) + "\n")
	}
}

func goRedisCases() []goRedisCase {
	return []goRedisCase{
		{"basic", goRedisBasic},
		{"pipelined", goRedisPipelined},
		{"txpipelined", goRedisTxPipelined},
		{"watch-retries", goRedisWatchRetries},
		{"watch-abort", goRedisWatchAbort},
		{"eval", goRedisEval},
		{"scan", goRedisScan},
		{"everyday-reads", goRedisEverydayReads},
		{"everyday-writes", goRedisEverydayWrites},
	}
}

func goRedisBasic(ctx context.Context, c *redis.Client, k func(string) string, out *strings.Builder) {
	showAll(out, c.Set(ctx, k("a"), "1", 0), c.Get(ctx, k("a")), c.Incr(ctx, k("a")), c.IncrBy(ctx, k("a"), 5),
		c.SetNX(ctx, k("a"), "x", 0), c.MGet(ctx, k("a"), k("missing")), c.Get(ctx, k("missing")),
		c.Append(ctx, k("s"), "ab"), c.StrLen(ctx, k("s")), c.Exists(ctx, k("a"), k("s"), k("missing")),
		c.Expire(ctx, k("a"), time.Minute), c.Del(ctx, k("a"), k("s")), c.Exists(ctx, k("a")))
	ttl := c.TTL(ctx, k("t"))
	c.Set(ctx, k("t"), "v", time.Minute)
	fmt.Fprintf(out, "ttl before %v, ttl set %v\n", ttl.Val(), c.TTL(ctx, k("t")).Val() > 50*time.Second)
}

func goRedisPipelined(ctx context.Context, c *redis.Client, k func(string) string, out *strings.Builder) {
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, k("p"), "1", 0)
		p.Incr(ctx, k("p"))
		p.Get(ctx, k("p"))
		p.Get(ctx, k("missing"))
		p.Incr(ctx, k("missing-int"))
		return nil
	})
	fmt.Fprintf(out, "err %v\n", err)
	showAll(out, cmds...)
}

func goRedisTxPipelined(ctx context.Context, c *redis.Client, k func(string) string, out *strings.Builder) {
	cmds, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, k("tx"), "1", 0)
		p.Incr(ctx, k("tx"))
		p.Get(ctx, k("tx"))
		p.Set(ctx, k("tx2"), "not a number", 0)
		p.Incr(ctx, k("tx2")) // fails at run time, alone
		return nil
	})
	fmt.Fprintf(out, "err %v\n", err)
	showAll(out, cmds...)
	showAll(out, c.MGet(ctx, k("tx"), k("tx2")))
}

// goRedisWatchRetries is go-redis's documented optimistic increment: several
// goroutines increment one key through WATCH and a transaction, retrying
// when EXEC aborts; every increment must land exactly once.
func goRedisWatchRetries(ctx context.Context, c *redis.Client, k func(string) string, out *strings.Builder) {
	key := k("counter")
	incr := func() error {
		for range 200 {
			err := c.Watch(ctx, func(tx *redis.Tx) error {
				n, err := tx.Get(ctx, key).Int()
				if err != nil && err != redis.Nil {
					return err
				}
				_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
					p.Set(ctx, key, strconv.Itoa(n+1), 0)
					return nil
				})
				return err
			}, key)
			if !errors.Is(err, redis.TxFailedErr) {
				return err
			}
		}
		return errors.New("too many retries")
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			for range 5 {
				if err := incr(); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	fmt.Fprintf(out, "errors %v\n", errors.Join(errs...))
	showAll(out, c.Get(ctx, key))
}

// goRedisWatchAbort: a change by another connection between WATCH and
// EXEC aborts the transaction; without one it applies.
func goRedisWatchAbort(ctx context.Context, c *redis.Client, k func(string) string, out *strings.Builder) {
	key := k("w")
	c.Set(ctx, key, "0", 0)
	err := c.Watch(ctx, func(tx *redis.Tx) error {
		if err := c.Set(ctx, key, "changed", 0).Err(); err != nil { // another connection of the pool
			return err
		}
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, "mine", 0)
			return nil
		})
		return err
	}, key)
	fmt.Fprintf(out, "changed: %v\n", err)
	showAll(out, c.Get(ctx, key))
	err = c.Watch(ctx, func(tx *redis.Tx) error {
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, "mine", 0)
			return nil
		})
		return err
	}, key)
	fmt.Fprintf(out, "unchanged: %v\n", err)
	showAll(out, c.Get(ctx, key))
}

func goRedisEval(ctx context.Context, c *redis.Client, k func(string) string, out *strings.Builder) {
	const src = "redis.call('SET', KEYS[1], ARGV[1]); return {redis.call('GET', KEYS[1]), #ARGV, 3.7, false}"
	showAll(out, c.Eval(ctx, src, []string{k("e")}, "v1"))
	load := c.ScriptLoad(ctx, src)
	showAll(out, load, c.ScriptExists(ctx, load.Val(), "0000000000000000000000000000000000000000"),
		c.EvalSha(ctx, load.Val(), []string{k("e")}, "v2"),
		c.EvalSha(ctx, "0000000000000000000000000000000000000000", nil),
		c.EvalRO(ctx, "return redis.call('GET', KEYS[1])", []string{k("e")}),
		c.EvalRO(ctx, "return redis.call('SET', KEYS[1], 'x')", []string{k("e")}),
		c.Eval(ctx, "return redis.call('INCR', KEYS[1])", []string{k("e")}))
	script := redis.NewScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
	showAll(out, script.Run(ctx, c, []string{k("n")}, 5), script.Run(ctx, c, []string{k("n")}, 6))
}

func goRedisScan(ctx context.Context, c *redis.Client, k func(string) string, out *strings.Builder) {
	for i := range 40 {
		c.Set(ctx, k("scan:"+strconv.Itoa(i)), "v", 0)
	}
	var keys []string
	iter := c.Scan(ctx, 0, k("scan:1*"), 7).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	fmt.Fprintf(out, "err %v\nkeys %s\n", iter.Err(), sortedLines(keys))
}

// goRedisEverydayReads: the read commands of issue 17 (part A1).
func goRedisEverydayReads(ctx context.Context, c *redis.Client, k func(string) string, out *strings.Builder) {
	c.Set(ctx, k("r"), "hello world", 0)
	showAll(out, c.GetRange(ctx, k("r"), 2, 5), c.GetRange(ctx, k("r"), -3, -1), c.Touch(ctx, k("r"), k("missing")),
		c.ExpireTime(ctx, k("r")), c.ExpireAt(ctx, k("r"), time.Unix(4102444800, 0)), c.ExpireTime(ctx, k("r")),
		c.PExpireTime(ctx, k("r")), c.PExpireTime(ctx, k("missing")))
	tm := c.Time(ctx)
	fmt.Fprintf(out, "time err %v, recent %v\n", tm.Err(), time.Since(tm.Val()).Abs() < time.Minute)
}

// goRedisEverydayWrites: the write commands of issue 17 (part A2).
func goRedisEverydayWrites(ctx context.Context, c *redis.Client, k func(string) string, out *strings.Builder) {
	c.Set(ctx, k("w"), "hello world", 0)
	//lint:ignore SA1019 GETSET is deprecated in Redis and still sent by applications: the case tests it
	showAll(out, c.GetSet(ctx, k("w"), "0123456789"), c.SetRange(ctx, k("w"), 8, "XYZ"), c.Get(ctx, k("w")),
		c.Copy(ctx, k("w"), k("w2"), 0, false), c.Copy(ctx, k("w"), k("w2"), 0, false),
		c.Rename(ctx, k("w2"), k("w3")), c.RenameNX(ctx, k("w3"), k("w")), c.Rename(ctx, k("missing"), k("w4")),
		c.MGet(ctx, k("w2"), k("w3")))
}
