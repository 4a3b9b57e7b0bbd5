package main

// The profile app against a real Postgres (internal/pgtest) and an
// in-process pgmirror sidecar (internal/sidecartest).

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"pgmirror/examples/internal/demo"
	"pgmirror/internal/pgtest"
	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
)

func TestMain(m *testing.M) {
	demo.RunMainIfAsked(main) // demo_test.go runs the app as make demo-profile does
	pgtest.Main(m)
}

// applySchema creates table profile (schema.sql) and watches it as README.md
// says: pgmirror_watch is the SQL function behind `pgmirror watch`.
func applySchema(t *testing.T, db *sql.DB) {
	t.Helper()
	for _, q := range []string{
		pgtest.RepoFile(t, "examples/profile/schema.sql"),
		`SELECT pgmirror_watch('profile', 'username', 'profile:', '{likes,followers,followings}', 'copy')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// serve runs the app on an HTTP test server; its streams end when the test does.
func serve(t *testing.T, a *app) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewUnstartedServer(a.routes())
	srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	srv.Start()
	t.Cleanup(func() { cancel(); srv.Close() })
	return srv.URL
}

// startApp is the whole stack: a database with profile watched, a sidecar, the app.
func startApp(t *testing.T) (url string, db *sql.DB, sc *sidecartest.Sidecar) {
	t.Helper()
	dsn, db := testdb.New(t)
	applySchema(t, db)
	sc = sidecartest.Start(t, dsn, sidecartest.Config{})
	return serve(t, &app{db: db, rdb: sc.Client}), db, sc
}

// post sends a POST and returns the status and body.
func post(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "", nil)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: reading the body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// counters reads a user's row with SQL (the test's view of the truth).
func counters(t *testing.T, db *sql.DB, user string) string {
	t.Helper()
	var likes, followers, followings int64
	err := db.QueryRow(`SELECT likes, followers, followings FROM profile WHERE username = $1`, user).
		Scan(&likes, &followers, &followings)
	if err == sql.ErrNoRows {
		return "no row"
	}
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`{"likes":%d,"followers":%d,"followings":%d}`, likes, followers, followings)
}

func TestIncrement(t *testing.T) {
	t.Parallel()
	url, db, sc := startApp(t)
	want := []string{
		`{"likes":1,"followers":0,"followings":0}`,
		`{"likes":2,"followers":0,"followings":0}`,
		`{"likes":2,"followers":1,"followings":0}`,
		`{"likes":2,"followers":1,"followings":1}`,
	}
	for i, action := range []string{"inc_likes", "inc_likes", "inc_followers", "inc_followings"} {
		code, body := post(t, url+"/v1/profile/ada?action="+action)
		if code != http.StatusOK || strings.TrimSpace(body) != want[i] {
			t.Fatalf("POST %s: %d %q; want 200 %s", action, code, body, want[i])
		}
	}
	if got, want := counters(t, db, "ada"), `{"likes":2,"followers":1,"followings":1}`; got != want {
		t.Fatalf("row after the POSTs: %s; want %s", got, want)
	}
	// The watch copied the row into the cache, in the UPDATE's transaction.
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		got, err := sc.Client.Get(context.Background(), "profile:ada").Result()
		return got == `{"likes":2,"followers":1,"followings":1}`, fmt.Sprintf("GET profile:ada = %q, %v", got, err)
	})
	if got := counters(t, db, "bob"); got != "no row" {
		t.Fatalf("bob: %s; want no row", got)
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	url, db, _ := startApp(t)
	for _, tt := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"POST", "/v1/profile/ada?action=inc_bogus", 400, `unknown action "inc_bogus": want inc_likes, inc_followers or inc_followings`},
		{"POST", "/v1/profile/ada", 400, `unknown action ""`},
		{"POST", "/v1/profile/ada?action=likes", 400, `unknown action "likes"`},
		{"POST", "/v1/profile/a%20b?action=inc_likes", 400, "bad user name"},
		{"POST", "/v1/profile/" + strings.Repeat("x", 65) + "?action=inc_likes", 400, "bad user name"},
		{"GET", "/v1/profile/ada?action=inc_likes", 405, "Method Not Allowed"},
		{"GET", "/stream/a%2Fb", 400, "bad user name"},
	} {
		req, err := http.NewRequest(tt.method, url+tt.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.method, tt.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code || !strings.Contains(string(body), tt.body) {
			t.Errorf("%s %s: %d %q; want %d and %q", tt.method, tt.path, resp.StatusCode, body, tt.code, tt.body)
		}
	}
	var rows int
	if err := db.QueryRow(`SELECT count(*) FROM profile`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("profile has %d rows (%v) after refused requests; want 0", rows, err)
	}
}

// TestDatabaseRefuses: a statement Postgres refuses is a 500 with its reason.
func TestDatabaseRefuses(t *testing.T) {
	t.Parallel()
	dsn, admin := testdb.New(t)
	applySchema(t, admin)
	// The app connects as a role of its own, as it would in production.
	var role string
	if err := admin.QueryRow(`SELECT current_database() || '_app'`).Scan(&role); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN`, // left behind: the cluster is thrown away
		`GRANT SELECT, INSERT, UPDATE ON profile TO ` + role,
		// The table's trigger publishes each change (schema.sql).
		`GRANT EXECUTE ON FUNCTION pgmirror_publish_channel(text, text) TO ` + role,
		// The watch lets the roles that may write profile when it runs
		// update the cache (docs/security.md): run it after the grants.
		`SELECT pgmirror_watch('profile', 'username', 'profile:', '{likes,followers,followings}', 'copy')`,
	} {
		if _, err := admin.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db := testdb.Open(t, strings.Replace(dsn, "user=postgres", "user="+role, 1))
	url := serve(t, &app{db: db}) // the write path does not use the sidecar

	if code, body := post(t, url+"/v1/profile/ada?action=inc_likes"); code != 200 {
		t.Fatalf("POST as %s: %d %q; want 200", role, code, body)
	}
	if _, err := admin.Exec(`REVOKE UPDATE ON profile FROM ` + role); err != nil {
		t.Fatal(err)
	}
	code, body := post(t, url+"/v1/profile/ada?action=inc_likes")
	if code != http.StatusInternalServerError || !strings.Contains(body, "counter not updated: pq: permission denied for table profile") {
		t.Fatalf("POST after REVOKE UPDATE: %d %q; want 500 and permission denied", code, body)
	}
	if got, want := counters(t, admin, "ada"), `{"likes":1,"followers":0,"followings":0}`; got != want {
		t.Fatalf("row: %s; want %s", got, want)
	}
}

// TestDatabaseDown: with Postgres stopped a POST fails fast with 503, and
// works again once Postgres is back.
func TestDatabaseDown(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t) // a cluster of its own, to stop
	db := testdb.Migrate(t, pg.CreateDB(t))
	applySchema(t, db)
	url := serve(t, &app{db: db}) // the write path does not use the sidecar

	inc := url + "/v1/profile/ada?action=inc_likes"
	if code, body := post(t, inc); code != 200 {
		t.Fatalf("POST: %d %q; want 200", code, body)
	}
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	code, body := post(t, inc)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "counter not updated: ") {
		t.Fatalf("POST with Postgres stopped: %d %q; want 503 and the reason", code, body)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("POST with Postgres stopped took %v; want a prompt failure", took)
	}
	t.Logf("with Postgres stopped: %d %s", code, strings.TrimSpace(body))

	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		code, body := post(t, inc)
		return code == 200, fmt.Sprintf("POST after restart: %d %q", code, body)
	})
	if got, want := counters(t, db, "ada"), `{"likes":2,"followers":0,"followings":0}`; got != want {
		t.Fatalf("row: %s; want %s (the failed POST must not count)", got, want)
	}
}

// sse reads a stream's data lines into a channel.
type sse struct {
	events chan string
	errs   chan error
}

func openStream(t *testing.T, url string) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s: %s, Content-Type %q; want 200 text/event-stream", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	s := &sse{events: make(chan string, 100), errs: make(chan error, 1)}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				s.events <- data
			}
		}
		s.errs <- fmt.Errorf("stream ended: %v", sc.Err())
	}()
	return s
}

// next waits for the stream's next event.
func (s *sse) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case e := <-s.events:
		return e
	case err := <-s.errs:
		t.Fatal(err)
	case <-time.After(timeout):
		t.Fatalf("no event within %v", timeout)
	}
	return ""
}

func TestStream(t *testing.T) {
	t.Parallel()
	url, db, _ := startApp(t)
	ada := openStream(t, url+"/stream/ada")
	if e := ada.next(t, 5*time.Second); e != "null" {
		t.Fatalf("first event of a user without a row: %q; want null", e)
	}
	again := openStream(t, url+"/stream/ada")
	if e := again.next(t, 5*time.Second); e != "null" {
		t.Fatalf("first event of the second stream: %q; want null", e)
	}

	// A POST reaches every stream of the user.
	if code, body := post(t, url+"/v1/profile/ada?action=inc_likes"); code != 200 {
		t.Fatalf("POST: %d %q", code, body)
	}
	for _, s := range []*sse{ada, again} {
		if e, want := s.next(t, 5*time.Second), `{"likes":1,"followers":0,"followings":0}`; e != want {
			t.Fatalf("event after the POST: %q; want %s", e, want)
		}
	}

	// So does a change made in SQL by anyone else, and another user's does not.
	if code, body := post(t, url+"/v1/profile/bob?action=inc_likes"); code != 200 {
		t.Fatalf("POST bob: %d %q", code, body)
	}
	if _, err := db.Exec(`UPDATE profile SET followers = 41 WHERE username = 'ada'`); err != nil {
		t.Fatal(err)
	}
	if e, want := ada.next(t, 5*time.Second), `{"likes":1,"followers":41,"followings":0}`; e != want {
		t.Fatalf("event after an UPDATE in SQL: %q; want %s", e, want)
	}
	if code, body := post(t, url+"/v1/profile/ada?action=inc_followers"); code != 200 {
		t.Fatalf("POST: %d %q", code, body)
	}
	if e, want := ada.next(t, 5*time.Second), `{"likes":1,"followers":42,"followings":0}`; e != want {
		t.Fatalf("event after the POST: %q; want %s", e, want)
	}

	// A stream opened later starts with the current value.
	if e, want := openStream(t, url+"/stream/ada").next(t, 5*time.Second), `{"likes":1,"followers":42,"followings":0}`; e != want {
		t.Fatalf("first event of a new stream: %q; want %s", e, want)
	}
}

// TestStreamOnPublishFromSQL: the stream is fed by the messages the table's
// trigger publishes from SQL on channel profile:{user} through every
// sidecar, not by reading the cache: a message published by hand reaches
// it, a second sidecar's stream gets the POSTs made through the first
// app's database, and a DELETE of the row sends null.
func TestStreamOnPublishFromSQL(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	applySchema(t, db)
	one := sidecartest.Start(t, dsn, sidecartest.Config{})
	two := sidecartest.Start(t, dsn, sidecartest.Config{})
	url := serve(t, &app{db: db, rdb: one.Client})
	other := serve(t, &app{db: db, rdb: two.Client})
	s1, s2 := openStream(t, url+"/stream/ada"), openStream(t, other+"/stream/ada")
	for _, s := range []*sse{s1, s2} {
		if e := s.next(t, 5*time.Second); e != "null" {
			t.Fatalf("first event: %q; want null", e)
		}
	}
	if code, body := post(t, url+"/v1/profile/ada?action=inc_likes"); code != 200 {
		t.Fatalf("POST: %d %q", code, body)
	}
	for _, s := range []*sse{s1, s2} {
		if e, want := s.next(t, 5*time.Second), `{"likes":1,"followers":0,"followings":0}`; e != want {
			t.Fatalf("event after the POST: %q; want %s", e, want)
		}
	}
	// A message that is no change of the cache: only PUBLISH can bring it.
	if _, err := db.Exec(`SELECT pgmirror_publish_channel('profile:ada', '{"likes":7,"followers":7,"followings":7}')`); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*sse{s1, s2} {
		if e, want := s.next(t, 5*time.Second), `{"likes":7,"followers":7,"followings":7}`; e != want {
			t.Fatalf("event after a message published in SQL: %q; want %s", e, want)
		}
	}
	if _, err := db.Exec(`DELETE FROM profile WHERE username = 'ada'`); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*sse{s1, s2} {
		if e := s.next(t, 5*time.Second); e != "null" {
			t.Fatalf("event after the DELETE: %q; want null", e)
		}
	}
}

// TestReadFromClientSideCache: GET /v1/counters/{user} answers from
// rueidis's client-side cache (a second read is a hit, no trip to the
// sidecar), and a change Postgres makes — a POST's UPDATE, an UPDATE and a
// DELETE in plain SQL — reaches that cache within a second.
func TestReadFromClientSideCache(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	applySchema(t, db)
	sc := sidecartest.Start(t, dsn, sidecartest.Config{})
	csc, err := newCSC(sc.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(csc.Close)
	url := serve(t, &app{db: db, rdb: sc.Client, csc: csc})
	read := func() (string, string) {
		resp, err := http.Get(url + "/v1/counters/ada")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(body)), resp.Header.Get("X-Cache")
	}
	if code, _ := post(t, url+"/v1/profile/ada?action=inc_likes"); code != http.StatusOK {
		t.Fatalf("POST: %d", code)
	}
	want := `{"likes":1,"followers":0,"followings":0}`
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		v, _ := read()
		return v == want, fmt.Sprintf("read %s, want %s", v, want)
	})
	if v, cache := read(); v != want || cache != "hit" {
		t.Fatalf("second read: %s (%s), want %s from the client-side cache", v, cache, want)
	}
	steps := []struct{ sql, want string }{
		{`UPDATE profile SET likes = 41 WHERE username = 'ada'`, `{"likes":41,"followers":0,"followings":0}`},
		{`DELETE FROM profile WHERE username = 'ada'`, `null`},
	}
	for _, s := range steps {
		if _, err := db.Exec(s.sql); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, time.Second, func() (bool, string) {
			v, _ := read()
			return v == s.want, fmt.Sprintf("after %s: read %s, want %s", s.sql, v, s.want)
		})
	}
}
