package mask

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// States of a learned column.
const (
	// StateLearned: a detector fired on the column; it is masked as a
	// column until an operator drops it.
	StateLearned = "learned"
	// StateConfirmed: an operator kept it.
	StateConfirmed = "confirmed"
	// StateDropped: an operator dropped it. It is not masked as a column,
	// and detectors firing on it again do not learn it again: only an
	// operator's confirm (or a configured column mask) brings it back.
	StateDropped = "dropped"
)

// LearnedColumn is a table column a mask's detector fired on, for a rule.
type LearnedColumn struct {
	Rule   string
	Mask   string
	Column string // "table.column", as PostgreSQL named it when it was seen
	// Session is the session whose result showed it first.
	Session   string
	FirstSeen time.Time
	State     string
}

func (c LearnedColumn) active() bool { return c.State == StateLearned || c.State == StateConfirmed }

type learnedKey struct{ rule, mask, column string }

// Learned is the set of learned columns every session's masks consult. It
// is safe for concurrent use; mu guards cols. A nil *Learned learns
// nothing.
type Learned struct {
	mu      sync.Mutex
	cols    map[learnedKey]LearnedColumn
	version atomic.Uint64
	onLearn func(LearnedColumn)
}

// NewLearned returns a set holding cols (as the store has them). onLearn,
// if set, is called with each column learned from then on (to record it);
// it is called without locks held from a session's relay, so it must not
// block.
func NewLearned(cols []LearnedColumn, onLearn func(LearnedColumn)) *Learned {
	l := &Learned{cols: map[learnedKey]LearnedColumn{}, onLearn: onLearn}
	for _, c := range cols {
		l.cols[learnedKey{c.Rule, c.Mask, c.Column}] = c
	}
	return l
}

// Observe records that the detector of mask fired on column in a result of
// a statement under rule, in session. A column seen before (in any state,
// dropped included) is left as it is; a new one is learned. It reports
// whether the column was new.
func (l *Learned) Observe(rule, mask, column, session string) bool {
	if l == nil {
		return false
	}
	k := learnedKey{rule, mask, column}
	l.mu.Lock()
	if _, ok := l.cols[k]; ok {
		l.mu.Unlock()
		return false
	}
	c := LearnedColumn{Rule: rule, Mask: mask, Column: column, Session: session, FirstSeen: time.Now(), State: StateLearned}
	l.cols[k] = c
	l.version.Add(1)
	l.mu.Unlock()
	if l.onLearn != nil {
		l.onLearn(c)
	}
	return true
}

// SetState changes a known column's state (an operator's confirm or drop);
// it reports false for a column the set does not hold.
func (l *Learned) SetState(rule, mask, column, state string) bool {
	if l == nil {
		return false
	}
	k := learnedKey{rule, mask, column}
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.cols[k]
	if !ok {
		return false
	}
	if c.State != state {
		c.State = state
		l.cols[k] = c
		l.version.Add(1)
	}
	return true
}

// Version changes whenever the columns a rule masks change: a masker built
// before is stale.
func (l *Learned) Version() uint64 {
	if l == nil {
		return 0
	}
	return l.version.Load()
}

// Columns returns the columns a rule masks because of what its detectors
// found, by mask name (for Masker.WithColumns); nil when there are none.
func (l *Learned) Columns(rule string) map[string][]string {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out map[string][]string
	for k, c := range l.cols {
		if k.rule != rule || !c.active() {
			continue
		}
		if out == nil {
			out = map[string][]string{}
		}
		out[k.mask] = append(out[k.mask], k.column)
	}
	for _, cols := range out {
		slices.Sort(cols)
	}
	return out
}

// List returns every column the set holds, in every state, ordered by
// rule, mask and column.
func (l *Learned) List() []LearnedColumn {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	out := make([]LearnedColumn, 0, len(l.cols))
	for _, c := range l.cols {
		out = append(out, c)
	}
	l.mu.Unlock()
	slices.SortFunc(out, func(a, b LearnedColumn) int {
		return cmp.Or(cmp.Compare(a.Rule, b.Rule), cmp.Compare(a.Mask, b.Mask), cmp.Compare(a.Column, b.Column))
	})
	return out
}
