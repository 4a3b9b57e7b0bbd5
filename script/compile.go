package script

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/ast"
	"github.com/yuin/gopher-lua/parse"
)

// chunkName is the name Redis gives a script's chunk ("@user_script"): errors
// read "user_script:3: ...".
const chunkName = "user_script"

// concatName is the hidden local every compiled chunk binds to the bounded
// concatenation: `a .. b .. c` compiles to a call of it, so a script cannot
// double a string past the string limit in a few instructions. No Lua
// identifier can name it.
const concatName = "\x00concat"

// Flags are the flags a script declares in its shebang line
// (#!lua flags=no-writes,allow-oom), as Redis 7 reads them.
type Flags struct {
	Shebang         bool // the script has a #!lua line (Redis's non-compat mode)
	NoWrites        bool // no-writes: the script runs read-only
	AllowOOM        bool // allow-oom
	AllowStale      bool // allow-stale
	NoCluster       bool // no-cluster
	AllowCrossSlots bool // allow-cross-slot-keys
}

// SHA1Hex is the script's sha as Redis computes it: the hex SHA-1 of its body.
func SHA1Hex(body []byte) string {
	sum := sha1.Sum(body)
	return hex.EncodeToString(sum[:])
}

// parseShebang reads a #!lua line: its flags and its length (the newline
// stays, so line numbers do not move). Errors are worded as Redis's.
func parseShebang(body []byte) (Flags, int, error) {
	if !bytes.HasPrefix(body, []byte("#!")) {
		return Flags{}, 0, nil
	}
	end := bytes.IndexByte(body, '\n')
	if end < 0 {
		//lint:ignore ST1005 worded as Redis words it: the reply must match
		return Flags{}, 0, errors.New("Invalid script shebang")
	}
	parts := strings.Fields(string(body[:end]))
	if len(parts) == 0 || parts[0] != "#!lua" {
		engine := ""
		if len(parts) > 0 {
			engine = parts[0]
		}
		//lint:ignore ST1005 worded as Redis words it: the reply must match
		return Flags{}, 0, fmt.Errorf("Unexpected engine in script shebang: %s", engine)
	}
	f := Flags{Shebang: true}
	for _, p := range parts[1:] {
		list, ok := strings.CutPrefix(p, "flags=")
		if !ok {
			//lint:ignore ST1005 worded as Redis words it: the reply must match
			return Flags{}, 0, fmt.Errorf("Unknown lua shebang option: %s", p)
		}
		for _, name := range strings.Split(list, ",") {
			if !f.set(name) {
				//lint:ignore ST1005 worded as Redis words it: the reply must match
				return Flags{}, 0, fmt.Errorf("Unexpected flag in script shebang: %s", name)
			}
		}
	}
	return f, end, nil
}

func (f *Flags) set(name string) bool {
	switch name {
	case "no-writes":
		f.NoWrites = true
	case "allow-oom":
		f.AllowOOM = true
	case "allow-stale":
		f.AllowStale = true
	case "no-cluster":
		f.NoCluster = true
	case "allow-cross-slot-keys":
		f.AllowCrossSlots = true
	case "":
	default:
		return false
	}
	return true
}

// compile parses src and compiles it with every concatenation routed through
// the bounded concat. The error is worded as Lua's: "user_script:1: ...".
func compile(src []byte, name string) (*lua.FunctionProto, error) {
	chunk, err := parse.Parse(bytes.NewReader(src), name)
	if err != nil {
		return nil, syntaxError(err, name, bytes.Count(src, []byte("\n"))+1)
	}
	chunk = rewriteChunk(chunk)
	proto, err := lua.Compile(chunk, name)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	// A main chunk has no Lua 5.0 'arg' table in Lua 5.1 (gopher-lua would
	// build one on every call).
	proto.IsVarArg &^= lua.VarArgNeedsArg
	return proto, nil
}

// syntaxError words a parse error as Lua's "user_script:1: ... near 'x'";
// an error at the end of the source is on its last line.
func syntaxError(err error, name string, lines int) error {
	var pe *parse.Error
	if !errors.As(err, &pe) {
		return fmt.Errorf("%s: %v", name, err)
	}
	if pe.Pos.Line == parse.EOF {
		return fmt.Errorf("%s:%d: %s near '<eof>'", name, lines, pe.Message)
	}
	return fmt.Errorf("%s:%d: %s near '%s'", name, pe.Pos.Line, pe.Message, pe.Token)
}

// rewriteChunk binds the hidden local and rewrites every concatenation.
func rewriteChunk(chunk []ast.Stmt) []ast.Stmt {
	var r rewriter
	r.stmts(chunk)
	bind := &ast.LocalAssignStmt{Names: []string{concatName}, Exprs: []ast.Expr{&ast.IdentExpr{Value: concatName}}}
	bind.SetLine(1)
	bind.SetLastLine(1)
	return append([]ast.Stmt{bind}, chunk...)
}

// rewriter replaces each chain of `..` with one call of the bounded concat.
type rewriter struct{}

func (r rewriter) stmts(list []ast.Stmt) {
	for _, s := range list {
		r.stmt(s)
	}
}

func (r rewriter) stmt(s ast.Stmt) {
	switch s := s.(type) {
	case *ast.AssignStmt:
		r.exprs(s.Lhs)
		r.exprs(s.Rhs)
	case *ast.LocalAssignStmt:
		r.exprs(s.Exprs)
	case *ast.FuncCallStmt:
		s.Expr = r.expr(s.Expr)
	case *ast.DoBlockStmt:
		r.stmts(s.Stmts)
	case *ast.WhileStmt:
		s.Condition = r.expr(s.Condition)
		r.stmts(s.Stmts)
	case *ast.RepeatStmt:
		s.Condition = r.expr(s.Condition)
		r.stmts(s.Stmts)
	case *ast.IfStmt:
		s.Condition = r.expr(s.Condition)
		r.stmts(s.Then)
		r.stmts(s.Else)
	case *ast.NumberForStmt:
		s.Init, s.Limit = r.expr(s.Init), r.expr(s.Limit)
		if s.Step != nil {
			s.Step = r.expr(s.Step)
		}
		r.stmts(s.Stmts)
	case *ast.GenericForStmt:
		r.exprs(s.Exprs)
		r.stmts(s.Stmts)
	case *ast.FuncDefStmt:
		s.Name.Func = r.expr(s.Name.Func)
		if s.Name.Receiver != nil {
			s.Name.Receiver = r.expr(s.Name.Receiver)
		}
		r.stmts(s.Func.Stmts)
	case *ast.ReturnStmt:
		r.exprs(s.Exprs)
	}
}

func (r rewriter) exprs(list []ast.Expr) {
	for i, e := range list {
		list[i] = r.expr(e)
	}
}

// expr returns e with its concatenations rewritten.
func (r rewriter) expr(e ast.Expr) ast.Expr {
	switch e := e.(type) {
	case *ast.StringConcatOpExpr:
		var operands []ast.Expr
		r.flatten(e, &operands)
		call := &ast.FuncCallExpr{Func: &ast.IdentExpr{Value: concatName}, Args: operands, AdjustRet: true}
		call.SetLine(e.Line())
		call.SetLastLine(e.LastLine())
		call.Func.SetLine(e.Line())
		call.Func.SetLastLine(e.LastLine())
		return call
	case *ast.AttrGetExpr:
		e.Object, e.Key = r.expr(e.Object), r.expr(e.Key)
	case *ast.TableExpr:
		for _, f := range e.Fields {
			if f.Key != nil {
				f.Key = r.expr(f.Key)
			}
			f.Value = r.expr(f.Value)
		}
	case *ast.FuncCallExpr:
		if e.Func != nil {
			e.Func = r.expr(e.Func)
		}
		if e.Receiver != nil {
			e.Receiver = r.expr(e.Receiver)
		}
		r.exprs(e.Args)
	case *ast.LogicalOpExpr:
		e.Lhs, e.Rhs = r.expr(e.Lhs), r.expr(e.Rhs)
	case *ast.RelationalOpExpr:
		e.Lhs, e.Rhs = r.expr(e.Lhs), r.expr(e.Rhs)
	case *ast.ArithmeticOpExpr:
		e.Lhs, e.Rhs = r.expr(e.Lhs), r.expr(e.Rhs)
	case *ast.UnaryMinusOpExpr:
		e.Expr = r.expr(e.Expr)
	case *ast.UnaryNotOpExpr:
		e.Expr = r.expr(e.Expr)
	case *ast.UnaryLenOpExpr:
		e.Expr = r.expr(e.Expr)
	case *ast.FunctionExpr:
		r.stmts(e.Stmts)
	}
	return e
}

// flatten collects the operands of a chain a .. b .. c in order.
func (r rewriter) flatten(e ast.Expr, out *[]ast.Expr) {
	if c, ok := e.(*ast.StringConcatOpExpr); ok {
		r.flatten(c.Lhs, out)
		r.flatten(c.Rhs, out)
		return
	}
	*out = append(*out, r.expr(e))
}
