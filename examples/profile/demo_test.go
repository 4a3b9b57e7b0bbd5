package main

// make demo-profile: the app with -demo in a child process (this test
// binary, see TestMain), used as its printed hints say, then interrupted.

import (
	"context"
	"database/sql"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"pgmirror/examples/internal/demo"
)

var (
	listening = regexp.MustCompile(`listening on http://(\S+)/\?user=ada`)
	psqlHint  = regexp.MustCompile(`demo: psql "([^"]+)"`)
)

// TestDemo: with -demo the app starts its own Postgres, schema, watch and
// sidecar; a POST and an SQL UPDATE both reach an open stream; Ctrl-C
// stops everything and leaves no process, socket or data directory behind.
func TestDemo(t *testing.T) {
	p := demo.StartMain(t, "-demo", "-addr", "127.0.0.1:0")
	p.WaitFor(t, "demo: Ctrl-C stops", 2*time.Minute)
	out := p.Out.String()
	addr, dsn := listening.FindStringSubmatch(out), psqlHint.FindStringSubmatch(out)
	if addr == nil || dsn == nil {
		t.Fatalf("no address or DSN in the output:\n%s", out)
	}
	url := "http://" + addr[1]
	stream := openStream(t, url+"/stream/ada")
	if got := stream.next(t, 10*time.Second); got != "null" {
		t.Fatalf("first event %s; want null (ada has no row yet)", got)
	}
	if code, body := post(t, url+"/v1/profile/ada?action=inc_likes"); code != http.StatusOK {
		t.Fatalf("POST: %d %s", code, body)
	}
	if got, want := stream.next(t, 10*time.Second), `{"likes":1,"followers":0,"followings":0}`; got != want {
		t.Fatalf("after the POST the stream sent %s; want %s", got, want)
	}
	db, err := sql.Open("postgres", dsn[1])
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), `UPDATE profile SET followers = 1000 WHERE username = 'ada'`); err != nil {
		t.Fatal(err)
	}
	if got, want := stream.next(t, 10*time.Second), `{"likes":1,"followers":1000,"followings":0}`; got != want {
		t.Fatalf("after the UPDATE the stream sent %s; want %s", got, want)
	}
	db.Close()
	if code := p.Interrupt(t, time.Minute); code != 0 {
		t.Errorf("exit status %d after Ctrl-C", code)
	}
	if !strings.Contains(p.Out.String(), "demo: stopped; removed") {
		t.Errorf("the output does not say it stopped")
	}
	demo.AssertNothingLeft(t, p.Out.String(), p.PID())
}
