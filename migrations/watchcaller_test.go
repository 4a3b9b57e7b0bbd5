package migrations_test

// The watch's write function serves its own trigger only (migration 0007):
// the ways a role that may write a watched table could otherwise reach it
// with rows of its choosing.

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/lib/pq"

	"pgmirror/internal/testdb"
)

// watchedItems creates appsch.items (owned by app, rows 1 pen and 2 ink),
// lets ins INSERT into it, has the superuser watch it in mode under
// "item:", and returns the pools of the superuser, app and ins, ins's name,
// and the table's oid. ins's pool has one connection, so that its
// temporary objects stay visible to it.
func watchedItems(t *testing.T, mode string) (db, adb, idb *sql.DB, app, ins string, oid int64) {
	t.Helper()
	dsn, db := testdb.New(t)
	app, adb = newRole(t, db, dsn, "app")
	exec(t, db, fmt.Sprintf(`CREATE SCHEMA appsch AUTHORIZATION %s`, pq.QuoteIdentifier(app)))
	exec(t, adb, `CREATE TABLE appsch.items (id int PRIMARY KEY, name text NOT NULL)`)
	exec(t, adb, `INSERT INTO appsch.items VALUES (1, 'pen'), (2, 'ink')`)
	ins, idb = newRole(t, db, dsn, "ins")
	idb.SetMaxOpenConns(1)
	exec(t, adb, fmt.Sprintf(`GRANT USAGE ON SCHEMA appsch TO %[1]s; GRANT INSERT ON appsch.items TO %[1]s`, pq.QuoteIdentifier(ins)))
	var out string
	if err := db.QueryRow(`SELECT pgmirror_watch('appsch.items', 'id', 'item:', NULL, $1)`, mode).Scan(&out); err != nil {
		t.Fatalf("watch: %v", err)
	}
	if err := db.QueryRow(`SELECT 'appsch.items'::regclass::oid`).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	if mode == "invalidate" {
		exec(t, db, `INSERT INTO cache_entries (key, value) VALUES ('item:1', 'cached 1'), ('item:2', 'cached 2')`)
	}
	return db, adb, idb, app, ins, oid
}

// intact fails the test unless the entries of rows 1 and 2 are what the
// watch made them (copy) or what was cached (invalidate).
func intact(t *testing.T, db *sql.DB, mode, attack string) {
	t.Helper()
	want := map[string]string{"item:1": `{"id":1,"name":"pen"}`, "item:2": `{"id":2,"name":"ink"}`}
	if mode == "invalidate" {
		want = map[string]string{"item:1": "cached 1", "item:2": "cached 2"}
	}
	for k, v := range want {
		if got := value(t, db, k); got != v {
			t.Errorf("%s: %s = %q, want %q", attack, k, got, v)
		}
	}
}

// TestWatchTriggerFunctionElsewhere: the genuine trigger function, attached
// to a temporary table whose rows its attacher chose, refuses to run, so it
// cannot hand the write function made-up rows with its own (genuine) frame
// in the error context. Without EXECUTE on it (nobody but its owner has it)
// the trigger cannot even be created; the test grants it to the table's
// writer and to its owner, as a careless administrator might.
func TestWatchTriggerFunctionElsewhere(t *testing.T) {
	for _, mode := range []string{"copy", "invalidate"} {
		t.Run(mode, func(t *testing.T) {
			db, adb, idb, app, ins, oid := watchedItems(t, mode)
			tfn := fmt.Sprintf("public.pgmirror_watch_%d()", oid)
			trampoline := func(conn *sql.DB, who string) {
				t.Helper()
				exec(t, conn, `CREATE TEMP TABLE IF NOT EXISTS trampoline (id int, name text)`)
				exec(t, conn, `DROP TRIGGER IF EXISTS pgmirror_watch_insert ON pg_temp.trampoline`)
				_, err := conn.Exec(`CREATE TRIGGER pgmirror_watch_insert AFTER INSERT ON pg_temp.trampoline
					REFERENCING NEW TABLE AS pgmirror_new FOR EACH STATEMENT EXECUTE FUNCTION ` + tfn)
				if pqCode(err) != "42501" {
					t.Errorf("%s attaches %s to a temporary table without EXECUTE on it: %v, want permission denied", who, tfn, err)
				}
				exec(t, db, fmt.Sprintf(`GRANT EXECUTE ON FUNCTION %s TO %s`, tfn, pq.QuoteIdentifier(who)))
				exec(t, conn, `CREATE TRIGGER pgmirror_watch_insert AFTER INSERT ON pg_temp.trampoline
					REFERENCING NEW TABLE AS pgmirror_new FOR EACH STATEMENT EXECUTE FUNCTION `+tfn)
				_, err = conn.Exec(`INSERT INTO pg_temp.trampoline VALUES (1, 'FORGED'), (2, 'FORGED')`)
				if err == nil || !strings.Contains(err.Error(), "does not run as trigger pgmirror_watch_insert") {
					t.Errorf("%s fires %s on a temporary table: %v, want a refusal", who, tfn, err)
				}
				intact(t, db, mode, who+"'s temporary table with the watch's trigger function")
			}
			trampoline(idb, ins)
			adb.SetMaxOpenConns(1)
			trampoline(adb, app)

			// The genuine path still works for both.
			exec(t, idb, `INSERT INTO appsch.items VALUES (3, 'cap')`)
			exec(t, adb, `UPDATE appsch.items SET name = 'quill' WHERE id = 1`)
			if mode == "copy" {
				if v := value(t, db, "item:3"); v != `{"id":3,"name":"cap"}` {
					t.Errorf("item:3 = %q after ins's insert", v)
				}
				if v := value(t, db, "item:1"); v != `{"id":1,"name":"quill"}` {
					t.Errorf("item:1 = %q after app's update", v)
				}
			} else if v := value(t, db, "item:1"); v != "" {
				t.Errorf("item:1 = %q after app's update, want invalidated", v)
			}
		})
	}
}

// TestWatchWriteFunctionImpostors: a role that may only INSERT into the
// watched table (so it may execute the write function) writes functions
// that pass for the watch's trigger function in the error context the
// write function checks, fires them from a temporary table, and fails each
// time:
//   - the genuine body copied verbatim (same lines, the table check
//     disabled on its line) into a function of the same name in its own
//     schema, under its own search_path (printed unqualified);
//   - the same in a schema whose name holds the expected text, with spaces
//     around it;
//   - the same in pg_temp;
//   - a function named to hold, after a newline, the genuine frame's line;
//   - a call by PERFORM whose query text (in a quoted alias) spells the
//     genuine frame's line after a newline, which defeats any check of the
//     lines after the call's (this one is the reason the trigger calls the
//     write function in an assignment and the check is anchored).
func TestWatchWriteFunctionImpostors(t *testing.T) {
	for _, mode := range []string{"copy", "invalidate"} {
		t.Run(mode, func(t *testing.T) {
			db, _, idb, _, ins, oid := watchedItems(t, mode)
			var src string
			if err := db.QueryRow(`SELECT prosrc FROM pg_proc WHERE oid = $1::regprocedure`,
				fmt.Sprintf("public.pgmirror_watch_%d()", oid)).Scan(&src); err != nil {
				t.Fatal(err)
			}
			check := fmt.Sprintf("TG_RELID <> %d::oid OR", oid)
			if !strings.Contains(src, check) {
				t.Fatalf("the trigger function does not check its table (%q)", check)
			}
			forged := strings.Replace(src, check, "TG_RELID = 0::oid AND", 1)
			call := fmt.Sprintf("ok := public.pgmirror_watch_%d_write(", oid)
			line := 1 + strings.Count(src[:strings.Index(src, call)], "\n")
			genuine := fmt.Sprintf("PL/pgSQL function public.pgmirror_watch_%d() line %d at assignment", oid, line)
			qi := pq.QuoteIdentifier(ins)
			exec(t, db, fmt.Sprintf(`CREATE SCHEMA evil AUTHORIZATION %s`, qi))
			crafted := fmt.Sprintf(" public.pgmirror_watch_%d() ", oid)
			exec(t, db, fmt.Sprintf(`CREATE SCHEMA %s AUTHORIZATION %s`, pq.QuoteIdentifier(crafted), qi))
			exec(t, idb, `CREATE TEMP TABLE trampoline (id int, name text)`)

			impostors := []struct{ name, fn, create string }{
				{"same name in its own schema, its search_path", "evil.pgmirror_watch_%d",
					`CREATE FUNCTION evil.pgmirror_watch_%d() RETURNS trigger LANGUAGE plpgsql
					SET search_path = evil, pg_catalog, public AS %s`},
				{"a schema named with the expected text", pq.QuoteIdentifier(crafted) + ".pgmirror_watch_%d",
					`CREATE FUNCTION ` + pq.QuoteIdentifier(crafted) + `.pgmirror_watch_%d() RETURNS trigger LANGUAGE plpgsql
					SET search_path = pg_catalog, pg_temp AS %s`},
				{"same name in pg_temp", "pg_temp.pgmirror_watch_%d",
					`CREATE FUNCTION pg_temp.pgmirror_watch_%d() RETURNS trigger LANGUAGE plpgsql
					SET search_path = pg_catalog, pg_temp AS %s`},
			}
			for _, im := range impostors {
				fn := fmt.Sprintf(im.fn, oid)
				exec(t, idb, fmt.Sprintf(im.create, oid, pq.QuoteLiteral(forged)))
				fire(t, db, idb, mode, im.name, fn)
			}

			// Names are at most 63 bytes: the newline and what can follow.
			nl := "x\n" + genuine[:61-2]
			exec(t, idb, fmt.Sprintf(`CREATE FUNCTION evil.%s() RETURNS trigger LANGUAGE plpgsql AS %s`,
				pq.QuoteIdentifier(nl), pq.QuoteLiteral(forged)))
			fire(t, db, idb, mode, "a name holding a newline and the genuine line", "evil."+pq.QuoteIdentifier(nl))

			args := `'INSERT', ARRAY['item:1'], ARRAY['{"id":1,"name":"FORGED"}'::bytea], ARRAY['item:2'], 0`
			if mode == "invalidate" {
				args = `'INSERT', NULL, NULL, ARRAY['item:1', 'item:2'], 0`
			}
			exec(t, idb, fmt.Sprintf(`CREATE FUNCTION evil.alias() RETURNS trigger LANGUAGE plpgsql AS $f$
			BEGIN
				PERFORM public.pgmirror_watch_%d_write(%s) "
%s
";
				RETURN NULL;
			END $f$`, oid, args, genuine))
			fire(t, db, idb, mode, "PERFORM with the genuine line in a quoted alias", "evil.alias")
		})
	}
}

// fire attaches fn to ins's temporary table trampoline, inserts made-up
// rows, and fails the test unless the write function refused its caller
// and the entries are intact.
func fire(t *testing.T, db, idb *sql.DB, mode, name, fn string) {
	t.Helper()
	exec(t, idb, `DROP TRIGGER IF EXISTS pgmirror_watch_insert ON pg_temp.trampoline`)
	exec(t, idb, `CREATE TRIGGER pgmirror_watch_insert AFTER INSERT ON pg_temp.trampoline
		REFERENCING NEW TABLE AS pgmirror_new FOR EACH STATEMENT EXECUTE FUNCTION `+fn+`()`)
	_, err := idb.Exec(`INSERT INTO pg_temp.trampoline VALUES (1, 'FORGED'), (2, 'FORGED')`)
	if err == nil || !strings.Contains(err.Error(), "only runs when the watch trigger of appsch.items calls it") {
		t.Errorf("%s: %v, want the write function's refusal", name, err)
	}
	t.Logf("%s: %v", name, err)
	intact(t, db, mode, name)
}

// TestWatchGenuinePathInOtherLanguages: the write function's check derives
// the expected line from its own frame, so the genuine trigger passes in
// whatever language a superuser sets lc_messages to (here those whose
// locale the machine has; Japanese prints no space around the name).
func TestWatchGenuinePathInOtherLanguages(t *testing.T) {
	for _, mode := range []string{"copy", "invalidate"} {
		t.Run(mode, func(t *testing.T) {
			db, _, _, _, _, _ := watchedItems(t, mode)
			db.SetMaxOpenConns(1)
			tried := 0
			for i, lc := range []string{"ja_JP.UTF-8", "de_DE.UTF-8", "tr_TR.UTF-8", "zh_CN.UTF-8", "ko_KR.UTF-8", "fr_FR.UTF-8"} {
				if _, err := db.Exec(`SET lc_messages = ` + pq.QuoteLiteral(lc)); err != nil {
					t.Logf("lc_messages %s: %v (skipped)", lc, err)
					continue
				}
				tried++
				id := 10 + i
				if _, err := db.Exec(`INSERT INTO appsch.items VALUES ($1, 'x')`, id); err != nil {
					t.Errorf("insert under lc_messages %s: %v", lc, err)
				}
				exec(t, db, `INSERT INTO cache_entries (key, value) VALUES ('item:1', 'cached') ON CONFLICT (key) DO UPDATE SET value = 'cached'`)
				if _, err := db.Exec(`UPDATE appsch.items SET name = $1 WHERE id = 1`, lc); err != nil {
					t.Errorf("update under lc_messages %s: %v", lc, err)
				}
				want := fmt.Sprintf(`{"id":1,"name":%q}`, lc)
				if mode == "invalidate" {
					want = ""
				}
				if v := value(t, db, "item:1"); v != want {
					t.Errorf("under lc_messages %s: item:1 = %q, want %q", lc, v, want)
				}
			}
			exec(t, db, `RESET lc_messages`)
			t.Logf("%d languages tried", tried)
		})
	}
}
