// Package sqlpolicy is policy's decision on SQL beyond command classes:
// whether statements can run under a rule's masks, and the static
// decision on a SQL string that `loopgate policy explain` shows. The
// PostgreSQL handler decides with the same functions, adding what only a
// live session knows (the catalog, prepared statements, the read-only
// layer).
package sqlpolicy

import (
	"fmt"
	"slices"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/policy/sqlclass"
)

// MaskDenial returns why statements cannot run under a rule's masks, or ""
// when they can. Column masks apply to plain result columns (RowDescription
// says which table column each comes from), so a statement that computes on
// a masked column, or uses whole rows, or renames columns in FROM, is
// refused. COPY ... TO STDOUT is masked row by row when it is a simple
// query of its own in text or CSV format whose columns are known (named in
// the statement, or a whole table, whose header loopgate asks for); other
// COPY ... TO is refused. classes are the statements' classes; simple says
// they came in a simple Query. prepared finds how a prepared statement that
// an EXECUTE runs uses columns (nil: none are known); an EXECUTE of one it
// does not know is refused.
func MaskDenial(m *mask.Masker, rule string, classes []string, sts []sqlclass.Statement, simple bool, prepared func(name string) (sqlclass.Refs, bool)) string {
	if !m.HasColumns() {
		return ""
	}
	// Only COPY ... TO sends rows back (classes copy and read).
	if slices.Contains(classes, sqlclass.Copy) && slices.Contains(classes, sqlclass.Read) {
		var co *sqlclass.CopyOut
		if simple && len(sts) == 1 {
			co = sts[0].CopyOut
		}
		switch {
		case co == nil:
			return fmt.Sprintf("COPY cannot apply the column masks of rule %s unless it copies to the client, alone, as a simple query", rule)
		case co.Format != "text" && co.Format != "csv":
			return fmt.Sprintf("COPY in %s format cannot apply the column masks of rule %s; use text or csv", co.Format, rule)
		case co.Columns == nil && co.Table == "":
			return fmt.Sprintf("COPY (query) under the column masks of rule %s must name its columns (no *, no UNION)", rule)
		case len(co.Delimiter) != 1 || co.Format == "csv" && (len(co.Quote) != 1 || len(co.Escape) != 1):
			return "COPY options that PostgreSQL would refuse"
		}
	}
	var local map[string]sqlclass.Refs // PREPAREd earlier in the same string
	for _, st := range sts {
		rf := st.Refs
		if st.Prepares != "" {
			if local == nil {
				local = map[string]sqlclass.Refs{}
			}
			local[st.Prepares] = st.Refs
		}
		if st.Executes != "" {
			inner, ok := local[st.Executes]
			if !ok && prepared != nil {
				inner, ok = prepared(st.Executes)
			}
			if !ok {
				return fmt.Sprintf("EXECUTE of %s under the column masks of rule %s: loopgate did not see it prepared", st.Executes, rule)
			}
			rf = inner
		}
		if rf.Opaque != "" {
			return fmt.Sprintf("rule %s masks columns, which %s would bypass; select columns by name", rule, rf.Opaque)
		}
		for _, name := range rf.Used {
			if m.NamesColumn(name) {
				return fmt.Sprintf("column %s is masked by rule %s: it may be selected, not computed on, filtered, sorted or copied", name, rule)
			}
		}
	}
	return ""
}

// Explanation is the static decision on one SQL string.
type Explanation struct {
	// Parsed is what the classifier made of the string (Err set when it
	// could not parse it: class unknown).
	Parsed   sqlclass.Result
	Decision policy.Decision
}

// Explain decides sql for subject as the PostgreSQL handler would before
// any catalog lookup: its classes under the subject's rule, then the
// rule's masks. learned, if not nil, returns the columns detectors
// learned under a rule, by mask name, which mask as columns.
func Explain(cfg *policy.Config, sub *policy.Subject, sql string, learned func(rule string) map[string][]string) (Explanation, error) {
	var cl sqlclass.Classifier
	res := cl.Classify(sql, nil)
	d := cfg.Decide(sub, res.Classes)
	if d.Action != policy.Deny && len(d.Masks) > 0 {
		m, err := mask.New(cfg, d.Masks, nil)
		if err != nil {
			return Explanation{}, err
		}
		if learned != nil {
			m = m.WithColumns(learned(d.RuleID))
		}
		if reason := MaskDenial(m, d.RuleID, res.Classes, res.Statements, true, nil); reason != "" {
			d.Action, d.Reason = policy.Deny, reason
		}
	}
	return Explanation{Parsed: res, Decision: d}, nil
}
