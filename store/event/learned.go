package event

import "time"

// KindMaskColumn records a table column a mask's value detector fired on
// being learned as a column mask of its rule, or an operator confirming
// or dropping it. Text is the state, Params "mask column" (and " by
// operator" for a change), RuleID the rule.
const KindMaskColumn Kind = "mask_column"

// LearnedColumn is a table column a rule's value detector fired on, masked
// as a column of the rule from then on unless an operator dropped it.
type LearnedColumn struct {
	Rule      string
	Mask      string
	Column    string // "table.column"
	SessionID string // where it was first seen
	FirstSeen time.Time
	State     string // learned, confirmed, dropped
	Changed   time.Time
	ChangedBy string // the operator who set State ("" when learned)
}
