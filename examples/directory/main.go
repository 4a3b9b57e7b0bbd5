// Command directory is the employee directory of the pub-sub article, on
// pgmirror: tables employees and departments are watched in copy mode, so
// the sidecar holds every row as JSON, and "who manages employee E" is two
// lookups through the sidecar's socket (employee -> department -> manager),
// answered from the sidecar's memory. The read path has no database handle:
// it cannot issue SQL.
//
//	directory [-socket ./pgmirror.sock] manager-of EMPLOYEE_ID
//
// See README.md beside this file for how to run it against `make run`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
)

// The prefixes of the two watches (schema.sql).
const (
	employeePrefix   = "employee:"
	departmentPrefix = "department:"
)

// ErrNotFound means a row is not in the cache: copy mode mirrors the table,
// so the table has no such row (or is not watched).
var ErrNotFound = errors.New("not found")

// Employee is the cached row of employees.
type Employee struct {
	Name       string `json:"name"`
	Title      string `json:"title"`
	Department string `json:"department"`
}

// Department is the cached row of departments.
type Department struct {
	Name      string `json:"name"`
	Location  string `json:"location"`
	ManagerID string `json:"manager_id"`
}

// Directory reads the directory from the sidecar alone.
type Directory struct {
	Cache redis.Cmdable // the pgmirror sidecar's socket
}

// ManagerOf returns the employee and their department, whose ManagerID is
// the answer: two GETs.
func (d *Directory) ManagerOf(ctx context.Context, employeeID string) (Employee, Department, error) {
	var e Employee
	var dep Department
	if err := d.get(ctx, employeePrefix+employeeID, &e); err != nil {
		return e, dep, fmt.Errorf("employee %s: %w", employeeID, err)
	}
	if err := d.get(ctx, departmentPrefix+e.Department, &dep); err != nil {
		return e, dep, fmt.Errorf("department %s of employee %s: %w", e.Department, employeeID, err)
	}
	return e, dep, nil
}

// Employee returns one employee: one GET.
func (d *Directory) Employee(ctx context.Context, id string) (Employee, error) {
	var e Employee
	if err := d.get(ctx, employeePrefix+id, &e); err != nil {
		return e, fmt.Errorf("employee %s: %w", id, err)
	}
	return e, nil
}

func (d *Directory) get(ctx context.Context, key string, row any) error {
	b, err := d.Cache.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("%w: key %s is not in the cache (no such row, or its table is not watched: see README.md)", ErrNotFound, key)
	}
	if err != nil {
		return fmt.Errorf("GET %s through the sidecar's socket: %w", key, err)
	}
	if err := json.Unmarshal(b, row); err != nil {
		return fmt.Errorf("GET %s: the value is not the row's JSON (%q): %w", key, b, err)
	}
	return nil
}

// quiet drops go-redis's own log lines: run reports every error itself.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func main() {
	redis.SetLogger(quiet{})
	if len(os.Args) == 2 && os.Args[1] == "demo" { // make demo-directory: demo.go
		os.Exit(runDemo(os.Stdout, os.Stderr))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

// run is the command line: 0 answered, 1 failed, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("directory", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "./pgmirror.sock", "the pgmirror sidecar's Unix socket")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: directory [-socket PATH] manager-of EMPLOYEE_ID\n       directory demo   (a throwaway Postgres and sidecar with the sample rows; Ctrl-C stops them)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 || fs.Arg(0) != "manager-of" {
		fs.Usage()
		return 2
	}
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: *socket, MaxRetries: -1, DialerRetries: 1})
	defer rdb.Close()
	d := &Directory{Cache: rdb}

	id := fs.Arg(1)
	e, dep, err := d.ManagerOf(ctx, id)
	if err != nil {
		fmt.Fprintf(stderr, "directory: %v\n", err)
		return 1
	}
	m, err := d.Employee(ctx, dep.ManagerID) // the manager's name, for the reader
	if err != nil {
		fmt.Fprintf(stderr, "directory: manager of department %s (%s): %v\n", e.Department, dep.Name, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s (%s, %s in %s) is managed by %s (%s), employee %s\n",
		e.Name, e.Title, dep.Name, dep.Location, m.Name, m.Title, dep.ManagerID)
	return 0
}
