package script

import (
	"context"
	"testing"
)

// The conversion rules of Redis's EVAL documentation ("Conversion between Lua
// and Redis data types"), checked against a fake Caller.

// Lua to RESP: "Lua number -> RESP integer reply (the number is converted
// into an integer)", "Lua string -> bulk string", "Lua table (indexed,
// non-associative array) -> array reply (truncated to the first nil)",
// "Lua table with a single ok field -> status reply", "with a single err
// field -> error reply", "Lua boolean false -> null bulk reply", "Lua
// boolean true -> integer reply with value of 1", nil -> null.
func TestLuaToRESP(t *testing.T) {
	e := New(Config{})
	for _, tc := range []struct{ src, want string }{
		{"return 42", ":42 "},
		{"return 3.99", ":3 "},
		{"return -3.99", ":-3 "},
		{"return 0.5", ":0 "},
		{"return 'bulk'", "$4 bulk "},
		{"return ''", "$0  "},
		{"return true", ":1 "},
		{"return false", "$-1 "},
		{"return nil", "$-1 "},
		{"return", "$-1 "},
		{"return {1, 2, 3}", "*3 :1 :2 :3 "},
		{"return {1, 2, nil, 4}", "*2 :1 :2 "},
		{"return {1, 'a', {2, false}, true}", "*4 :1 $1 a *2 :2 $-1 :1 "},
		{"return {}", "*0 "},
		{"return {a = 1}", "*0 "},
		{"return {ok = 'FINE'}", "+FINE "},
		{"return {err = 'CODE text'}", "-CODE text "},
		{"return {err = 'CODE text', ok = 'x'}", "-CODE text "},
		{"return {ok = 'a\\r\\nb'}", "+a  b "},
		{"return redis.status_reply('QUEUED')", "+QUEUED "},
		{"return redis.error_reply('MY err')", "-MY err "},
		{"return redis.error_reply('plain')", "-ERR plain "},
		{"return {double = 2.5}", "$3 2.5 "},
		{"return {map = {k = 'v'}}", "*2 $1 k $1 v "},
		{"return 1e300", ":-9223372036854775808 "},
		{"return function() end", "$-1 "},
	} {
		if got := render(evalWith(t, e, newFake(), tc.src, nil)); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.src, got, tc.want)
		}
	}
}

// RESP to Lua: "RESP integer reply -> Lua number", "bulk string -> Lua
// string", "array reply -> Lua table (may have other Redis data types
// nested)", "status reply -> Lua table with a single ok field", "error
// reply -> Lua table with a single err field", "null bulk reply and null
// multi bulk reply -> Lua false boolean type".
func TestRESPToLua(t *testing.T) {
	e := New(Config{})
	replies := map[string]Reply{
		"int":       IntReply(7),
		"bulk":      BulkReply("hello"),
		"array":     ArrayReply(IntReply(1), BulkReply("two"), ArrayReply(NullReply())),
		"status":    StatusReply("OK"),
		"error":     ErrorReply("WRONGTYPE Operation against a key holding the wrong kind of value"),
		"nocode":    ErrorReply("boom"),
		"null":      NullReply(),
		"nullarray": {Kind: NullArray},
	}
	for _, tc := range []struct{ src, want string }{
		{"local r = redis.call('int') return {type(r), r}", "*2 $6 number :7 "},
		{"local r = redis.call('bulk') return {type(r), r}", "*2 $6 string $5 hello "},
		{"local r = redis.call('array') return {type(r), #r, r[2], type(r[3][1])}", "*4 $5 table :3 $3 two $7 boolean "},
		{"local r = redis.call('status') return {type(r), r.ok}", "*2 $5 table $2 OK "},
		{"return redis.call('status')", "+OK "},
		{"local r = redis.pcall('error') return {type(r), r.err}", "*2 $5 table $65 WRONGTYPE Operation against a key holding the wrong kind of value "},
		{"return redis.pcall('nocode').err", "$8 ERR boom "},
		{"local r = redis.call('null') return {type(r), r == false}", "*2 $7 boolean :1 "},
		{"local r = redis.call('nullarray') return {type(r), r == false}", "*2 $7 boolean :1 "},
		{"redis.setresp(3) return type(redis.call('null'))", "$3 nil "},
		{"redis.setresp(3) return true", ":1 "},
		{"redis.setresp(3) return false", ":0 "},
		{"return redis.call('error')", "-WRONGTYPE Operation against a key holding the wrong kind of value script: "},
		{"local ok, e = pcall(redis.call, 'error') return {ok, e}", "*2 $-1 $65 WRONGTYPE Operation against a key holding the wrong kind of value "},
	} {
		c := &stubCaller{replies: replies}
		got := render(evalWith2(t, e, c, tc.src))
		if len(got) < len(tc.want) || got[:len(tc.want)] != tc.want {
			t.Errorf("%s: got %q, want %q", tc.src, got, tc.want)
		}
	}
}

// A RESP3 reply is written in the protocol of the connection.
func TestReplyProtocols(t *testing.T) {
	e := New(Config{})
	for _, tc := range []struct{ src, resp2, resp3 string }{
		{"redis.setresp(3) return true", ":1\r\n", "#t\r\n"},
		{"return nil", "$-1\r\n", "_\r\n"},
		{"return {double = 1.5}", "$3\r\n1.5\r\n", ",1.5\r\n"},
		{"return {map = {a = 1}}", "*2\r\n$1\r\na\r\n:1\r\n", "%1\r\n$1\r\na\r\n:1\r\n"},
		{"return {set = {a = true}}", "*1\r\n$1\r\na\r\n", "~1\r\n$1\r\na\r\n"},
		{"return {big_number = '12345'}", "$5\r\n12345\r\n", "(12345\r\n"},
		{"return {verbatim_string = {format = 'txt', string = 'hi'}}", "$2\r\nhi\r\n", "=6\r\ntxt:hi\r\n"},
	} {
		rep := evalWith(t, e, newFake(), tc.src, nil)
		if got := string(rep.AppendRESP(nil, 2)); got != tc.resp2 {
			t.Errorf("%s RESP2: got %q, want %q", tc.src, got, tc.resp2)
		}
		if got := string(rep.AppendRESP(nil, 3)); got != tc.resp3 {
			t.Errorf("%s RESP3: got %q, want %q", tc.src, got, tc.resp3)
		}
	}
}

func TestParseReplyRoundTrip(t *testing.T) {
	for _, in := range []string{
		"+OK\r\n", "-ERR x\r\n", ":-5\r\n", "$3\r\nfoo\r\n", "$-1\r\n", "*-1\r\n", "*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
		"$0\r\n\r\n", "*0\r\n",
	} {
		rep, n, err := ParseReply([]byte(in + "extra"))
		if err != nil || n != len(in) {
			t.Fatalf("%q: %v, %d", in, err, n)
		}
		if out := string(rep.AppendRESP(nil, 2)); out != in {
			t.Errorf("%q came back as %q", in, out)
		}
	}
	for _, in := range []string{"", "+OK", "$3\r\nfo", "*2\r\n:1\r\n"} {
		if _, _, err := ParseReply([]byte(in)); err != ErrIncomplete {
			t.Errorf("%q: %v, want ErrIncomplete", in, err)
		}
	}
	rep, _, err := ParseReply([]byte("%1\r\n+k\r\n,2.5\r\n"))
	if err != nil || rep.Kind != Map || rep.Elems[1].Float != 2.5 {
		t.Errorf("map: %+v %v", rep, err)
	}
	if _, _, err := ParseReply([]byte("*99999999\r\n")); err == nil {
		t.Error("a huge array length with no elements parsed")
	}
}

// stubCaller answers each command by its name.
type stubCaller struct{ replies map[string]Reply }

func (c *stubCaller) Call(_ context.Context, args [][]byte) (Reply, error) {
	if r, ok := c.replies[string(args[0])]; ok {
		return r, nil
	}
	return ErrorReply(MsgUnknownCommand), nil
}

func (c *stubCaller) Wrote() bool { return false }

func evalWith2(t *testing.T, e *Engine, c Caller, src string) Reply {
	t.Helper()
	rep, err := e.Eval(context.Background(), []byte(src), Request{Caller: c})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}
