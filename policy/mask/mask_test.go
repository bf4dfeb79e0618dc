package mask

import (
	"strings"
	"testing"

	"github.com/loopgate/loopgate/policy"
)

func masker(t *testing.T, masks string, names ...string) *Masker {
	t.Helper()
	cfg, err := policy.Parse("m.yaml", []byte("masks:\n"+masks))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg, names, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDetectors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		detect, in, want string
	}{
		{"email", "write to ada@example.com today", "write to [redacted] today"},
		{"card", "card 4111 1111 1111 1111 ok", "card [redacted] ok"},
		{"card", "not a card 4111 1111 1111 1112", "not a card 4111 1111 1111 1112"},
		{"ssn", "ssn 123-45-6789", "ssn [redacted]"},
		{"phone", "call +1 415-555-2671", "call [redacted]"},
		{"iban", "pay GB82 WEST 1234 5698 7654 32 now", "pay [redacted] now"},
		{"iban", "GB00 WEST 1234 5698 7654 32", "GB00 WEST 1234 5698 7654 32"},
		{"aws-key", "AKIAIOSFODNN7EXAMPLE", "[redacted]"},
		{"jwt", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig-nat_ure", "Bearer [redacted]"},
		{"private-key", "x -----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY----- y", "x [redacted] y"},
	}
	for _, tc := range tests {
		t.Run(tc.detect+"/"+tc.in, func(t *testing.T) {
			m := masker(t, "  - {name: m, detect: "+tc.detect+"}\n", "m")
			if got := m.String(tc.in); got != tc.want {
				t.Errorf("%s(%q) = %q, want %q", tc.detect, tc.in, got, tc.want)
			}
		})
	}
}

func TestModesAndColumns(t *testing.T) {
	t.Parallel()
	m := masker(t, "  - {name: e, detect: email, mode: partial}\n  - {name: s, columns: ['*.ssn', 'users.tax_id'], mode: hash}\n", "e", "s")
	if got := m.String("ada@example.com"); got != "***********.com" {
		t.Errorf("partial = %q", got)
	}
	for _, tc := range []struct {
		table, column, alias, want string
	}{
		{"customers", "ssn", "ssn", "hash"},
		{"customers", "ssn", "x", "hash"}, // renamed: still masked
		{"", "", "SSN", "hash"},           // an expression named ssn
		{"users", "tax_id", "tax_id", "hash"},
		{"orders", "tax_id", "tax_id", ""}, // another table's tax_id
		{"", "", "tax_id", "hash"},         // table unknown: mask
		{"users", "email", "email", ""},
	} {
		if got := m.Column(tc.table, tc.column, tc.alias); got != tc.want {
			t.Errorf("Column(%q, %q, %q) = %q, want %q", tc.table, tc.column, tc.alias, got, tc.want)
		}
	}
	a, b := m.Value("hash", []byte("123-45-6789")), m.Value("hash", []byte("123-45-6789"))
	if string(a) != string(b) || !strings.HasPrefix(string(a), "hmac:") || string(a) == string(m.Value("hash", []byte("x"))) {
		t.Errorf("hash not stable or not distinct: %s %s", a, b)
	}
}
