package postgres

// What a rule's masks allow: statements whose column use masks can follow.

import (
	"sync"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/policy/sqlclass"
	"github.com/loopgate/loopgate/policy/sqlpolicy"
)

// checkMasks denies what the decision's column masks could not be applied
// to (see sqlpolicy.MaskDenial). simple says the statements came in a simple Query.
func (r *relay) checkMasks(c *command, sts []sqlclass.Statement, simple bool) {
	if c.Decision.Action == policy.Deny || len(c.Decision.Masks) == 0 {
		return
	}
	if reason := sqlpolicy.MaskDenial(r.maskerFor(c.Decision), c.Decision.RuleID, c.Classes, sts, simple, r.preparedRefs); reason != "" {
		c.Decision.Action = policy.Deny
		c.Decision.Reason = reason
	}
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
