package script

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeCaller is a tiny in-memory Redis for scripts: strings only.
type fakeCaller struct {
	mu       sync.Mutex
	data     map[string]string
	expires  map[string]time.Time
	wrote    bool
	readOnly bool
}

func newFake() *fakeCaller {
	return &fakeCaller{data: map[string]string{}, expires: map[string]time.Time{}}
}

// expire drops keys past their time to live.
func (f *fakeCaller) expire() {
	for k, at := range f.expires {
		if time.Now().After(at) {
			delete(f.data, k)
			delete(f.expires, k)
		}
	}
}

func (f *fakeCaller) Wrote() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wrote
}

var fakeWrites = map[string]bool{"SET": true, "DEL": true, "INCR": true, "INCRBY": true, "PEXPIRE": true, "APPEND": true}

func (f *fakeCaller) Call(ctx context.Context, args [][]byte) (Reply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := make([]string, len(args))
	for i, a := range args {
		s[i] = string(a)
	}
	name := strings.ToUpper(s[0])
	if fakeWrites[name] {
		if f.readOnly {
			return ErrorReply(MsgWriteInReadOnly), nil
		}
		f.wrote = true
	}
	f.expire()
	arity := map[string]int{"GET": 2, "SET": -3, "DEL": -2, "INCR": 2, "INCRBY": 3, "PING": -1, "EXISTS": -2,
		"PEXPIRE": 3, "APPEND": 3, "MGET": -2, "PTTL": 2}
	a, ok := arity[name]
	if !ok {
		return ErrorReply(MsgUnknownCommand), nil
	}
	if (a > 0 && len(s) != a) || (a < 0 && len(s) < -a) {
		return ErrorReply(MsgWrongArity), nil
	}
	return f.run(name, s), nil
}

func (f *fakeCaller) run(name string, s []string) Reply {
	switch name {
	case "PING":
		return StatusReply("PONG")
	case "GET":
		v, ok := f.data[s[1]]
		if !ok {
			return NullReply()
		}
		return BulkReply(v)
	case "MGET":
		var out []Reply
		for _, k := range s[1:] {
			if v, ok := f.data[k]; ok {
				out = append(out, BulkReply(v))
			} else {
				out = append(out, NullReply())
			}
		}
		return ArrayReply(out...)
	case "SET":
		return f.set(s)
	case "PTTL":
		if _, ok := f.data[s[1]]; !ok {
			return IntReply(-2)
		}
		at, ok := f.expires[s[1]]
		if !ok {
			return IntReply(-1)
		}
		return IntReply(time.Until(at).Milliseconds())
	case "APPEND":
		f.data[s[1]] += s[2]
		return IntReply(int64(len(f.data[s[1]])))
	case "DEL", "EXISTS":
		n := 0
		for _, k := range s[1:] {
			if _, ok := f.data[k]; ok {
				n++
				if name == "DEL" {
					delete(f.data, k)
				}
			}
		}
		return IntReply(int64(n))
	case "PEXPIRE":
		ms, err := strconv.ParseInt(s[2], 10, 64)
		if err != nil {
			return ErrorReply("ERR value is not an integer or out of range")
		}
		if _, ok := f.data[s[1]]; ok {
			f.expires[s[1]] = time.Now().Add(time.Duration(ms) * time.Millisecond)
			return IntReply(1)
		}
		return IntReply(0)
	case "INCR", "INCRBY":
		by := int64(1)
		if name == "INCRBY" {
			b, err := strconv.ParseInt(s[2], 10, 64)
			if err != nil {
				return ErrorReply("ERR value is not an integer or out of range")
			}
			by = b
		}
		n, err := strconv.ParseInt(f.data[s[1]], 10, 64)
		if _, ok := f.data[s[1]]; ok && err != nil {
			return ErrorReply("ERR value is not an integer or out of range")
		}
		n += by
		f.data[s[1]] = strconv.FormatInt(n, 10)
		return IntReply(n)
	}
	return ErrorReply(MsgUnknownCommand)
}

// set is SET key value [NX|XX] [PX ms].
func (f *fakeCaller) set(s []string) Reply {
	_, exists := f.data[s[1]]
	var ttl time.Duration
	for i := 3; i < len(s); i++ {
		switch strings.ToUpper(s[i]) {
		case "NX":
			if exists {
				return NullReply()
			}
		case "XX":
			if !exists {
				return NullReply()
			}
		case "PX":
			if i+1 == len(s) {
				return ErrorReply("ERR syntax error")
			}
			ms, err := strconv.ParseInt(s[i+1], 10, 64)
			if err != nil {
				return ErrorReply("ERR value is not an integer or out of range")
			}
			ttl = time.Duration(ms) * time.Millisecond
			i++
		default:
			return ErrorReply("ERR syntax error")
		}
	}
	f.data[s[1]] = s[2]
	delete(f.expires, s[1])
	if ttl > 0 {
		f.expires[s[1]] = time.Now().Add(ttl)
	}
	return StatusReply("OK")
}

// eval runs src with keys and args on a fresh engine's fake and renders the reply.
func evalWith(t *testing.T, e *Engine, f *fakeCaller, src string, keys []string, args ...string) Reply {
	t.Helper()
	req := Request{Caller: f}
	for _, k := range keys {
		req.Keys = append(req.Keys, []byte(k))
	}
	for _, a := range args {
		req.Args = append(req.Args, []byte(a))
	}
	rep, err := e.Eval(context.Background(), []byte(src), req)
	if err != nil {
		t.Fatalf("eval %q: %v", src, err)
	}
	return rep
}

// render shows a reply as RESP2 text, readable in test failures.
func render(r Reply) string {
	return strings.ReplaceAll(string(r.AppendRESP(nil, 2)), "\r\n", " ")
}
