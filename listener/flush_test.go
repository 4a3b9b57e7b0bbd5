package listener

import (
	"reflect"
	"testing"

	"pgmirror/mirror"
)

// TestDecodeFlushRecords: a flush record (FLUSHDB) carries its version, its
// prefix ("-" for every key) and the prefixes it left in place; Encode
// writes back what Decode read, and malformed ones are refused.
func TestDecodeFlushRecords(t *testing.T) {
	in := "pgm1 5 77\n" +
		"P 12 -\n" +
		"P 13 YV8lOg==\n" +
		"P 14 - aXRlbTo= b3JkZXJzOg==\n" +
		"P 15 YTo= YTppdGVtOg=="
	p, err := Decode(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []mirror.Change{
		{Op: mirror.OpFlush, Version: 12},
		{Op: mirror.OpFlush, Version: 13, Key: "a_%:"},
		{Op: mirror.OpFlush, Version: 14, Keep: []string{"item:", "orders:"}},
		{Op: mirror.OpFlush, Version: 15, Key: "a:", Keep: []string{"a:item:"}},
	}
	if !reflect.DeepEqual(p.Changes, want) {
		t.Fatalf("decoded\n%#v\nwant\n%#v", p.Changes, want)
	}
	if got := Encode(p); got != in {
		t.Fatalf("Encode(Decode(x)) = %q, want %q", got, in)
	}
	signed := EncodeSigned(p, 3, testKey, 1, 1)
	if q, h, err := DecodeFull(signed); err != nil || h.Skipped != 0 || !reflect.DeepEqual(q.Changes, want) {
		t.Fatalf("signed: %+v, skipped %d, %v", q.Changes, h.Skipped, err)
	}
	for _, bad := range []string{"P 1", "P 1 ", "P 0 -", "P 1 - ", "P 1 -x", "P 1 YQ", "P 1 - YQ== ", "P 1 --"} {
		if _, err := Decode("pgm1 5 77\n" + bad); err == nil {
			t.Errorf("flush record %q accepted", bad)
		}
	}
	c := want[3]
	for key, deleted := range map[string]bool{"a:x": true, "a:": true, "a:item:1": false, "b:x": false, "a": false} {
		if got := mirror.Flushes(&c, key); got != deleted {
			t.Errorf("Flushes(%+v, %q) = %v, want %v", c, key, got, deleted)
		}
	}
}
