package postgres

// What a rule's masks allow: statements whose column use masks can follow.

import (
	"fmt"
	"slices"
	"sync"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/policy/sqlclass"
)

// checkMasks denies what the decision's column masks could not be applied
// to (see MaskDenial). simple says the statements came in a simple Query.
func (r *relay) checkMasks(c *command, sts []sqlclass.Statement, simple bool) {
	if c.Decision.Action == policy.Deny || len(c.Decision.Masks) == 0 {
		return
	}
	if reason := MaskDenial(r.maskerFor(c.Decision), c.Decision.RuleID, c.Classes, sts, simple, r.preparedRefs); reason != "" {
		c.Decision.Action = policy.Deny
		c.Decision.Reason = reason
	}
}

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

// maskerFor returns the masker of a decision's masks (nil for none).
func (r *relay) maskerFor(d policy.Decision) *mask.Masker {
	if len(d.Masks) == 0 {
		return nil
	}
	cfg := r.s.Policy()
	learned := r.h.Learned
	if ver := learned.Version(); cfg != r.maskersCfg || ver != r.maskersLearned {
		// A reload may have changed what a rule masks, and so may a
		// column learned or dropped: live sessions follow from their
		// next statement.
		clear(r.maskers)
		r.maskersCfg, r.maskersLearned = cfg, ver
	}
	if m, ok := r.maskers[d.RuleID]; ok {
		return m
	}
	m, err := mask.New(cfg, d.Masks, r.h.MaskKey)
	if err != nil {
		// The config checks mask names; a reload may have removed one.
		// Mask everything a column could hold rather than nothing.
		r.s.Log.Error("masks unavailable; redacting all columns", "err", err)
		m, _ = mask.New(&policy.Config{Masks: []policy.Mask{{Name: "all", Columns: []string{"*"}, Mode: "redact"}}}, []string{"all"}, nil)
	}
	m = learnedMasker(m, learned, d.RuleID, r.s.ID)
	r.maskers[d.RuleID] = m
	return m
}

// learnedMasker returns m with the columns its detectors were found to fire
// on under rule masked as columns, reporting new ones to learned (as seen
// in session). Each column is reported once per masker: the set decides
// whether it is new.
func learnedMasker(m *mask.Masker, learned *mask.Learned, rule, session string) *mask.Masker {
	if learned == nil || !m.HasDetectors() {
		return m
	}
	m = m.WithColumns(learned.Columns(rule))
	var seen sync.Map // mask \x00 column
	return m.Learning(func(name, column string) {
		if _, dup := seen.LoadOrStore(name+"\x00"+column, struct{}{}); !dup {
			learned.Observe(rule, name, column, session)
		}
	})
}
