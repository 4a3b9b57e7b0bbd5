package listener

import (
	"errors"
	"fmt"
	"net"
	"os"
	execpkg "os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
)

// startPgbouncer runs Debian's pgbouncer in front of srv with the given pool
// mode and returns a DSN through it. The setup step installs pgbouncer;
// without it the test fails.
func startPgbouncer(t *testing.T, srv *pgtest.Server, dbname, mode string) string {
	t.Helper()
	bin, err := execpkg.LookPath("pgbouncer")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/pgbouncer"); serr != nil {
			t.Fatal("pgbouncer not found: run `make setup` (Debian's pgbouncer package)")
		}
		bin = "/usr/sbin/pgbouncer"
	}
	dir, err := os.MkdirTemp("", "pgb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := fmt.Sprintf(`[databases]
%s = host=%s port=%d dbname=%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s/users.txt
pool_mode = %s
ignore_startup_parameters = extra_float_digits
logfile = %s/pgbouncer.log
pidfile = %s/pgbouncer.pid
`, dbname, srv.SocketDir(), srv.Port(), dbname, port, dir, mode, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"postgres" ""`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := execpkg.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	if os.Geteuid() == 0 { // pgbouncer refuses to run as root
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)},
			Pdeathsig: syscall.SIGKILL}
		os.Chown(dir, uid, gid)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("pgbouncer did not start: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", port, dbname)
}

// TestListenThroughTransactionPooler: LISTEN through pgbouncer in
// transaction mode succeeds but delivers nothing; the listener's probe
// notices and fails with a clear error. In session mode it works.
func TestListenThroughTransactionPooler(t *testing.T) {
	t.Parallel()
	srv := pgtest.Shared(t)
	dsn := srv.CreateDB(t)
	testdb.Migrate(t, dsn)
	name := dsnDB(dsn)

	tx := &Listener{DSN: startPgbouncer(t, srv, name, "transaction"), Sink: &recorder{}, ProbeTimeout: 2 * time.Second}
	if err := tx.Open(); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	var err error
	select {
	case err = <-tx.Err():
	case <-time.After(30 * time.Second):
		t.Fatal("the listener through a transaction pooler did not stop within 30s")
	}
	if !errors.Is(err, ErrNoDelivery) {
		t.Fatalf("listener through a transaction pooler: %v, want ErrNoDelivery", err)
	}
	t.Logf("error: %v", err)

	r := &recorder{}
	session := &Listener{DSN: startPgbouncer(t, srv, name, "session"), Sink: r, ProbeTimeout: 5 * time.Second}
	run(t, session) // fails the test unless the stream comes up
}
