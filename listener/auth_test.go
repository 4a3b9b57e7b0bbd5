package listener

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/mirror"
)

// currentKey reads the newest key of pgmirror_secret.
func currentKey(t *testing.T, r *recorder) mirror.Key {
	t.Helper()
	ring := r.Keyring()
	if ring == nil || len(ring.Keys) == 0 {
		t.Fatal("no key in pgmirror_secret")
	}
	return ring.Keys[0]
}

// TestStatementAppliedAsOneBatch: an update whose changes span several
// payloads reaches the sink as one batch, all its changes together, when
// its last part arrives.
func TestStatementAppliedAsOneBatch(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	const rows = 3000
	exec(t, db, `INSERT INTO cache_entries(key, value)
		SELECT 'k' || i, convert_to(repeat(md5(i::text), 2), 'UTF8') FROM generate_series(1, $1) i`, rows)
	n := listen(t, dsn, db)
	r := &recorder{db: db}
	l := &Listener{DSN: dsn, Sink: r}
	run(t, l)
	exec(t, db, `UPDATE cache_entries SET value = 'new'`)
	var payloads []string // the update's: not the listener's delivery probe
	for _, p := range n.sync(t) {
		if strings.HasPrefix(p, Format2+" ") {
			payloads = append(payloads, p)
		}
	}
	if len(payloads) < 5 {
		t.Fatalf("the update sent %d payloads; the test needs it to span many", len(payloads))
	}
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('after', 'x')`)
	poll(t, "the next batch", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.batches) == 0 {
			return false
		}
		last := r.batches[len(r.batches)-1]
		return len(last.Changes) == 1 && last.Changes[0].Key == "after"
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	var updates []mirror.Batch
	for _, b := range r.batches {
		if len(b.Changes) > 0 && b.Changes[0].Op == mirror.OpSet && string(b.Changes[0].Value) == "new" {
			updates = append(updates, b)
		}
	}
	if len(updates) != 1 {
		t.Fatalf("the update reached the sink in %d batches, want 1", len(updates))
	}
	b := updates[0]
	if len(b.Changes) != rows || len(b.MACs) != len(payloads) {
		t.Fatalf("the batch holds %d changes and %d MACs; want all %d changes of the %d payloads", len(b.Changes), len(b.MACs), rows, len(payloads))
	}
	for _, c := range b.Changes {
		if c.Op != mirror.OpSet || string(c.Value) != "new" {
			t.Fatalf("unexpected change %+v", c)
		}
	}
}

// TestHeldPartsAreBounded: past MaxHeldBytes, held parts are applied as they
// are, and the rest of the publish follows; nothing is lost or dropped.
func TestHeldPartsAreBounded(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value)
		SELECT 'k' || i, convert_to(repeat(md5(i::text), 2), 'UTF8') FROM generate_series(1, 3000) i`)
	r := &recorder{db: db}
	l := &Listener{DSN: dsn, Sink: r, MaxHeldBytes: 20000}
	run(t, l)
	exec(t, db, `UPDATE cache_entries SET value = 'new'`)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('after', 'x')`)
	total := func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		n := 0
		for _, b := range r.batches {
			n += len(b.Changes)
		}
		return n
	}
	poll(t, "every change", func() bool { return total() == 3001 })
	if got := r.applied(); got < 3 {
		t.Fatalf("%d batches; with a 20 kB bound the update should have been applied in several", got)
	}
	for _, reason := range RejectReasons {
		if n := l.Stats().Rejected[reason]; n != 0 {
			t.Fatalf("%d payloads rejected as %s", n, reason)
		}
	}
}

// TestPartsAndLaterKinds sends signed payloads by hand: a record of a kind
// a later version adds is skipped, parts in sequence make one batch, a part
// out of sequence and an incomplete publish are dropped and reported.
func TestPartsAndLaterKinds(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	r := &recorder{db: db}
	l := &Listener{DSN: dsn, Sink: r}
	run(t, l)
	key := currentKey(t, r)
	var xid uint64 = 1 << 40 // in no snapshot
	send := func(part, parts int, changes ...mirror.Change) {
		t.Helper()
		p := Payload{SentAt: time.Now().UnixMicro(), Xid: xid, Changes: changes}
		exec(t, db, `SELECT pg_notify($1, $2)`, Channel, EncodeSigned(p, key.ID, key.Secret, part, parts))
	}
	set := func(k string) mirror.Change {
		return mirror.Change{Op: mirror.OpSet, Version: 1, Key: k, Value: []byte("v"), Expires: mirror.NoExpiry}
	}
	sentinel := func() { // a barrier: everything before it was taken
		t.Helper()
		tok := fmt.Sprint("t", time.Now().UnixNano())
		exec(t, db, `SELECT pg_notify($1, $2)`, Channel, Encode(Payload{Changes: []mirror.Change{{Op: mirror.OpSentinel, Token: tok}}}))
		poll(t, "the sentinel", func() bool {
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, b := range r.batches {
				if len(b.Changes) == 1 && b.Changes[0].Token == tok {
					return true
				}
			}
			return false
		})
	}
	batches := func() []string {
		r.mu.Lock()
		defer r.mu.Unlock()
		var out []string
		for _, b := range r.batches {
			var keys []string
			for _, c := range b.Changes {
				keys = append(keys, c.Key+c.Token)
			}
			out = append(out, strings.Join(keys, ","))
		}
		return out
	}

	// A later kind, skipped: a payload of the triggers' format with an
	// extra record (signed over it).
	p := Payload{SentAt: time.Now().UnixMicro(), Xid: xid, Changes: []mirror.Change{set("known")}}
	signed := signedText(p, key.ID, 1, 1)
	signed = strings.Replace(signed, "\n", "\nX some future fields\nq\n", 1)
	exec(t, db, `SELECT pg_notify($1, $2)`, Channel, sign(key.Secret, signed))
	// Parts in sequence, one batch.
	send(1, 3, set("a1"))
	send(2, 3, set("a2"))
	send(3, 3, set("a3"))
	// A part out of sequence, alone.
	send(2, 2, set("stray"))
	// An incomplete publish, then a complete one.
	send(1, 2, set("lost"))
	send(1, 1, set("b"))
	sentinel()
	got := strings.Join(batches(), " | ")
	if want := "known | a1,a2,a3 | b | "; !strings.HasPrefix(got, want) {
		t.Fatalf("batches %q, want %q then the sentinel", got, want)
	}
	st := l.Stats()
	if st.Rejected[RejectParts] != 2 || st.Rejected[RejectMalformed] != 0 || st.Rejected[RejectBadMAC] != 0 {
		t.Fatalf("rejected %v, want 2 for parts (the stray part, the incomplete publish)", st.Rejected)
	}
}
