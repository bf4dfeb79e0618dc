package postgres

import (
	"testing"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/policy/sqlclass"
)

func testMasker(t testing.TB) *mask.Masker {
	t.Helper()
	cfg := &policy.Config{Masks: []policy.Mask{{Name: "ssn", Columns: []string{"users.ssn", "*.secret"}, Mode: "redact"}}}
	m, err := mask.New(cfg, []string{"ssn"}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func copyOutOf(t testing.TB, sql string) *sqlclass.CopyOut {
	t.Helper()
	var c sqlclass.Classifier
	res := c.Classify(sql, nil)
	if len(res.Statements) != 1 || res.Statements[0].CopyOut == nil {
		t.Fatalf("%s: no COPY TO STDOUT (%v)", sql, res.Err)
	}
	return res.Statements[0].CopyOut
}

func TestCopyMask(t *testing.T) {
	t.Parallel()
	m := testMasker(t)
	tests := []struct {
		name, sql string
		ours      bool     // loopgate asks for the header
		in, want  []string // CopyData payloads ("" in want: not sent)
	}{
		{"text, named columns", "COPY users (id, ssn) TO STDOUT", false,
			[]string{"1\t123-45-6789\n", "2\t\\N\n", "3\ta\\tb\\\\c\n"},
			[]string{"1\t[redacted]\n", "2\t\\N\n", "3\t[redacted]\n"}},
		{"text, whole table via our header", "COPY users TO STDOUT", true,
			[]string{"id\temail\tssn\n", "1\tx\\ty\t123-45-6789\n"},
			[]string{"", "1\tx\\ty\t[redacted]\n"}},
		{"text, the agent's own header kept", "COPY users TO STDOUT (HEADER)", true,
			[]string{"id\tssn\n", "1\t123\n"},
			[]string{"id\tssn\n", "1\t[redacted]\n"}},
		{"csv, quotes and newlines", "COPY (SELECT id, ssn AS x, note FROM users) TO STDOUT (FORMAT csv)", false,
			[]string{"1,\"12,3\",\"a \"\"q\"\"\nb\"\n", "2,,\n", "3,\"\",z\n"},
			[]string{"1,\"[redacted]\",\"a \"\"q\"\"\nb\"\n", "2,,\n", "3,\"[redacted]\",z\n"}},
		{"csv, custom delimiter and escape", "COPY t (secret, v) TO STDOUT (FORMAT csv, DELIMITER ';', ESCAPE '\\', HEADER)", false,
			[]string{"secret;v\n", "\"a\\\"b;c\";\"x\\\"\"\n"},
			[]string{"secret;v\n", "\"[redacted]\";\"x\\\"\"\n"}},
		{"computed columns are not masked", "COPY (SELECT id, 1 + 1, ssn FROM users) TO STDOUT", false,
			[]string{"1\t2\t9\n"},
			[]string{"1\t2\t[redacted]\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			co := copyOutOf(t, tt.sql)
			cm := newCopyMask(co, m, tt.ours)
			for i, in := range tt.in {
				got, err := cm.row([]byte(in))
				if err != nil {
					t.Fatalf("row %q: %v", in, err)
				}
				if string(got) != tt.want[i] {
					t.Errorf("row %q = %q, want %q", in, got, tt.want[i])
				}
			}
		})
	}
}

func TestCopyMaskRefusesMismatch(t *testing.T) {
	t.Parallel()
	cm := newCopyMask(copyOutOf(t, "COPY users (id, ssn) TO STDOUT"), testMasker(t), false)
	if err := cm.columns(3); err == nil {
		t.Error("3 columns accepted for a 2-column layout")
	}
	for _, bad := range []string{"1\t2\t3\n", "1\n", "1\t2", "1\t2\\"} {
		if _, err := cm.row([]byte(bad)); err == nil {
			t.Errorf("row %q accepted", bad)
		}
	}
}

// FuzzCopyRow: whatever the rows, masking never panics, and a masked
// column never passes through unchanged.
func FuzzCopyRow(f *testing.F) {
	f.Add("1\t123-45-6789\n", false)
	f.Add("1,\"a\"\"b\",\n", true)
	f.Add("\"unterminated\n", true)
	f.Add("\\\n", false)
	f.Fuzz(func(t *testing.T, row string, csv bool) {
		sql := "COPY users (id, ssn) TO STDOUT"
		if csv {
			sql += " (FORMAT csv)"
		}
		cm := newCopyMask(copyOutOf(t, sql), testMasker(t), false)
		out, err := cm.row([]byte(row))
		if err != nil {
			return
		}
		fields, err := cm.split(out)
		if err != nil || len(fields) != 2 {
			t.Fatalf("masked row %q does not split in two: %v", out, err)
		}
		if v := string(cm.value(fields[1])); !cm.isNull(fields[1]) && v != "[redacted]" {
			t.Fatalf("row %q: ssn came out as %q", row, v)
		}
	})
}
