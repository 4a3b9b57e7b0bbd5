// Package pgtest runs throwaway PostgreSQL clusters for tests.
//
// It owns the whole life of each cluster: finding the server binaries,
// initdb into a private temporary directory (a per-process template is
// copied so that only the first cluster pays for initdb), starting and
// stopping the postmaster, and removing everything afterwards. Every
// cluster listens on a unix socket inside its temporary directory and on a
// free TCP port on 127.0.0.1, and preloads pg_stat_statements so tests can
// count the queries a component issues.
//
// No postmaster outlives the test binary, even when a test panics or calls
// os.Exit: postmasters are forked from one OS thread that stays locked for
// the life of the process and get SIGQUIT (immediate shutdown) as their
// parent-death signal. Temporary directories left behind by such crashes are
// swept by the next run.
//
// Under root the clusters run as the unprivileged "postgres" user, because
// initdb and postgres refuse to run as root.
//
// Typical use:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		dsn := pgtest.Shared(t).CreateDB(t)
//		...
//	}
package pgtest
