package sqlclass

import (
	"strings"
	"testing"
)

func TestRefs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		sql    string
		used   string // comma-separated
		opaque bool
	}{
		// Plain result columns are masked where they come out.
		{"SELECT ssn FROM users", "", false},
		{"SELECT ssn AS x, email FROM users u", "", false},
		{"SELECT * FROM users", "", false},
		{"SELECT u.* FROM users u", "", false},
		{"SELECT x FROM (SELECT ssn AS x FROM users) s", "ssn", false},
		{"SELECT * FROM (SELECT * FROM users) s", "", false},
		{"SELECT * FROM (SELECT id, ssn FROM users) s WHERE id = 3", "id", false},
		{"SELECT s.ssn FROM t JOIN (SELECT id, ssn FROM users) s USING (id)", "id", false},
		{"WITH s AS (SELECT ssn FROM users) SELECT ssn FROM s", "", false},
		{"WITH d AS (DELETE FROM t WHERE id < 5 RETURNING *) SELECT count(*) FROM d", "id", false},
		{"PREPARE p AS SELECT ssn FROM users", "", false},
		{"DECLARE c CURSOR FOR SELECT ssn FROM users", "", false},
		{"UPDATE users SET email = 'x' WHERE id = 1 RETURNING *", "id", false},
		// Anything computed from a column uses it.
		{"SELECT upper(ssn) FROM users", "ssn", false},
		{"SELECT ssn || '' FROM users", "ssn", false},
		{"SELECT id FROM users WHERE ssn LIKE '1%'", "ssn", false},
		{"SELECT id FROM users ORDER BY ssn", "ssn", false},
		{"SELECT id, ssn FROM users ORDER BY 2", "ssn", false},
		{"SELECT id, ssn, count(*) FROM users GROUP BY 1, 2", "id,ssn", false},
		{"SELECT id, upper(email) FROM users ORDER BY 2", "email", false},
		{"SELECT * FROM users ORDER BY 1", "", true},
		{"SELECT ssn FROM users UNION SELECT v FROM t", "ssn,v", false},
		{"UPDATE users SET email = ssn WHERE id = 1", "id,ssn", false},
		{"INSERT INTO t SELECT id, ssn FROM users", "id,ssn", false},
		{"UPDATE users SET email = 'x' WHERE id = 1 RETURNING ssn AS x", "id,ssn", false},
		{"SELECT \"SSN\" FROM users WHERE \"Ssn\" = 'a'", "ssn", false},
		{"WITH s AS (SELECT ssn FROM users) SELECT upper(ssn) FROM s", "ssn", false},
		{"SELECT (SELECT ssn FROM users LIMIT 1) AS x", "ssn", false},
		{"INSERT INTO t SELECT * FROM users", "", true},
		{"WITH s AS (SELECT * FROM users) INSERT INTO t SELECT * FROM s", "", true},
		{"SELECT id FROM t UNION SELECT * FROM users", "id", true},
		// Whole rows and renames cannot be followed.
		{"SELECT t.v FROM t JOIN users USING (ssn)", "ssn", false},
		{"SELECT u FROM users u", "", true},
		{"SELECT v FROM t NATURAL JOIN users", "", true},
		{"SELECT row_to_json(u) FROM users u", "", true},
		{"SELECT json_agg(users) FROM users", "", true},
		{"SELECT row_to_json(u.*) FROM users u", "", true},
		{"SELECT (u).ssn FROM users u", "", true},
		{"SELECT x FROM users AS u(a, b, x)", "", true},
		{"WITH s(a, b, x) AS (SELECT * FROM users) SELECT x FROM s", "", true},
	}
	for _, tt := range tests {
		var c Classifier
		r := c.Classify(tt.sql, nil)
		if r.Err != nil || len(r.Statements) != 1 {
			t.Fatalf("%s: %v", tt.sql, r.Err)
		}
		refs := r.Statements[0].Refs
		if got := strings.Join(refs.Used, ","); got != tt.used && !(tt.opaque && refs.Opaque != "") {
			t.Errorf("%s: used = %q, want %q", tt.sql, got, tt.used)
		}
		if (refs.Opaque != "") != tt.opaque {
			t.Errorf("%s: opaque = %q, want %v", tt.sql, refs.Opaque, tt.opaque)
		}
	}
}

// Statements that differ only in an ORDER BY position must not share a
// cached analysis.
func TestOrdinalsNotFolded(t *testing.T) {
	t.Parallel()
	var c Classifier
	c.Classify("SELECT id, ssn FROM users ORDER BY 1", nil)
	r := c.Classify("SELECT id, ssn FROM users ORDER BY 2", nil)
	if got := strings.Join(r.Statements[0].Refs.Used, ","); got != "ssn" {
		t.Errorf("ORDER BY 2 after ORDER BY 1: used %q, want ssn", got)
	}
}

func TestPreparedNames(t *testing.T) {
	t.Parallel()
	var c Classifier
	for _, tc := range []struct{ sql, executes, deallocates string }{
		{"EXECUTE P(1)", "p", ""},
		{"DEALLOCATE p", "", "p"},
		{"DEALLOCATE PREPARE p", "", "p"},
		{"DEALLOCATE ALL", "", "*"},
		{"DISCARD ALL", "", "*"},
		{"DISCARD PLANS", "", ""},
	} {
		r := c.Classify(tc.sql, nil)
		if len(r.Statements) != 1 {
			t.Fatalf("%s: %v", tc.sql, r.Err)
		}
		if st := r.Statements[0]; st.Executes != tc.executes || st.Deallocates != tc.deallocates {
			t.Errorf("%s: executes %q deallocates %q, want %q %q", tc.sql, st.Executes, st.Deallocates, tc.executes, tc.deallocates)
		}
	}
}
