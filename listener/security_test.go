package listener_test

// Attacks on the notification stream, against whole sidecars
// (docs/security.md, Notifications): a role with only CONNECT forges,
// replays and floods notifications on channel pgmirror; a local client
// loops PGMIRROR.RESYNC. Payloads are built here with crypto/hmac, as an
// attacker (or the triggers) would.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"

	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/listener"
	"pgmirror/mirror"
)

func sqlExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// mallory creates (once per cluster) a role with only CONNECT and LOGIN,
// and returns a pool on dsn's database as that role. Parallel tests may
// create it at the same moment: the one that loses that race gets
// unique_violation from pg_authid's index rather than duplicate_object.
func mallory(t testing.TB, dsn string, db *sql.DB) *sql.DB {
	t.Helper()
	sqlExec(t, db, `DO $$ BEGIN CREATE ROLE mallory LOGIN;
		EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$`)
	var dbname string
	if err := db.QueryRow(`SELECT current_database()`).Scan(&dbname); err != nil {
		t.Fatal(err)
	}
	sqlExec(t, db, `GRANT CONNECT ON DATABASE `+pq.QuoteIdentifier(dbname)+` TO mallory`)
	mdb := testdb.Open(t, strings.Replace(dsn, "user=postgres", "user=mallory", 1))
	// The premise: mallory can neither read the keys nor write the table.
	if _, err := mdb.Exec(`SELECT key FROM pgmirror_secret`); err == nil {
		t.Fatal("mallory can read pgmirror_secret")
	}
	if _, err := mdb.Exec(`INSERT INTO cache_entries(key, value) VALUES ('m', 'm')`); err == nil {
		t.Fatal("mallory can write cache_entries")
	}
	return mdb
}

// notify sends payload on channel pgmirror from db.
func notify(t testing.TB, db *sql.DB, payload string) {
	t.Helper()
	if _, err := db.Exec(`SELECT pg_notify($1, $2)`, listener.Channel, payload); err != nil {
		t.Fatalf("pg_notify: %v", err)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// signPayload builds a payload of format 2 as the triggers do.
func signPayload(kid int64, key []byte, sentAt int64, xid uint64, part, parts int, body string) string {
	signed := fmt.Sprintf("%d %d %d %d/%d\n%s", kid, sentAt, xid, part, parts, body)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signed))
	return "pgm2 " + hex.EncodeToString(m.Sum(nil)) + " " + signed
}

// secretKeys returns pgmirror_secret's keys by kid (read as the superuser).
func secretKeys(t testing.TB, db *sql.DB) map[int64][]byte {
	t.Helper()
	rows, err := db.Query(`SELECT kid, key FROM pgmirror_secret`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	keys := map[int64][]byte{}
	for rows.Next() {
		var kid int64
		var key []byte
		if err := rows.Scan(&kid, &key); err != nil {
			t.Fatal(err)
		}
		keys[kid] = key
	}
	return keys
}

// serves reports whether s serves key with value want ("" and !present: absent).
func serves(s *sidecartest.Sidecar, key, want string, present bool) (bool, string) {
	got, err := s.Client.Get(context.Background(), key).Result()
	switch {
	case err == redis.Nil:
		return !present, fmt.Sprintf("%s absent, want %q", key, want)
	case err != nil:
		return false, fmt.Sprintf("GET %s: %v", key, err)
	}
	return present && got == want, fmt.Sprintf("%s = %q, want %q (present %v)", key, got, want, present)
}

// barrier commits a write after everything sent so far and waits until
// every sidecar serves it: notifications arrive in commit order, so every
// sidecar has then taken (applied or dropped) what came before.
func barrier(t testing.TB, db *sql.DB, sidecars ...*sidecartest.Sidecar) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	key := "barrier:" + hex.EncodeToString(b[:])
	sqlExec(t, db, `INSERT INTO cache_entries(key, value) VALUES ($1, 'b')`, key)
	for _, s := range sidecars {
		testutil.Eventually(t, 10*time.Second, func() (bool, string) { return serves(s, key, "b", true) })
	}
	sqlExec(t, db, `DELETE FROM cache_entries WHERE key = $1`, key)
}

// truthful checks that s serves exactly what the table holds for the keys
// of the test (not the barriers).
func truthful(t testing.TB, db *sql.DB, s *sidecartest.Sidecar, name string) {
	t.Helper()
	want := map[string]string{}
	rows, err := db.Query(`SELECT key, convert_from(value, 'UTF8') FROM cache_entries WHERE key NOT LIKE 'barrier:%'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	rows.Close()
	ctx := context.Background()
	keys, err := s.Client.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatalf("%s: KEYS: %v", name, err)
	}
	served := 0
	for _, k := range keys {
		if strings.HasPrefix(k, "barrier:") {
			continue
		}
		served++
		if _, ok := want[k]; !ok {
			t.Fatalf("%s serves %q, which the table does not hold", name, k)
		}
	}
	if served != len(want) {
		t.Fatalf("%s serves %d keys, the table holds %d", name, served, len(want))
	}
	for k, v := range want {
		if ok, msg := serves(s, k, v, true); !ok {
			t.Fatalf("%s: %s", name, msg)
		}
	}
}

// testMirror are the mirror options of these tests: repairs and resyncs
// spaced by 100 ms rather than seconds, unless a test is about them.
func testMirror() mirror.Options { return mirror.Options{MinResyncInterval: 100 * time.Millisecond} }

// TestForgedNotificationsChangeNothing: as mallory (CONNECT only), forged
// payloads (format 1 claiming a transaction id from the far future, format 2
// with a bad MAC, a forged truncate) change nothing a sidecar in the default
// mode serves, before or after PGMIRROR.RESYNC. A sidecar told to accept
// unsigned payloads (a fleet mid-upgrade) applies the format-1 forgeries,
// but its next reload, full or by ranges, restores the table's truth.
func TestForgedNotificationsChangeNothing(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sqlExec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, convert_to('v' || i, 'UTF8') FROM generate_series(1, 50) i`)
	sqlExec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('victim', 'truth')`)
	mdb := mallory(t, dsn, db)
	var strict, lax *listener.Listener
	strictSC := sidecartest.Start(t, dsn, sidecartest.Config{Mirror: testMirror(),
		Listener: func(l *listener.Listener) { strict = l }})
	laxSC := sidecartest.Start(t, dsn, sidecartest.Config{Mirror: testMirror(),
		Listener: func(l *listener.Listener) { lax = l; l.Unsigned = listener.UnsignedAccept }})

	const far = "9000000000000000000"
	now := time.Now().UnixMicro()
	// A forged truncate first, then a forged set of the victim and 200
	// phantom keys of 4 KB, all "committed" by a transaction id no
	// transaction will have for ages.
	notify(t, mdb, fmt.Sprintf("pgm1 %d %s\nT 999999", now, far))
	notify(t, mdb, fmt.Sprintf("pgm1 %d %s\nS 999999 - %s %s", now, far, b64("victim"), b64("forged")))
	phantom := b64(strings.Repeat("p", 4096))
	for i := 0; i < 200; i += 20 {
		var recs []string
		for j := i; j < i+20; j++ {
			recs = append(recs, fmt.Sprintf("S %d - %s %s", 1000000+j, b64(fmt.Sprint("phantom:", j)), phantom[:200]))
		}
		notify(t, mdb, fmt.Sprintf("pgm1 %d %s\n%s", now, far, strings.Join(recs, "\n")))
	}
	barrier(t, db, strictSC, laxSC)
	truthful(t, db, strictSC, "the default sidecar")
	if ok, _ := serves(laxSC, "victim", "forged", true); !ok {
		t.Fatal("the sidecar accepting unsigned payloads did not apply the forgery; the test proves nothing")
	}
	// Format 2 with made-up MACs, under the real key id and another.
	bogus := strings.Repeat("ab", 32)
	notify(t, mdb, fmt.Sprintf("pgm2 %s 1 %d %s 1/1\nS 999999 - %s %s", bogus, now, far, b64("victim"), b64("forged2")))
	notify(t, mdb, fmt.Sprintf("pgm2 %s 1 %d %s 1/1\nT 999999", bogus, now, far))
	notify(t, mdb, fmt.Sprintf("pgm2 %s 77 %d %s 1/1\nT 999999", bogus, now, far))
	barrier(t, db, strictSC, laxSC)
	truthful(t, db, strictSC, "the default sidecar")
	st := strict.Stats()
	if st.Rejected[listener.RejectUnsigned] != 12 || st.Rejected[listener.RejectBadMAC] != 2 || st.Rejected[listener.RejectUnknownKey] != 1 {
		t.Fatalf("default sidecar rejected %v; want 12 unsigned, 2 bad MACs, 1 unknown key", st.Rejected)
	}
	if r := lax.Stats().Rejected; r[listener.RejectBadMAC] != 2 || r[listener.RejectUnsigned] != 0 {
		t.Fatalf("lax sidecar rejected %v; want the 2 bad MACs only", r)
	}

	// PGMIRROR.RESYNC: the table's truth, whatever the payloads claimed.
	for _, s := range []*sidecartest.Sidecar{strictSC, laxSC} {
		before := s.Mirror.Stats().Reloads
		if err := s.Client.Do(context.Background(), "PGMIRROR.RESYNC").Err(); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 20*time.Second, func() (bool, string) {
			n := s.Mirror.Stats().Reloads
			return n > before, fmt.Sprintf("%d reloads, want more than %d", n, before)
		})
	}
	truthful(t, db, strictSC, "the default sidecar after RESYNC")
	truthful(t, db, laxSC, "the lax sidecar after RESYNC")
	if f := laxSC.Mirror.Stats().Forged; f < 201 {
		t.Errorf("the lax sidecar's reload counted %d forged keys, want the victim and the 200 phantoms", f)
	}

	// The same by a range reload (periodic reloads of large mirrors).
	notify(t, mdb, fmt.Sprintf("pgm1 %d %s\nS 999999 - %s %s", now, far, b64("victim"), b64("forged")))
	notify(t, mdb, fmt.Sprintf("pgm1 %d %s\nS 999999 - %s %s", now, far, b64("phantom"), b64("x")))
	barrier(t, db, laxSC)
	if ok, _ := serves(laxSC, "victim", "forged", true); !ok {
		t.Fatal("the second forgery was not applied")
	}
	if _, err := laxSC.Mirror.ReloadRanges(context.Background(), "test", 8); err != nil {
		t.Fatal(err)
	}
	truthful(t, db, laxSC, "the lax sidecar after a range reload")
}

// TestReplayedNotificationIsNotApplied: mallory captures an authentic
// payload (anyone can LISTEN) and sends it again later, before and after a
// reload: no sidecar applies it.
func TestReplayedNotificationIsNotApplied(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sqlExec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('victim', 'v0')`)
	mdb := mallory(t, dsn, db)
	s := sidecartest.Start(t, dsn, sidecartest.Config{Mirror: testMirror()})

	capture := pq.NewListener(strings.Replace(dsn, "user=postgres", "user=mallory", 1), 10*time.Millisecond, time.Second, nil)
	if err := capture.Listen(listener.Channel); err != nil {
		t.Fatal(err)
	}
	defer capture.Close()
	sqlExec(t, db, `UPDATE cache_entries SET value = 'v1' WHERE key = 'victim'`)
	var old string
	select {
	case n := <-capture.Notify:
		old = n.Extra
	case <-time.After(10 * time.Second):
		t.Fatal("no notification captured")
	}
	sqlExec(t, db, `UPDATE cache_entries SET value = 'v2' WHERE key = 'victim'`)
	testutil.Eventually(t, 10*time.Second, func() (bool, string) { return serves(s, "victim", "v2", true) })

	notify(t, mdb, old)
	barrier(t, db, s)
	if ok, msg := serves(s, "victim", "v2", true); !ok {
		t.Fatalf("replay before a reload applied: %s", msg)
	}
	if _, err := s.Mirror.Reload(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	notify(t, mdb, old)
	barrier(t, db, s)
	if ok, msg := serves(s, "victim", "v2", true); !ok {
		t.Fatalf("replay after a reload applied: %s", msg)
	}
	// And a sidecar started after the payload was sent: its first load's
	// snapshot sees the transaction.
	s2 := sidecartest.Start(t, dsn, sidecartest.Config{Mirror: testMirror()})
	notify(t, mdb, old)
	barrier(t, db, s, s2)
	for i, sc := range []*sidecartest.Sidecar{s, s2} {
		if ok, msg := serves(sc, "victim", "v2", true); !ok {
			t.Fatalf("sidecar %d: replay applied: %s", i, msg)
		}
	}
	if r := s.Mirror.Stats().Replays; r < 3 {
		t.Fatalf("%d replays counted, want 3", r)
	}
}

// TestJunkDoesNotDelayReadiness: 20 junk notifications a second from
// mallory do not keep a new sidecar loading: it is ready within twice the
// time of a load without them, measured in the same test.
func TestJunkDoesNotDelayReadiness(t *testing.T) {
	// Not parallel: it compares start-up times measured in the test.
	dsn, db := testdb.New(t)
	sqlExec(t, db, `INSERT INTO cache_entries(key, value)
		SELECT 'k' || i, convert_to(repeat(md5(i::text), 3), 'UTF8') FROM generate_series(1, 150000) i`)
	sqlExec(t, db, `ANALYZE cache_entries`)
	mdb := mallory(t, dsn, db)

	timeStart := func() time.Duration {
		start := time.Now()
		s := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true})
		took := time.Since(start)
		s.Stop()
		return took
	}
	// The machine is shared: normal starts are timed before and after, and
	// the better of two starts under junk counts.
	normal := timeStart()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		junk := []string{"garbage", "pgm1 x", "pgm2 " + strings.Repeat("0", 64) + " 1 1 1 1/1\nT 1", "pgm1 1 1\nZ"}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := mdb.Exec(`SELECT pg_notify($1, $2)`, listener.Channel, junk[i%len(junk)]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // the junk is flowing before the sidecar starts
	underJunk := min(timeStart(), timeStart())
	close(stop)
	wg.Wait()
	normal = max(normal, timeStart())
	t.Logf("ready in %v under 20 junk notifications a second; %v without", underJunk, normal)
	if underJunk > 2*normal {
		t.Fatalf("ready in %v under junk, more than twice the %v of a normal start", underJunk, normal)
	}
}

// TestLoopingResyncDoesNotKeepReloading: a local client sending
// PGMIRROR.RESYNC in a loop gets reloads spaced by the minimum interval
// (5 s by default), not one after the other.
func TestLoopingResyncDoesNotKeepReloading(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sqlExec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'v' FROM generate_series(1, 2000) i`)
	s := sidecartest.Start(t, dsn, sidecartest.Config{})
	ctx := context.Background()
	before := s.Mirror.Stats().Reloads
	deadline := time.Now().Add(3 * time.Second)
	sent := 0
	for time.Now().Before(deadline) {
		if err := s.Client.Do(ctx, "PGMIRROR.RESYNC").Err(); err != nil {
			t.Fatal(err)
		}
		sent++
	}
	reloads := s.Mirror.Stats().Reloads - before
	t.Logf("%d PGMIRROR.RESYNC in 3 s: %d reloads", sent, reloads)
	if reloads < 1 {
		t.Fatal("no reload at all: the first request must be served")
	}
	if reloads > 2 {
		t.Fatalf("%d reloads in 3 s of looping PGMIRROR.RESYNC, want at most 2", reloads)
	}
}

// TestKeyRotation: after pgmirror_rotate_secret() writes still propagate;
// a payload signed with the previous key is accepted, one signed with an
// older key is not. The sidecar rejects unsigned payloads, as after the
// rollout: its own sentinels (unsigned) still let it load.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	var l *listener.Listener
	s := sidecartest.Start(t, dsn, sidecartest.Config{Mirror: testMirror(),
		Listener: func(ll *listener.Listener) { l = ll; l.Unsigned = listener.UnsignedReject }})
	sqlExec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('a', '1')`)
	testutil.Eventually(t, 10*time.Second, func() (bool, string) { return serves(s, "a", "1", true) })

	var kid int64
	if err := db.QueryRow(`SELECT pgmirror_rotate_secret()`).Scan(&kid); err != nil {
		t.Fatal(err)
	}
	sqlExec(t, db, `UPDATE cache_entries SET value = '2' WHERE key = 'a'`)
	testutil.Eventually(t, 10*time.Second, func() (bool, string) { return serves(s, "a", "2", true) })
	if err := db.QueryRow(`SELECT pgmirror_rotate_secret()`).Scan(&kid); err != nil {
		t.Fatal(err)
	}
	keys := secretKeys(t, db)
	if len(keys) != 3 || keys[kid] == nil || keys[kid-1] == nil || keys[kid+1] == nil {
		t.Fatalf("after two rotations pgmirror_secret holds %d keys, want %d (previous), %d (current) and %d (pending)",
			len(keys), kid-1, kid, kid+1)
	}
	sqlExec(t, db, `UPDATE cache_entries SET value = '3' WHERE key = 'a'`)
	testutil.Eventually(t, 10*time.Second, func() (bool, string) { return serves(s, "a", "3", true) })

	// Signed payloads as a trigger would send them (a transaction id from
	// now on, which no reload has seen).
	var xid uint64
	if err := db.QueryRow(`SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&xid); err != nil {
		t.Fatal(err)
	}
	send := func(k int64, key []byte, name string) {
		body := fmt.Sprintf("S 1 - %s %s", b64(name), b64("signed"))
		notify(t, db, signPayload(k, key, time.Now().UnixMicro(), xid, 1, 1, body))
	}
	send(kid-1, keys[kid-1], "previous")
	send(kid, keys[kid], "current")
	barrier(t, db, s)
	if ok, msg := serves(s, "previous", "signed", true); !ok {
		t.Fatalf("payload under the previous key: %s", msg)
	}
	if ok, msg := serves(s, "current", "signed", true); !ok {
		t.Fatalf("payload under the current key: %s", msg)
	}
	before := l.Stats().Rejected[listener.RejectUnknownKey]
	if err := db.QueryRow(`SELECT pgmirror_rotate_secret()`).Scan(&kid); err != nil {
		t.Fatal(err)
	}
	// The first payload under the new current key (pending when the
	// sidecar last read the keys) makes it read them again, and forget
	// the key this rotation deleted.
	barrier(t, db, s)
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		return s.Mirror.Keyring().Key(kid-2) == nil, "the sidecar still holds the key the rotation deleted"
	})
	send(kid-2, keys[kid-2], "older") // read before this rotation, which dropped it
	barrier(t, db, s)
	if ok, msg := serves(s, "older", "", false); !ok {
		t.Fatalf("payload under a key two rotations old: %s", msg)
	}
	if n := l.Stats().Rejected[listener.RejectUnknownKey]; n != before+1 {
		t.Fatalf("unknown-key rejections %d, want %d", n, before+1)
	}
}
