package script

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// Runs are concurrent: each gets a Lua state of its own, and the cache,
// Kill and Flush may be used meanwhile.
func TestConcurrentRuns(t *testing.T) {
	e := New(Config{MaxIdleStates: 2, MaxCacheScripts: 5})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			f := newFake()
			f.wrote = true // Kill below must not stop these runs
			for i := 0; i < 100; i++ {
				src := fmt.Sprintf("redis.call('incr', KEYS[1]) return {tonumber(redis.call('get', KEYS[1])), %d, cjson.encode({ARGV[1]})}", i%7)
				rep, err := e.Eval(context.Background(), []byte(src), Request{Caller: f,
					Keys: [][]byte{[]byte("n")}, Args: [][]byte{[]byte(fmt.Sprint(g))}})
				want := fmt.Sprintf("*3 :%d :%d $5 [\"%d\"] ", i+1, i%7, g)
				if err != nil || render(rep) != want {
					errs <- fmt.Errorf("goroutine %d run %d: %s %v, want %s", g, i, render(rep), err, want)
					return
				}
			}
		}(g)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			e.Load([]byte(fmt.Sprintf("return %d", i)))
			e.Exists(SHA1Hex([]byte("return 1")))
			e.Kill()
			if i%10 == 0 {
				e.Flush()
			}
			e.CacheStats()
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
