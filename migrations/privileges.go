package migrations

// Privilege checks and fixes that Apply runs on every migrate
// (docs/security.md): the refusal of a schema that other roles may CREATE in,
// and, after the SQL files, the invariants of every SECURITY DEFINER function
// of pgmirror (fixed search_path, no EXECUTE for PUBLIC, a non-superuser
// owner), which hold whichever file or `pgmirror watch` created the function.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/lib/pq"
)

// The roles of docs/security.md.
const (
	// SidecarRole is the NOLOGIN role whose members (the sidecars' login
	// roles) may run pgmirror_write, read pgmirror's tables and silence the
	// notify triggers during their own write batches; migration 0006 creates it.
	SidecarRole = "pgmirror_sidecar"
	// WriterRole is the NOLOGIN role for applications that write
	// cache_entries with plain SQL; migration 0006 creates it.
	WriterRole = "pgmirror_writer"
	// OwnerRole is the NOLOGIN role that owns pgmirror's objects when migrate
	// runs as a superuser, so that no SECURITY DEFINER function runs as one.
	OwnerRole = "pgmirror_owner"
)

// SharedSchemaError is the refusal of a schema in which roles other than
// pgmirror's may create objects.
type SharedSchemaError struct {
	// Schema is the schema migrate was to use.
	Schema string
	// Roles are the roles that may CREATE in it, quoted as SQL names them;
	// PUBLIC alone when every role may.
	Roles []string
}

// Error says why the schema is refused and how to fix it.
func (e *SharedSchemaError) Error() string {
	roles := e.Roles
	more := ""
	if len(roles) > 10 {
		more = fmt.Sprintf(" and %d more", len(roles)-10)
		roles = roles[:10]
	}
	schema := pq.QuoteIdentifier(e.Schema)
	return fmt.Sprintf("schema %s lets roles other than pgmirror's create objects in it (%s%s): a function or operator "+
		"created there can take the place of one that pgmirror's SECURITY DEFINER functions call, and run with their "+
		"owner's rights whenever anyone writes cache_entries. Revoke it (REVOKE CREATE ON SCHEMA %s FROM %s;), or give "+
		"pgmirror a schema of its own (CREATE SCHEMA pgmirror; and search_path=pgmirror in the DSN), or, if every role "+
		"that may create there is trusted, run migrate with --allow-shared-schema (PGMIRROR_ALLOW_SHARED_SCHEMA=true)",
		schema, strings.Join(roles, ", "), more, schema, strings.Join(e.Roles, ", "))
}

// schemaCreators returns the roles other than pgmirror's that may CREATE in
// schema: PUBLIC alone when it may, else every role that is not a
// superuser, nor (a member of) the schema's owner, the migrating role or
// OwnerRole.
func schemaCreators(ctx context.Context, tx *sql.Tx, schema string) ([]string, error) {
	var public bool
	err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT FROM pg_namespace n, aclexplode(n.nspacl) a
		WHERE n.nspname = $1 AND a.grantee = 0 AND a.privilege_type = 'CREATE')`, schema).Scan(&public)
	if err != nil {
		return nil, fmt.Errorf("inspect the privileges of schema %s: %w", schema, err)
	}
	if public {
		return []string{"PUBLIC"}, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT quote_ident(r.rolname) FROM pg_roles r, pg_namespace n
		WHERE n.nspname = $1 AND NOT r.rolsuper AND has_schema_privilege(r.oid, n.oid, 'CREATE')
		  AND NOT pg_has_role(r.oid, n.nspowner, 'MEMBER')
		  AND NOT pg_has_role(r.oid, (SELECT oid FROM pg_roles WHERE rolname = current_user), 'MEMBER')
		  AND NOT EXISTS (SELECT FROM pg_roles o WHERE o.rolname = $2 AND pg_has_role(r.oid, o.oid, 'MEMBER'))
		ORDER BY 1`, schema, OwnerRole)
	if err != nil {
		return nil, fmt.Errorf("inspect the privileges of schema %s: %w", schema, err)
	}
	defer rows.Close()
	var roles []string
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, err
		}
		roles = append(roles, r)
	}
	return roles, rows.Err()
}

// secure makes every SECURITY DEFINER function of pgmirror in schema safe to
// run for anyone: search_path "pg_catalog, <schema>, pg_temp", no EXECUTE
// for PUBLIC, and, when migrate runs as a superuser, pgmirror's tables,
// sequences and functions handed to OwnerRole (created if absent) so that
// none of them runs as a superuser; a later CREATE by a superuser (a new
// function in triggers.sql, a watch) is handed over by the next run. It also
// grants SidecarRole SELECT on pgmirror_secret when that table exists. It
// returns what it changed.
func secure(ctx context.Context, tx *sql.Tx, schema string, log hclog.Logger) (changed []string, err error) {
	did := func(format string, args ...any) {
		what := fmt.Sprintf(format, args...)
		log.Info("securing", "change", what, "schema", schema)
		changed = append(changed, what)
	}
	var super bool
	if err := tx.QueryRowContext(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		return nil, fmt.Errorf("inspect the migrating role: %w", err)
	}
	if super {
		if err := handOver(ctx, tx, schema, did); err != nil {
			return nil, err
		}
	}
	if err := secureDefiners(ctx, tx, schema, did); err != nil {
		return nil, err
	}
	if err := grantSecret(ctx, tx, schema, did); err != nil {
		return nil, err
	}
	return changed, nil
}

// handOver, for a superuser's migrate, creates OwnerRole if absent, grants
// it USAGE on schema, and hands it pgmirror's tables, sequences and
// functions that superusers own. did records each change.
func handOver(ctx context.Context, tx *sql.Tx, schema string, did func(string, ...any)) error {
	created, err := ensureRole(ctx, tx, OwnerRole)
	if err != nil {
		return err
	}
	if created {
		did("created role %s", OwnerRole)
	}
	var usage bool
	if err := tx.QueryRowContext(ctx, `SELECT has_schema_privilege($1, $2, 'USAGE')`, OwnerRole, schema).Scan(&usage); err != nil {
		return fmt.Errorf("inspect the privileges of %s: %w", OwnerRole, err)
	}
	if !usage {
		if err := execf(ctx, tx, `GRANT USAGE ON SCHEMA %s TO %s`, pq.QuoteIdentifier(schema), OwnerRole); err != nil {
			return err
		}
		did("granted USAGE on schema %s to %s", schema, OwnerRole)
	}
	objs, err := strings2(ctx, tx, superOwnedQuery, schema)
	if err != nil {
		return fmt.Errorf("list pgmirror's objects owned by superusers: %w", err)
	}
	var moved []string
	for _, o := range objs {
		if err := execf(ctx, tx, `ALTER %s %s OWNER TO %s`, o[0], o[1], OwnerRole); err != nil {
			return err
		}
		moved = append(moved, o[1])
	}
	if len(moved) > 0 {
		did("handed %d objects owned by superusers to %s: %s", len(moved), OwnerRole, strings.Join(moved, ", "))
	}
	return nil
}

// superOwnedQuery lists, as (kind, qualified name), pgmirror's tables,
// views, sequences and functions in schema $1 that a superuser owns,
// sequences last (a sequence owned by a column moves with its table).
const superOwnedQuery = `SELECT kind, name FROM (
	SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
	       format('%I.%I', n.nspname, c.relname) AS name, c.relkind = 'S' AS seq
	  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles o ON o.oid = c.relowner
	 WHERE n.nspname = $1 AND o.rolsuper AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
	   AND (c.relname IN ('cache_entries', 'cache_loaders') OR c.relname LIKE 'pgmirror\_%')
	   -- a sequence owned by a column moves with its table
	   AND NOT (c.relkind = 'S' AND EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
	            AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
	UNION ALL
	SELECT 'FUNCTION', format('%I.%I(%s)', n.nspname, p.proname, oidvectortypes(p.proargtypes)), false
	  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles o ON o.oid = p.proowner
	 WHERE n.nspname = $1 AND o.rolsuper AND p.proname LIKE 'pgmirror\_%') x
	ORDER BY seq, kind, name`

// secureDefiners sets search_path to "pg_catalog, <schema>, pg_temp" on, and
// revokes EXECUTE from PUBLIC on, every SECURITY DEFINER function of pgmirror
// in schema that lacks either. did records each change.
func secureDefiners(ctx context.Context, tx *sql.Tx, schema string, did func(string, ...any)) error {
	fns, err := strings2(ctx, tx, `SELECT format('%I.%I(%s)', n.nspname, p.proname, oidvectortypes(p.proargtypes)),
			concat_ws(' ',
				CASE WHEN coalesce((SELECT substr(c, 13) FROM unnest(p.proconfig) c WHERE c LIKE 'search\_path=%'), '')
				          <> format('pg_catalog, %I, pg_temp', n.nspname) THEN 'path' END,
				CASE WHEN p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a
				          WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') THEN 'public' END)
		  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		 WHERE n.nspname = $1 AND p.prosecdef AND p.proname LIKE 'pgmirror\_%'
		 ORDER BY 1`, schema)
	if err != nil {
		return fmt.Errorf("list pgmirror's SECURITY DEFINER functions: %w", err)
	}
	var pathFixed, revoked []string
	for _, f := range fns {
		if strings.Contains(f[1], "path") {
			if err := execf(ctx, tx, `ALTER FUNCTION %s SET search_path = pg_catalog, %s, pg_temp`, f[0], pq.QuoteIdentifier(schema)); err != nil {
				return err
			}
			pathFixed = append(pathFixed, f[0])
		}
		if strings.Contains(f[1], "public") {
			if err := execf(ctx, tx, `REVOKE ALL ON FUNCTION %s FROM PUBLIC`, f[0]); err != nil {
				return err
			}
			revoked = append(revoked, f[0])
		}
	}
	if len(pathFixed) > 0 {
		did("set search_path to pg_catalog, %s, pg_temp on %s", schema, strings.Join(pathFixed, ", "))
	}
	if len(revoked) > 0 {
		did("revoked EXECUTE from PUBLIC on %s", strings.Join(revoked, ", "))
	}
	return nil
}

// grantSecret grants SidecarRole SELECT on pgmirror_secret when both exist
// and it lacks it. did records the change.
func grantSecret(ctx context.Context, tx *sql.Tx, schema string, did func(string, ...any)) error {
	var secret bool
	err := tx.QueryRowContext(ctx, `SELECT to_regclass(format('%I.pgmirror_secret', $1::text)) IS NOT NULL
		AND EXISTS (SELECT FROM pg_roles WHERE rolname = $2)
		AND NOT has_table_privilege($2, format('%I.pgmirror_secret', $1::text), 'SELECT')`, schema, SidecarRole).Scan(&secret)
	if err != nil {
		return fmt.Errorf("inspect the privileges on pgmirror_secret: %w", err)
	}
	if secret {
		if err := execf(ctx, tx, `GRANT SELECT ON %s.pgmirror_secret TO %s`, pq.QuoteIdentifier(schema), SidecarRole); err != nil {
			return err
		}
		did("granted SELECT on pgmirror_secret to %s", SidecarRole)
	}
	return nil
}

// ensureRole creates the NOLOGIN role name unless it exists. Roles belong
// to the cluster: a migrate of another database may create it at the same
// moment, and then this one finds it created.
func ensureRole(ctx context.Context, tx *sql.Tx, name string) (created bool, err error) {
	var exists bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)`, name).Scan(&exists); err != nil {
		return false, fmt.Errorf("look for role %s: %w", name, err)
	}
	if exists {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, `SAVEPOINT pgmirror_role`); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, `CREATE ROLE `+pq.QuoteIdentifier(name)+` NOLOGIN`); err != nil {
		var pe *pq.Error
		if errors.As(err, &pe) && (pe.Code == "42710" || pe.Code == "23505") { // duplicate_object, unique_violation
			_, rerr := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT pgmirror_role`)
			return false, rerr
		}
		return false, fmt.Errorf("create role %s: %w", name, err)
	}
	_, err = tx.ExecContext(ctx, `RELEASE SAVEPOINT pgmirror_role`)
	return err == nil, err
}

// execf runs one statement built from trusted parts (quoted names).
func execf(ctx context.Context, tx *sql.Tx, format string, args ...any) error {
	q := fmt.Sprintf(format, args...)
	if _, err := tx.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	return nil
}

// strings2 returns the two text columns of every row of query.
func strings2(ctx context.Context, tx *sql.Tx, query string, args ...any) ([][2]string, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][2]string
	for rows.Next() {
		var r [2]string
		if err := rows.Scan(&r[0], &r[1]); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
