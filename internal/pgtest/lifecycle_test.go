package pgtest_test

import (
	"context"
	"os"
	"strconv"
	"testing"

	"pgmirror/internal/pgtest"
)

func itoa(n int) string { return strconv.Itoa(n) }

func TestRestart(t *testing.T) {
	s := pgtest.New(t)
	ctx := context.Background()
	old, err := open(t, s.DSN("postgres")).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	pid := s.PID()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.PID() == pid || s.PID() == 0 {
		t.Fatalf("PID after restart = %d, before %d", s.PID(), pid)
	}
	if _, err := old.ExecContext(ctx, "SELECT 1"); err == nil {
		t.Error("connection from before the restart still works")
	}
	queryInt(t, open(t, s.DSN("postgres")), "SELECT 1")
	queryInt(t, open(t, s.TCPDSN("postgres")), "SELECT 1")
}

func TestStopStart(t *testing.T) {
	s := pgtest.New(t)
	dsn := s.CreateDB(t)
	s.Exec(t, dsn, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)")
	port, sock := s.Port(), s.SocketDir()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if s.PID() != 0 {
		t.Fatal("PID non-zero after Stop")
	}
	if err := open(t, dsn).Ping(); err == nil {
		t.Fatal("stopped server accepts connections")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if s.Port() != port || s.SocketDir() != sock {
		t.Fatal("Start moved the server")
	}
	if n := queryInt(t, open(t, dsn), "SELECT count(*) FROM kept"); n != 1 {
		t.Fatalf("rows after restart = %d", n)
	}
}

func TestKillStartRecovers(t *testing.T) {
	s := pgtest.New(t)
	dsn := s.CreateDB(t)
	db := open(t, dsn)
	if _, err := db.Exec("CREATE TABLE committed (x int); INSERT INTO committed VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	pid := s.PID()
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if s.PID() != 0 {
		t.Fatal("PID non-zero after Kill")
	}
	if _, err := os.Stat("/proc/" + itoa(pid)); err == nil && isAlive(pid) {
		t.Fatal("postmaster alive after Kill")
	}
	if err := s.Kill(); err == nil {
		t.Error("Kill of a stopped server succeeded")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, open(t, dsn), "SELECT count(*) FROM committed"); n != 1 {
		t.Fatalf("rows after crash recovery = %d", n)
	}
}

func TestCloseIdempotent(t *testing.T) {
	s, err := pgtest.Start(pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(s.SocketDir()); !os.IsNotExist(err) {
		t.Errorf("temporary directory survived Close: %v", err)
	}
	if s.PID() != 0 {
		t.Error("PID non-zero after Close")
	}
	if err := s.Start(); err == nil {
		t.Error("Start after Close succeeded")
	}
}
