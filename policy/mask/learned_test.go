package mask

import (
	"reflect"
	"sync"
	"testing"
)

func TestLearned(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var recorded []LearnedColumn
	l := NewLearned([]LearnedColumn{{Rule: "r", Mask: "email", Column: "old.gone", State: StateDropped}},
		func(c LearnedColumn) { mu.Lock(); recorded = append(recorded, c); mu.Unlock() })
	v0 := l.Version()
	if !l.Observe("r", "email", "users.email", "s1") {
		t.Fatal("first Observe: not new")
	}
	if l.Observe("r", "email", "users.email", "s2") {
		t.Error("second Observe: new again")
	}
	if l.Observe("r", "email", "old.gone", "s2") {
		t.Error("a dropped column was learned again")
	}
	if l.Version() == v0 {
		t.Error("version did not change")
	}
	if len(recorded) != 1 || recorded[0].Column != "users.email" || recorded[0].Session != "s1" || recorded[0].State != StateLearned {
		t.Errorf("recorded = %+v", recorded)
	}
	if got, want := l.Columns("r"), map[string][]string{"email": {"users.email"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Columns = %v, want %v", got, want)
	}
	if l.Columns("other") != nil {
		t.Error("another rule has columns")
	}
	v1 := l.Version()
	if !l.SetState("r", "email", "users.email", StateDropped) || l.Version() == v1 || l.Columns("r") != nil {
		t.Errorf("after drop: version %d, columns %v", l.Version(), l.Columns("r"))
	}
	if !l.SetState("r", "email", "old.gone", StateConfirmed) || !reflect.DeepEqual(l.Columns("r"), map[string][]string{"email": {"old.gone"}}) {
		t.Errorf("after confirm: %v", l.Columns("r"))
	}
	if l.SetState("r", "email", "never.seen", StateConfirmed) {
		t.Error("SetState of an unknown column succeeded")
	}
	if n := len(l.List()); n != 2 {
		t.Errorf("List has %d", n)
	}
	var none *Learned
	if none.Observe("r", "m", "c", "s") || none.Columns("r") != nil || none.Version() != 0 {
		t.Error("nil Learned learned")
	}
}

func TestLearningMasker(t *testing.T) {
	t.Parallel()
	m := masker(t, "  - {name: e, detect: email, mode: partial}\n  - {name: s, columns: ['*.ssn']}\n", "e", "s")
	var got [][2]string
	lm := m.Learning(func(mask, column string) { got = append(got, [2]string{mask, column}) })
	if out := string(lm.ScanColumn([]byte("ada@example.com"), "users.email")); out != "***********.com" {
		t.Errorf("ScanColumn = %q", out)
	}
	lm.ScanColumn([]byte("no address"), "users.note")      // nothing fired
	lm.ScanColumn([]byte("bob@example.com"), "")           // not a table column
	m.ScanColumn([]byte("cy@example.com"), "users.email2") // not learning
	if want := [][2]string{{"e", "users.email"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("learned %v, want %v", got, want)
	}
	if m.Column("users", "email", "email") != "" || m.NamesColumn("email") {
		t.Fatal("email masked before learning")
	}
	wm := m.WithColumns(map[string][]string{"e": {"users.email"}, "unknown": {"t.c"}})
	if wm.Column("users", "email", "x") != "partial" || wm.Column("orders", "email", "email") != "" || !wm.NamesColumn("email") {
		t.Errorf("learned column: Column %q, NamesColumn %v", wm.Column("users", "email", "x"), wm.NamesColumn("email"))
	}
	if m.Column("users", "email", "email") != "" || m.NamesColumn("email") {
		t.Error("WithColumns changed the original")
	}
	if m.WithColumns(nil) != m || m.WithColumns(map[string][]string{"nope": {"a.b"}}) != m {
		t.Error("WithColumns copied for nothing")
	}
}
