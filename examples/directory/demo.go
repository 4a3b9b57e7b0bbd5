package main

// `directory demo`: what `make demo-directory` runs. It starts what
// README.md otherwise asks for by hand (a throwaway Postgres, pgmirror's
// migrations, schema.sql, the watches of both tables, a sidecar in this
// process), asks who manages Alan Turing, moves Engineering to another
// manager with SQL and asks again, then prints what to try and runs until
// Ctrl-C, which stops the sidecar and Postgres and removes their directories.

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"pgmirror/examples/internal/demo"
	"pgmirror/pgstore"
)

const (
	demoAlan      = "e0000000-0000-4000-8000-000000000002"
	demoKatherine = "e0000000-0000-4000-8000-000000000003"
)

func runDemo(stdout, stderr io.Writer) int {
	ctx, stop := demo.Context()
	defer stop()
	env, err := demo.Start(ctx, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "directory:", err)
		return 1
	}
	defer env.Close()
	sc, err := demoSetup(ctx, env)
	if err == nil {
		err = demoScenario(ctx, env, sc, stdout, stderr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0 // interrupted
		}
		fmt.Fprintln(stderr, "directory:", err)
		return 1
	}
	demoHints(env, sc)
	<-ctx.Done()
	return 0
}

// demoSetup applies schema.sql, watches both tables as README.md says, and
// starts a sidecar.
func demoSetup(ctx context.Context, env *demo.Env) (*demo.Sidecar, error) {
	if err := env.ExecFile(ctx, "examples/directory/schema.sql"); err != nil {
		return nil, err
	}
	for _, w := range []pgstore.WatchSpec{
		{Table: "employees", Key: "id", Prefix: employeePrefix, Columns: []string{"name", "title", "department"}, Mode: "copy"},
		{Table: "departments", Key: "id", Prefix: departmentPrefix, Columns: []string{"name", "location", "manager_id"}, Mode: "copy"},
	} {
		if err := env.Watch(ctx, w); err != nil {
			return nil, err
		}
	}
	sc, err := env.StartSidecar(ctx, "sidecar")
	if err != nil {
		return nil, err
	}
	env.Printf("demo: schema.sql applied (five employees), employees and departments watched, a sidecar on %s", sc.Socket)
	return sc, nil
}

// demoScenario asks, changes the manager in SQL, and asks again once the
// change reached the sidecar.
func demoScenario(ctx context.Context, env *demo.Env, sc *demo.Sidecar, stdout, stderr io.Writer) error {
	ask := func() error {
		env.Printf("\n$ directory manager-of %s", demoAlan)
		if code := run(ctx, []string{"-socket", sc.Socket, "manager-of", demoAlan}, stdout, stderr); code != 0 {
			return fmt.Errorf("manager-of exited %d", code)
		}
		return nil
	}
	if err := ask(); err != nil {
		return err
	}
	update := "UPDATE departments SET manager_id = '" + demoKatherine + "' WHERE name = 'Engineering'"
	env.Printf("\n$ psql -c %q", update)
	if err := env.Exec(ctx, update); err != nil {
		return err
	}
	committed := time.Now()
	d := &Directory{Cache: sc.Client}
	for {
		_, dep, err := d.ManagerOf(ctx, demoAlan)
		if err != nil {
			return err
		}
		if dep.ManagerID == demoKatherine {
			break
		}
		if time.Since(committed) > 10*time.Second {
			return fmt.Errorf("the new manager did not reach the sidecar within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	env.Printf("(the sidecar had the change %v after the commit: the watch's trigger copied the row in the UPDATE's transaction)",
		time.Since(committed).Round(100*time.Microsecond))
	return ask()
}

// demoHints says what to try.
func demoHints(env *demo.Env, sc *demo.Sidecar) {
	env.Printf("\ndemo: running. Try, in another terminal at the repository root:")
	env.Printf("  go run ./examples/directory -socket %s manager-of %s", sc.Socket, demoAlan)
	env.Printf("  psql %q -c \"UPDATE employees SET department = 'd0000000-0000-4000-8000-000000000002' WHERE name = 'Alan Turing'\"", env.DSN)
	env.Printf("  psql %q -c 'TABLE employees'", env.DSN)
	env.Printf("  redis-cli -s %s KEYS '*'", sc.Socket)
	env.Printf("demo: employees %s", strings.Join([]string{
		"e0000000-0000-4000-8000-000000000001 (Grace Hopper)", demoAlan + " (Alan Turing)",
		demoKatherine + " (Katherine Johnson)", "e0000000-0000-4000-8000-000000000004 (Mary Jackson)",
		"e0000000-0000-4000-8000-000000000005 (Dorothy Vaughan)"}, ", "))
	env.Printf("demo: Ctrl-C stops the sidecar and Postgres")
}
