package listener

import (
	"reflect"
	"strings"
	"testing"

	"pgmirror/mirror"
)

// TestDecodeMessageRecord: an application's pub/sub message ("M" id
// channel64 message64) decodes to an OpMessage change (Key the channel,
// Value the message) and encodes back byte for byte, in both formats;
// malformed ones are refused.
func TestDecodeMessageRecord(t *testing.T) {
	in := "pgm1 5 77\nM 3 bmV3cw== aGVsbG8=\nM 4 Yw== "
	p, err := Decode(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []mirror.Change{
		{Op: mirror.OpMessage, Version: 3, Key: "news", Value: []byte("hello")},
		{Op: mirror.OpMessage, Version: 4, Key: "c", Value: []byte{}},
	}
	if !reflect.DeepEqual(p.Changes, want) {
		t.Fatalf("decoded %#v, want %#v", p.Changes, want)
	}
	if got := Encode(p); got != in {
		t.Fatalf("Encode(Decode(x)) = %q, want %q", got, in)
	}
	signed := EncodeSigned(p, 1, testKey, 1, 1)
	q, h, err := DecodeFull(signed)
	if err != nil || h.Skipped != 0 || !reflect.DeepEqual(q.Changes, want) || !h.Verify(testKey) {
		t.Fatalf("signed: %v, skipped %d, %#v", err, h.Skipped, q.Changes)
	}
	for name, bad := range map[string]string{
		"no message":      "M 3 bmV3cw==",
		"no id":           "M bmV3cw== aGVsbG8=",
		"zero id":         "M 0 bmV3cw== aGVsbG8=",
		"bad base64":      "M 3 bmV3cw= aGVsbG8=",
		"extra field":     "M 3 bmV3cw== aGVsbG8= eA==",
		"broken base64 2": "M 3 bmV3cw== aGVsbG8",
	} {
		if _, err := Decode("pgm1 5 77\n" + bad); err == nil {
			t.Errorf("%s: %q accepted", name, bad)
		}
	}
	if !strings.HasPrefix(Encode(p), Format1) {
		t.Fatal("format")
	}
}
