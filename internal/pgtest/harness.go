package pgtest

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// New starts a private cluster for one test and closes it when the test
// ends; opts, at most one, defaults to Options{}.
func New(t testing.TB, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			// The log usually explains a failure involving the server.
			t.Logf("pgtest: server log tail:\n%s", logTail(s.logPath, 0))
		}
		if err := s.Close(); err != nil {
			t.Errorf("pgtest: closing server: %v", err)
		}
	})
	return s
}

// shared is the package-wide cluster behind Shared.
var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Shared returns the package-wide cluster, starting it on first use; use
// Main in TestMain to close it (else it dies with the test binary and its
// directory is swept by a later run).
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.once.Do(func() { shared.srv, shared.err = Start(Options{}) })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.srv
}

// Main runs the tests, closes the shared cluster and the initdb template,
// and exits with the tests' status; call it from TestMain.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit, for a TestMain with work of its own to undo.
func Run(m *testing.M) int {
	code := m.Run()
	shared.once.Do(func() {}) // waits for a Start in progress; none after
	if shared.srv != nil {
		if err := shared.srv.Close(); err != nil {
			os.Stderr.WriteString("pgtest: closing shared server: " + err.Error() + "\n")
			if code == 0 {
				code = 1
			}
		}
	}
	removeTemplate()
	return code
}

// RepoFile returns the contents of name, relative to the module root (the
// nearest directory above the working directory holding go.mod).
func RepoFile(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		if filepath.Dir(dir) == dir {
			t.Fatalf("pgtest: no go.mod above the working directory")
		}
		dir = filepath.Dir(dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("pgtest: reading %s at the module root: %v", name, err)
	}
	return string(b)
}
