package postgres

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/policy/sqlclass"
	"github.com/loopgate/loopgate/policy/sqlpolicy"
)

// textRowBody encodes a DataRow body of text values.
func textRowBody(vals ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(vals)))
	for _, v := range vals {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

// TestLearnedColumn: rows whose table column a detector fires on teach the
// rule; the next masker masks the column and refuses computing on it.
func TestLearnedColumn(t *testing.T) {
	t.Parallel()
	cfg, err := policy.Parse("m.yaml", []byte("masks:\n  - {name: email, detect: email, mode: partial}\n"))
	if err != nil {
		t.Fatal(err)
	}
	base, err := mask.New(cfg, []string{"email"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	learned := mask.NewLearned(nil, nil)
	var cl sqlclass.Classifier
	computed := cl.Classify("SELECT replace(email, '@', ' at ') FROM users", nil)
	deny := func(m *mask.Masker) string {
		return sqlpolicy.MaskDenial(m, "r", computed.Classes, computed.Statements, true, nil)
	}

	m := learnedMasker(base, learned, "r", "s1")
	if reason := deny(m); reason != "" {
		t.Fatalf("before learning: %s", reason)
	}
	fields := []pgproto3.FieldDescription{
		{Name: []byte("id"), TableOID: 1, TableAttributeNumber: 1, DataTypeOID: 25},
		{Name: []byte("email"), TableOID: 1, TableAttributeNumber: 2, DataTypeOID: 25},
		{Name: []byte("note"), DataTypeOID: 25}, // an expression: never learned
	}
	l := newLayout(fields, nil, m, []colName{{"users", "id"}, {"users", "email"}, {}})
	for range 3 {
		out, ok := l.maskRow(textRowBody("1", "ada@example.com", "mail bob@example.com"))
		if !ok || strings.Contains(string(out), "@") {
			t.Fatalf("row not masked: %q", out)
		}
	}
	list := learned.List()
	if len(list) != 1 || list[0].Column != "users.email" || list[0].Mask != "email" || list[0].Rule != "r" || list[0].Session != "s1" {
		t.Fatalf("learned %+v, want users.email once", list)
	}

	m2 := learnedMasker(base, learned, "r", "s2")
	if reason := deny(m2); !strings.Contains(reason, "column email is masked by rule r") {
		t.Errorf("after learning: reason %q", reason)
	}
	if mode := m2.Column("users", "email", "e"); mode != "partial" {
		t.Errorf("learned column mode %q, want the detector's (partial)", mode)
	}
	if reason := sqlpolicy.MaskDenial(learnedMasker(base, learned, "other", "s3"), "other", computed.Classes, computed.Statements, true, nil); reason != "" {
		t.Errorf("another rule: %s", reason)
	}

	learned.SetState("r", "email", "users.email", mask.StateDropped)
	if reason := deny(learnedMasker(base, learned, "r", "s4")); reason != "" {
		t.Errorf("after drop: %s", reason)
	}
}
