package http

import (
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNormalizePath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, clean, escaped string
		bad                      bool
	}{
		{"root", "/", "/", "/", false},
		{"empty", "", "/", "/", false},
		{"plain", "/repos/a/b", "/repos/a/b", "/repos/a/b", false},
		{"trailing slash kept", "/a/b/", "/a/b/", "/a/b/", false},
		{"dot segments", "/a/./b/../c", "/a/c", "/a/c", false},
		{"dot-dot to a directory", "/a/b/..", "/a/", "/a/", false},
		{"double slashes", "//a///b", "/a/b", "/a/b", false},
		{"escapes decoded and re-escaped", "/a%20b/%7euser", "/a b/~user", "/a%20b/~user", false},
		{"utf-8", "/caf%C3%A9", "/café", "/caf%C3%A9", false},
		{"escaped dot-dot", "/a/%2e%2e/admin", "", "", true},
		{"escaped dot", "/a/%2E/admin", "", "", true},
		{"escaped slash", "/a%2fb", "", "", true},
		{"escaped backslash", "/a%5cb", "", "", true},
		{"backslash", "/a\\..\\admin", "", "", true},
		{"semicolon", "/admin;jsessionid=1", "", "", true},
		{"bad escape", "/a%zz", "", "", true},
		{"short escape", "/a%2", "", "", true},
		{"nul", "/a%00b", "", "", true},
		{"overlong dot", "/a/%c0%ae%c0%ae/admin", "", "", true},
		{"climb above root", "/../etc/passwd", "", "", true},
		{"not origin form", "a/b", "", "", true},
		{"too long", "/" + strings.Repeat("a", maxPathLen), "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, e, err := normalizePath(tc.in)
			if tc.bad {
				if err == nil {
					t.Errorf("normalizePath(%q) = %q, %q; want an error", tc.in, c, e)
				}
				return
			}
			if err != nil || c != tc.clean || e != tc.escaped {
				t.Errorf("normalizePath(%q) = %q, %q, %v; want %q, %q", tc.in, c, e, err, tc.clean, tc.escaped)
			}
		})
	}
}

// FuzzNormalizePath: never panics; a normalised path is stable (normalising
// it again changes nothing), has no dot or empty segment, and its escaped
// form decodes to its clean form.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "//x", "/a%2e%2e/b", "/%2f", "/a/b/..", "/caf%C3%A9/", "/a;b", "/%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, e, err := normalizePath(in)
		if err != nil {
			return
		}
		c2, e2, err := normalizePath(e)
		if err != nil || c2 != c || e2 != e {
			t.Fatalf("not stable: %q -> %q %q -> %q %q %v", in, c, e, c2, e2, err)
		}
		for _, seg := range strings.Split(strings.Trim(c, "/"), "/") {
			if seg == "." || seg == ".." || seg == "" && c != "/" {
				t.Fatalf("%q -> %q has a dot or empty segment", in, c)
			}
		}
	})
}

func TestMinterCollapsesAndCaches(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	m, err := NewMinter(ca.cert, ca.key, "")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	certs := make([]any, 16)
	for i := range certs {
		wg.Go(func() {
			c, err := m.Leaf("api.test")
			if err != nil {
				t.Error(err)
				return
			}
			certs[i] = c
		})
	}
	wg.Wait()
	for _, c := range certs[1:] {
		if c != certs[0] {
			t.Fatal("concurrent mints of one name gave different certificates")
		}
	}
	c, _ := m.Leaf("api.test")
	if c.Leaf.DNSNames[0] != "api.test" || len(c.Leaf.DNSNames) != 1 || c.Leaf.NotAfter.Sub(c.Leaf.NotBefore) > 26*time.Hour {
		t.Errorf("leaf: %v %v-%v", c.Leaf.DNSNames, c.Leaf.NotBefore, c.Leaf.NotAfter)
	}
	ip, _ := m.Leaf("127.0.0.1")
	if len(ip.Leaf.IPAddresses) != 1 || len(ip.Leaf.DNSNames) != 0 {
		t.Errorf("ip leaf: %v %v", ip.Leaf.IPAddresses, ip.Leaf.DNSNames)
	}
}
