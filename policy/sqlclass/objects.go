package sqlclass

// What a statement names that only the database can explain (functions,
// operators, relations that may be views), and what in it could make a
// read-only session read-write.

import (
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Name is a possibly schema-qualified name as a statement wrote it, after
// the parser's case folding (unquoted names are lower case, quoted ones
// keep their case). Schema is "" when the name is not qualified: then any
// schema on the search path may hold it.
type Name struct {
	Schema, Name string
}

// String is the name as PostgreSQL would print it, unquoted.
func (n Name) String() string {
	if n.Schema == "" {
		return n.Name
	}
	return n.Schema + "." + n.Name
}

// objects fills res.Calls, res.Operators, res.Relations and res.ReadWrite
// from a parse tree.
func (res *Result) objects(tree *pg_query.ParseResult) {
	calls, ops, rels := map[Name]bool{}, map[Name]bool{}, map[Name]bool{}
	for _, raw := range tree.Stmts {
		walk(raw.Stmt.ProtoReflect(), func(m protoreflect.Message) {
			switch x := m.Interface().(type) {
			case *pg_query.FuncCall:
				if n, ok := qualName(x.Funcname); ok {
					calls[n] = true
				}
				if res.ReadWrite == "" && readWriteCall(x) {
					res.ReadWrite = "set_config of a read-only setting"
				}
			case *pg_query.A_Expr:
				if n, ok := qualName(x.Name); ok {
					ops[n] = true
				}
			case *pg_query.RangeVar:
				rels[Name{Schema: x.Schemaname, Name: x.Relname}] = true
			case *pg_query.VariableSetStmt:
				if res.ReadWrite == "" && readOnlySetting(x.Name) {
					res.ReadWrite = "SET or RESET of " + strings.ToLower(x.Name)
				}
			case *pg_query.DefElem:
				// BEGIN/START TRANSACTION/SET TRANSACTION/SET SESSION
				// CHARACTERISTICS ... READ WRITE.
				if res.ReadWrite == "" && x.Defname == "transaction_read_only" && !isTrue(x.Arg) {
					res.ReadWrite = "READ WRITE"
				}
			}
		})
	}
	res.Calls, res.Operators, res.Relations = sortedNames(calls), sortedNames(ops), sortedNames(rels)
}

// readOnlySetting reports whether a setting decides whether transactions
// may write.
func readOnlySetting(name string) bool {
	switch strings.ToLower(name) {
	case "default_transaction_read_only", "transaction_read_only":
		return true
	}
	return false
}

// readWriteCall reports whether a call is set_config of a setting that
// decides whether transactions may write, or of a setting it cannot name.
func readWriteCall(f *pg_query.FuncCall) bool {
	n, ok := qualName(f.Funcname)
	if !ok || strings.ToLower(n.Name) != "set_config" {
		return false
	}
	if len(f.Args) == 0 {
		return true
	}
	name, ok := constText(f.Args[0])
	return !ok || readOnlySetting(name)
}

// isTrue reports whether a DefElem's argument is a constant true (READ
// ONLY is 1); anything else counts as READ WRITE.
func isTrue(n *pg_query.Node) bool {
	c := n.GetAConst()
	switch {
	case c == nil:
		return false
	case c.GetIval() != nil:
		return c.GetIval().Ival != 0
	case c.GetBoolval() != nil:
		return c.GetBoolval().Boolval
	}
	return false
}

// qualName reads a name list (schema, name or name alone).
func qualName(list []*pg_query.Node) (Name, bool) {
	var parts []string
	for _, p := range list {
		s := p.GetString_()
		if s == nil {
			return Name{}, false
		}
		parts = append(parts, s.Sval)
	}
	switch len(parts) {
	case 1:
		return Name{Name: parts[0]}, true
	case 2:
		return Name{Schema: parts[0], Name: parts[1]}, true
	case 3: // catalog.schema.name
		return Name{Schema: parts[1], Name: parts[2]}, true
	}
	return Name{}, false
}

func sortedNames(set map[Name]bool) []Name {
	if len(set) == 0 {
		return nil
	}
	out := make([]Name, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b Name) int {
		if c := strings.Compare(a.Schema, b.Schema); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}
