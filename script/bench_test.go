package script

import (
	"context"
	"testing"
)

// BenchmarkEvalSHARelease runs redis-py's lock release script by sha, as a
// client releasing a lock does.
func BenchmarkEvalSHARelease(b *testing.B) {
	e := New(Config{})
	sha, _ := e.Load([]byte(redisPyRelease))
	f := newFake()
	req := Request{Caller: f, Keys: [][]byte{[]byte("lock")}, Args: [][]byte{[]byte("tok")}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			f.Call(context.Background(), [][]byte{[]byte("SET"), []byte("lock"), []byte("tok")})
			if rep, err := e.EvalSHA(context.Background(), sha, req); err != nil || rep.Kind != Int {
				b.Fatal(render(rep), err)
			}
		}
	})
}
