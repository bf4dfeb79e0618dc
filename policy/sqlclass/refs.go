package sqlclass

import (
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Refs is how a statement uses columns, for column masks. A masked column
// is masked where it is returned: as a plain column of the statement's
// result, where PostgreSQL reports which table column each result column
// comes from. Anything computed from it (an expression, a condition, a
// join, a sort, a copy into another table, a whole-row value) would carry
// it out unmasked, so a rule with column masks refuses statements that use
// a masked column any other way, and statements whose columns cannot be
// followed by name at all.
type Refs struct {
	// Used are the column names (lower case) referenced other than as a
	// plain result column.
	Used []string
	// Opaque says why the statement's column use cannot be followed by
	// name (a whole-row reference, a star inside an expression, column
	// aliases in FROM); empty when it can.
	Opaque string
	// positional: ORDER BY/GROUP BY name output columns by number, so the
	// numbers matter and the statement must not share a cache entry with
	// ones that differ only in numbers.
	positional bool
}

// refsOf analyses one top-level statement.
func refsOf(stmt *pg_query.Node) Refs {
	// A prepared statement and a cursor return what their query returns.
	switch s := stmt.GetNode().(type) {
	case *pg_query.Node_PrepareStmt:
		return refsOf(s.PrepareStmt.Query)
	case *pg_query.Node_DeclareCursorStmt:
		return refsOf(s.DeclareCursorStmt.Query)
	case *pg_query.Node_CopyStmt:
		if s.CopyStmt.Query != nil {
			return refsOf(s.CopyStmt.Query)
		}
	}
	plain := map[*pg_query.ColumnRef]bool{} // returned as they are
	markSafe(stmt, true, plain)
	var (
		used       = map[string]bool{}
		single     []string // one-name references: a column, or a whole row
		rels       = map[string]bool{}
		opaque     string
		positional bool
	)
	walk(stmt.ProtoReflect(), func(m protoreflect.Message) {
		switch x := m.Interface().(type) {
		case *pg_query.RangeVar:
			rels[strings.ToLower(x.Relname)] = true
		case *pg_query.Alias:
			rels[strings.ToLower(x.Aliasname)] = true
			if len(x.Colnames) > 0 && opaque == "" {
				opaque = "column aliases in FROM (" + x.Aliasname + ") rename columns"
			}
		case *pg_query.CommonTableExpr:
			rels[strings.ToLower(x.Ctename)] = true
			if len(x.Aliascolnames) > 0 && opaque == "" {
				opaque = "column aliases on WITH " + x.Ctename + " rename columns"
			}
		case *pg_query.SelectStmt:
			// ORDER BY 2 and GROUP BY 2 use the second output column.
			var ordinals []*pg_query.Node
			for _, sb := range x.SortClause {
				ordinals = append(ordinals, sb.GetSortBy().GetNode())
			}
			ordinals = append(ordinals, x.GroupClause...)
			for _, o := range ordinals {
				k, ok := ordinal(o)
				if !ok {
					continue
				}
				positional = true
				if k < 1 || k > len(x.TargetList) {
					continue // PostgreSQL refuses it
				}
				cr := x.TargetList[k-1].GetResTarget().GetVal().GetColumnRef()
				if cr == nil {
					continue // an expression: its columns count where they are
				}
				names, star := refNames(cr)
				switch {
				case star && opaque == "":
					opaque = "ORDER BY or GROUP BY the position of a star"
				case len(names) > 0:
					used[names[len(names)-1]] = true
				}
			}
		case *pg_query.JoinExpr:
			for _, u := range x.UsingClause {
				if v := u.GetString_(); v != nil {
					used[strings.ToLower(v.Sval)] = true
				}
			}
			if x.IsNatural && opaque == "" {
				opaque = "a NATURAL JOIN (it joins on columns it does not name)"
			}
		case *pg_query.ColumnRef:
			names, star := refNames(x)
			if star {
				if !plain[x] && opaque == "" {
					opaque = "a whole row (" + strings.Join(append(names, "*"), ".") + ") used in an expression"
				}
				return
			}
			if len(names) == 1 {
				single = append(single, names[0])
			}
			if !plain[x] && len(names) > 0 {
				used[names[len(names)-1]] = true
			}
		}
	})
	for _, n := range single {
		if rels[n] && opaque == "" {
			opaque = "a whole-row reference to " + n
		}
	}
	r := Refs{Opaque: opaque, positional: positional}
	for n := range used {
		r.Used = append(r.Used, n)
	}
	slices.Sort(r.Used)
	return r
}

// markSafe marks the column references whose values reach the result as
// they are, under their own names: the plain entries (a bare column or a
// star) of the statement's select list or RETURNING list, and, since
// their names carry to the outer query (which returns them plainly or
// uses them by name), those of its FROM subqueries and WITH queries.
// Nothing else is: a set operation's arms (their columns take the first
// arm's names), an INSERT's source query (it fills another table),
// subqueries in expressions. A column may be renamed only at the top of a
// select list, where PostgreSQL reports which table column it is.
func markSafe(n *pg_query.Node, top bool, plain map[*pg_query.ColumnRef]bool) {
	var (
		list   []*pg_query.Node
		with   *pg_query.WithClause
		from   []*pg_query.Node
		rename bool
	)
	switch s := n.GetNode().(type) {
	case *pg_query.Node_SelectStmt:
		sel := s.SelectStmt
		if sel.Op != pg_query.SetOperation_SET_OPERATION_UNDEFINED && sel.Op != pg_query.SetOperation_SETOP_NONE {
			return
		}
		list, with, from, rename = sel.TargetList, sel.WithClause, sel.FromClause, top
	case *pg_query.Node_InsertStmt:
		list, with = s.InsertStmt.ReturningList, s.InsertStmt.WithClause
	case *pg_query.Node_UpdateStmt:
		list, with = s.UpdateStmt.ReturningList, s.UpdateStmt.WithClause
	case *pg_query.Node_DeleteStmt:
		list, with = s.DeleteStmt.ReturningList, s.DeleteStmt.WithClause
	default:
		return
	}
	for _, item := range list {
		rt := item.GetResTarget()
		cr := rt.GetVal().GetColumnRef()
		if cr == nil {
			continue
		}
		if _, star := refNames(cr); star || rt.Name == "" || rename {
			plain[cr] = true
		}
	}
	for _, cte := range with.GetCtes() {
		markSafe(cte.GetCommonTableExpr().GetCtequery(), false, plain)
	}
	for _, f := range from {
		markFrom(f, plain)
	}
}

func markFrom(n *pg_query.Node, plain map[*pg_query.ColumnRef]bool) {
	switch f := n.GetNode().(type) {
	case *pg_query.Node_RangeSubselect:
		markSafe(f.RangeSubselect.Subquery, false, plain)
	case *pg_query.Node_JoinExpr:
		markFrom(f.JoinExpr.Larg, plain)
		markFrom(f.JoinExpr.Rarg, plain)
	}
}

// ordinal returns the integer of an ORDER BY/GROUP BY position.
func ordinal(n *pg_query.Node) (int, bool) {
	c := n.GetAConst()
	if c == nil || c.GetIval() == nil {
		return 0, false
	}
	return int(c.GetIval().Ival), true
}

// refNames returns a column reference's names (lower case) and whether it
// ends in a star.
func refNames(cr *pg_query.ColumnRef) ([]string, bool) {
	var names []string
	for _, f := range cr.Fields {
		switch {
		case f.GetString_() != nil:
			names = append(names, strings.ToLower(f.GetString_().Sval))
		case f.GetAStar() != nil:
			return names, true
		}
	}
	return names, false
}
