package migrations_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"
	"github.com/redis/go-redis/v9"

	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
)

// nextMessage returns the next message of ps as "channel=payload", failing
// after 10 s.
func nextMessage(t *testing.T, ps *redis.PubSub) string {
	t.Helper()
	select {
	case m := <-ps.Channel():
		return m.Channel + "=" + m.Payload
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return ""
	}
}

// TestPublishChannelPrivileges (issue 18): pgmirror_publish_channel, both
// forms, is SECURITY DEFINER with EXECUTE granted to pgmirror_sidecar and
// pgmirror_writer and never to PUBLIC; a role without the grant is refused;
// a member of pgmirror_writer publishes to every sidecar's subscribers; a
// least-privileged sidecar's PUBLISH works; the size bound is named in its
// error and a message at the bound is delivered; and a role that may
// NOTIFY can neither forge a message (unsigned, or under a made-up MAC) nor
// replay a genuine one it saw on the channel.
func TestPublishChannelPrivileges(t *testing.T) {
	dsn, db := testdb.New(t)
	for _, fn := range []string{"pgmirror_publish_channel(text,bytea)", "pgmirror_publish_channel(text,text)"} {
		var definer, public, sidecar, writer bool
		err := db.QueryRow(`SELECT p.prosecdef,
				p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'),
				has_function_privilege('pgmirror_sidecar', p.oid, 'EXECUTE'), has_function_privilege('pgmirror_writer', p.oid, 'EXECUTE')
			  FROM pg_proc p WHERE p.oid = $1::regprocedure`, fn).Scan(&definer, &public, &sidecar, &writer)
		if err != nil {
			t.Fatal(err)
		}
		if !definer || public || !sidecar || !writer {
			t.Errorf("%s: SECURITY DEFINER %v, PUBLIC %v, pgmirror_sidecar %v, pgmirror_writer %v; want true false true true",
				fn, definer, public, sidecar, writer)
		}
	}
	sidecarRole, _ := newRole(t, db, dsn, "pubsidecar", `GRANT pgmirror_sidecar TO %s`)
	_, writer := newRole(t, db, dsn, "pubwriter", `GRANT pgmirror_writer TO %s`)
	_, nobody := newRole(t, db, dsn, "pubnobody")
	var pe *pq.Error
	if _, err := nobody.Exec(`SELECT pgmirror_publish_channel('news', 'x')`); !errors.As(err, &pe) || pe.Code != "42501" {
		t.Fatalf("a role without the grant published: %v, want permission denied", err)
	}

	sc := sidecartest.Start(t, dsn+" user="+sidecarRole, sidecartest.Config{NoJobs: true})
	ctx := context.Background()
	ps := sc.Client.Subscribe(ctx, "news")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	exec(t, writer, `SELECT pgmirror_publish_channel('news', 'from a writer')`)
	if got := nextMessage(t, ps); got != "news=from a writer" {
		t.Fatalf("received %q", got)
	}
	pub := redis.NewClient(&redis.Options{Network: "unix", Addr: sc.Server.Socket})
	defer pub.Close()
	if n, err := pub.Publish(ctx, "news", "from the sidecar").Result(); err != nil || n != 1 {
		t.Fatalf("PUBLISH as a member of pgmirror_sidecar: %d, %v", n, err)
	}
	if got := nextMessage(t, ps); got != "news=from the sidecar" {
		t.Fatalf("received %q", got)
	}

	// The bound: 5840 bytes of channel and message.
	atBound := strings.Repeat("b", 5840-len("news"))
	exec(t, writer, `SELECT pgmirror_publish_channel('news', $1::text)`, atBound)
	if got := nextMessage(t, ps); got != "news="+atBound {
		t.Fatalf("the message at the bound arrived as %d bytes", len(got))
	}
	if _, err := writer.Exec(`SELECT pgmirror_publish_channel('news', $1::text)`, atBound+"b"); err == nil ||
		!strings.Contains(err.Error(), "5841 bytes, at most 5840") {
		t.Fatalf("a message past the bound: %v", err)
	}
	if _, err := writer.Exec(`SELECT pgmirror_publish_channel('news', NULL::bytea)`); err == nil {
		t.Fatal("a NULL message was published")
	}

	// Forgery and replay, by a role that may only NOTIFY.
	captured := make(chan string, 16)
	l := pq.NewListener(dsn, time.Second, time.Second, nil)
	defer l.Close()
	if err := l.Listen("pgmirror"); err != nil {
		t.Fatal(err)
	}
	exec(t, writer, `SELECT pgmirror_publish_channel('news', 'genuine')`)
	go func() {
		for n := range l.Notify {
			if n != nil && strings.Contains(n.Extra, "\nM ") {
				captured <- n.Extra
			}
		}
	}()
	var genuine string
	select {
	case genuine = <-captured:
	case <-time.After(10 * time.Second):
		t.Fatal("the genuine message's notification was not seen")
	}
	if got := nextMessage(t, ps); got != "news=genuine" {
		t.Fatalf("received %q", got)
	}
	flipped := []byte(genuine) // "pgm2 " and the MAC's first hex digit changed
	flipped[5] = "10"[min(1, int(flipped[5]-'0'))]
	forged := string(flipped)
	for _, payload := range []string{
		genuine,                                // a replay
		forged,                                 // a made-up MAC
		"pgm1 1 1\nM 999999 bmV3cw== Zm9yZ2Vk", // unsigned
	} {
		exec(t, nobody, `SELECT pg_notify('pgmirror', $1)`, payload)
	}
	exec(t, writer, `SELECT pgmirror_publish_channel('news', 'after')`)
	if got := nextMessage(t, ps); got != "news=after" {
		t.Fatalf("after a replay and two forgeries, received %q; want the next genuine message", got)
	}
}
