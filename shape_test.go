package main

// The shape of the code base, checked so it stays easy to read: short
// functions, files of a readable size, and a README code map that names
// every package.

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// Limits on code outside bench/ and tests.
const (
	maxFuncLines = 80
	maxFileLines = 700
)

// sourceFiles lists the Go files the limits apply to: not tests, not bench/.
func sourceFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && (path == "bench" || strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// declarative reports whether a function only returns one composite literal:
// a table, exempt from the length limit.
func declarative(body *ast.BlockStmt) bool {
	if len(body.List) != 1 {
		return false
	}
	ret, ok := body.List[0].(*ast.ReturnStmt)
	if !ok || len(ret.Results) != 1 {
		return false
	}
	_, ok = ret.Results[0].(*ast.CompositeLit)
	return ok
}

func TestFunctionAndFileLengths(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	for _, path := range sourceFiles(t) {
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n := fset.File(f.Pos()).LineCount(); n > maxFileLines {
			t.Errorf("%s has %d lines, more than %d: split it by concern", path, n, maxFileLines)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			var body *ast.BlockStmt
			name := "a function literal"
			switch fn := n.(type) {
			case *ast.FuncDecl:
				body, name = fn.Body, fn.Name.Name
			case *ast.FuncLit:
				body = fn.Body
			}
			if body == nil || declarative(body) {
				return true
			}
			start := fset.Position(n.Pos())
			if lines := fset.Position(body.Rbrace).Line - start.Line + 1; lines > maxFuncLines {
				t.Errorf("%s:%d: %s has %d lines, more than %d", path, start.Line, name, lines, maxFuncLines)
			}
			return true
		})
	}
}

// codeMapEntry is a list item of README's code map: "- `mirror/` ..." or "- `pgmirror` ...".
var codeMapEntry = regexp.MustCompile("^- `([^`]+)`")

func TestReadmeCodeMapNamesEveryPackage(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	want := strings.Fields(string(out))
	// The modules nested in the repository (bench/chart) are not in ./... of the root.
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "go.mod" || path == "go.mod" {
			return err
		}
		cmd := exec.Command("go", "list", "./...")
		cmd.Dir = filepath.Dir(path)
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("go list in %s: %v", cmd.Dir, err)
		}
		want = append(want, strings.Fields(string(out))...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.Open("README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer readme.Close()
	var got []string
	in := false
	sc := bufio.NewScanner(readme)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = line == "## Code map"
			continue
		}
		if m := codeMapEntry.FindStringSubmatch(line); in && m != nil {
			pkg := "pgmirror"
			if dir := strings.TrimSuffix(m[1], "/"); dir != "pgmirror" {
				pkg += "/" + dir
			}
			got = append(got, pkg)
		}
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("README's code map names\n  %s\nbut go list ./... has\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestTestsUseTheOneWiring: no test builds a listener or a mirror beside
// the sidecar package (tests get whole sidecars from internal/sidecartest),
// and the shared test helpers are defined once, in internal/testutil.
func TestTestsUseTheOneWiring(t *testing.T) {
	t.Parallel()
	banned := map[string]*regexp.Regexp{
		"builds a listener by hand (use internal/sidecartest)": regexp.MustCompile(`listener\.Listener\{`),
		"defines eventually again (use testutil.Eventually)":   regexp.MustCompile(`(?m)^func [eE]ventually\(`),
		"defines syncBuffer again (use testutil.SyncBuffer)":   regexp.MustCompile(`(?m)^type syncBuffer `),
	}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasPrefix(path, "internal/testutil/") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for why, re := range banned {
			if re.Match(b) && (strings.HasSuffix(path, "_test.go") || strings.HasPrefix(path, "internal/")) {
				t.Errorf("%s %s", path, why)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
