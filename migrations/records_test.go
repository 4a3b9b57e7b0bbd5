package migrations_test

import (
	"strings"
	"testing"

	"github.com/lib/pq"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
)

// TestRecordsBuiltOnce: in the installed functions (what Postgres runs, not
// the files), the delete record is built by pgmirror_delete_record alone,
// and INCRBYFLOAT's number is parsed by pgmirror_parse_float alone, which
// holds the parse once. Both helpers run with their caller's rights: they
// are not SECURITY DEFINER, PUBLIC may not execute them, and a superuser's
// migrate hands them to pgmirror_owner like every function of pgmirror.
// The schema's name needs quoting, so an unqualified reference that only
// worked in public would show.
func TestRecordsBuiltOnce(t *testing.T) {
	const schema = "Cache Schema"
	dsn := pgtest.Shared(t).CreateDB(t)
	exec(t, testdb.Open(t, dsn), `CREATE SCHEMA `+pq.QuoteIdentifier(schema))
	db := testdb.Migrate(t, dsn+" search_path="+pgtestQuote(pq.QuoteIdentifier(schema)))

	// The functions of pgmirror whose body contains each marker.
	holders := func(marker string) []string {
		t.Helper()
		rows, err := db.Query(`SELECT p.proname FROM pg_proc p
			WHERE p.pronamespace = $1::regnamespace AND p.proname LIKE 'pgmirror\_%' AND strpos(p.prosrc, $2) > 0
			ORDER BY 1`, pq.QuoteIdentifier(schema), marker)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return names
	}
	for _, c := range []struct{ marker, want string }{
		{`'D '`, "pgmirror_delete_record"},
		{`'D'`, ""},
		{`[eE][+-]?[0-9]`, "pgmirror_parse_float"},    // the number's pattern
		{`not a valid float`, "pgmirror_parse_float"}, // its error
		{`nan)$`, "pgmirror_parse_float"},
		{`(inf|infinity)`, "pgmirror_parse_float"},
		{`pgmirror_delete_record(`, "pgmirror_notify_delete pgmirror_notify_update pgmirror_tx_publish pgmirror_write"},
		{`pgmirror_parse_float(`, "pgmirror_write_commands"},
		{`'P '`, "pgmirror_flush_record"},
		{`pgmirror_flush_record(`, "pgmirror_flush"},
		{`pgmirror_store(`, "pgmirror_write_commands"},
	} {
		if got := strings.Join(holders(c.marker), " "); got != c.want {
			t.Errorf("functions whose body holds %s: %q, want %q", c.marker, got, c.want)
		}
	}
	var src string
	if err := db.QueryRow(`SELECT prosrc FROM pg_proc WHERE oid = 'pgmirror_write_commands(jsonb, bytea, bigint)'::regprocedure`).Scan(&src); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(src, "pgmirror_parse_float("); n != 2 {
		t.Errorf("pgmirror_write_commands calls pgmirror_parse_float %d times, want 2 (the value, the increment)", n)
	}
	if err := db.QueryRow(`SELECT prosrc FROM pg_proc WHERE oid = 'pgmirror_parse_float(text)'::regprocedure`).Scan(&src); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(src, "~ float_re"); n != 1 {
		t.Errorf("pgmirror_parse_float matches the number's pattern %d times, want 1", n)
	}

	for _, fn := range []string{"pgmirror_delete_record(text)", "pgmirror_parse_float(text)",
		"pgmirror_flush_record(bigint,text,text[])", "pgmirror_flush(text)",
		"pgmirror_store(text,bytea,timestamptz,boolean,bigint)"} {
		var definer, public, super bool
		var owner string
		err := db.QueryRow(`SELECT p.prosecdef,
				p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'),
				r.rolsuper, r.rolname
			  FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner WHERE p.oid = $1::regprocedure`, fn).
			Scan(&definer, &public, &super, &owner)
		if err != nil {
			t.Fatalf("%s: %v", fn, err)
		}
		if definer || public || super {
			t.Errorf("%s: SECURITY DEFINER %v, PUBLIC may execute %v, owned by superuser %v (%s); want all false",
				fn, definer, public, super, owner)
		}
	}

	// What they build: a delete record takes a version of its own each call.
	var rec1, rec2 string
	if err := db.QueryRow(`SELECT pgmirror_delete_record('ké'), pgmirror_delete_record('ké')`).Scan(&rec1, &rec2); err != nil {
		t.Fatal(err)
	}
	f1, f2 := strings.Fields(rec1), strings.Fields(rec2)
	if len(f1) != 3 || f1[0] != "D" || f1[2] != "a8Op" || len(f2) != 3 || f2[1] == f1[1] {
		t.Errorf("delete records %q, %q; want \"D <version> a8Op\" with two versions", rec1, rec2)
	}
	// A flush record: the version, the prefix ("-" for none), the kept prefixes.
	if err := db.QueryRow(`SELECT pgmirror_flush_record(7, 'ké', ARRAY['ké:a', 'ké:b']), pgmirror_flush_record(8, '', '{}')`).
		Scan(&rec1, &rec2); err != nil {
		t.Fatal(err)
	}
	if rec1 != "P 7 a8Op a8OpOmE= a8OpOmI=" || rec2 != "P 8 -" {
		t.Errorf("flush records %q, %q", rec1, rec2)
	}
}
