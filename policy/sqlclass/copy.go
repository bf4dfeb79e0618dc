package sqlclass

import (
	"cmp"
	"errors"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// CopyOut describes a COPY ... TO STDOUT: what its rows hold and how they
// are written, so column masks can be applied to them.
type CopyOut struct {
	// Table is the table copied (lower case); empty for COPY (query).
	Table string
	// Columns is the source column of each output column (lower case; ""
	// for a computed one), or nil when the statement does not name them
	// (COPY table without a column list, or a query with a star or a set
	// operation).
	Columns []string
	// Format is text, csv or binary. Delimiter, Null, Quote and Escape
	// are the options in effect (defaults filled in).
	Format                         string
	Delimiter, Null, Quote, Escape string
	// Header says the agent asked for a header line.
	Header bool
}

// copyOut describes a COPY statement that writes to the client, or nil.
func copyOut(cs *pg_query.CopyStmt) *CopyOut {
	if cs.IsFrom || cs.IsProgram || cs.Filename != "" {
		return nil
	}
	co := &CopyOut{Format: "text"}
	for _, o := range cs.Options {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		val := ""
		if s := d.Arg.GetString_(); s != nil {
			val = s.Sval
		}
		switch strings.ToLower(d.Defname) {
		case "format":
			co.Format = strings.ToLower(val)
		case "delimiter":
			co.Delimiter = val
		case "null":
			co.Null = val
		case "quote":
			co.Quote = val
		case "escape":
			co.Escape = val
		case "header":
			co.Header = d.Arg == nil || !isFalse(d.Arg)
		}
	}
	if co.Format == "csv" {
		co.Delimiter = cmp.Or(co.Delimiter, ",")
		co.Quote = cmp.Or(co.Quote, `"`)
		co.Escape = cmp.Or(co.Escape, co.Quote)
	} else {
		co.Delimiter = cmp.Or(co.Delimiter, "\t")
		if !hasOption(cs, "null") {
			co.Null = `\N`
		}
	}
	if cs.Relation != nil {
		co.Table = strings.ToLower(cs.Relation.Relname)
		for _, a := range cs.Attlist {
			if s := a.GetString_(); s != nil {
				co.Columns = append(co.Columns, strings.ToLower(s.Sval))
			}
		}
		return co
	}
	co.Columns = outputColumns(cs.Query)
	return co
}

// outputColumns names the source column of each output column of a query,
// or returns nil when it cannot.
func outputColumns(q *pg_query.Node) []string {
	var list []*pg_query.Node
	switch s := q.GetNode().(type) {
	case *pg_query.Node_SelectStmt:
		if s.SelectStmt.Op != pg_query.SetOperation_SET_OPERATION_UNDEFINED && s.SelectStmt.Op != pg_query.SetOperation_SETOP_NONE {
			return nil
		}
		list = s.SelectStmt.TargetList
	case *pg_query.Node_InsertStmt:
		list = s.InsertStmt.ReturningList
	case *pg_query.Node_UpdateStmt:
		list = s.UpdateStmt.ReturningList
	case *pg_query.Node_DeleteStmt:
		list = s.DeleteStmt.ReturningList
	default:
		return nil
	}
	cols := make([]string, 0, len(list))
	for _, item := range list {
		name := ""
		if cr := item.GetResTarget().GetVal().GetColumnRef(); cr != nil {
			names, star := refNames(cr)
			if star {
				return nil
			}
			if len(names) > 0 {
				name = names[len(names)-1]
			}
		}
		cols = append(cols, name)
	}
	return cols
}

func hasOption(cs *pg_query.CopyStmt, name string) bool {
	for _, o := range cs.Options {
		if d := o.GetDefElem(); d != nil && strings.EqualFold(d.Defname, name) {
			return true
		}
	}
	return false
}

// CopyWithHeader rewrites a single COPY ... TO STDOUT statement so that its
// output starts with a header line naming the columns (the server's own
// account of what it copies).
func CopyWithHeader(sql string) (string, error) {
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return "", err
	}
	if len(tree.Stmts) != 1 || tree.Stmts[0].Stmt.GetCopyStmt() == nil {
		return "", errNotOneCopy
	}
	cs := tree.Stmts[0].Stmt.GetCopyStmt()
	opts := cs.Options[:0]
	for _, o := range cs.Options {
		if d := o.GetDefElem(); d != nil && strings.EqualFold(d.Defname, "header") {
			continue
		}
		opts = append(opts, o)
	}
	cs.Options = append(opts, &pg_query.Node{Node: &pg_query.Node_DefElem{DefElem: &pg_query.DefElem{
		Defname: "header", Arg: &pg_query.Node{Node: &pg_query.Node_Boolean{Boolean: &pg_query.Boolean{Boolval: true}}}}}})
	return pg_query.Deparse(tree)
}

var errNotOneCopy = errors.New("not a single COPY statement")
