package http

import (
	"encoding/base64"
	"io"
	stdhttp "net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/loopgate/loopgate/policy"
)

func TestOwnSecret(t *testing.T) {
	t.Parallel()
	tg := &policy.Target{Credentials: policy.Credentials{HTTP: policy.HTTPCredentials{Header: "X-Api-Key", Scheme: policy.SchemeRaw}}}
	basic := func(u, p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p)) }
	tests := []struct {
		name   string
		header [2]string
		uri    string
		refuse bool
	}{
		{"none", [2]string{}, "/", false},
		{"placeholder bearer", [2]string{"Authorization", "Bearer " + policy.Placeholder}, "/", false},
		{"placeholder in basic", [2]string{"Authorization", basic("x-access-token", policy.Placeholder)}, "/", false},
		{"placeholder as basic user", [2]string{"Authorization", basic(policy.Placeholder, "")}, "/", false},
		{"own bearer", [2]string{"Authorization", "Bearer sk-proj-abcdefgh12345678"}, "/", true},
		{"own basic password", [2]string{"Authorization", basic("me", "hunter2hunter2")}, "/", true},
		{"own key in the target's header", [2]string{"X-Api-Key", "sk-ant-abcdefgh1234"}, "/", true},
		{"short value", [2]string{"Authorization", "Bearer x"}, "/", false},
		{"cookies are stripped, not judged", [2]string{"Cookie", "session=abcdefghijklmnop"}, "/", false},
		{"the real secret in the query", [2]string{}, "/?key=real-secret-value", true},
		{"the real secret in any header", [2]string{"X-Other", "real-secret-value"}, "/", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &stdhttp.Request{Header: stdhttp.Header{}, RequestURI: tc.uri}
			if tc.header[0] != "" {
				r.Header.Set(tc.header[0], tc.header[1])
			}
			if got := ownSecret(r, tg, "real-secret-value"); (got != "") != tc.refuse {
				t.Errorf("ownSecret = %q, want refuse=%v", got, tc.refuse)
			}
		})
	}
	h := stdhttp.Header{"Authorization": {"Bearer x"}, "Cookie": {"a=b"}, "X-Api-Key": {"k"}, "Accept": {"*/*"}}
	injectCredentials(h, tg, "real")
	if h.Get("X-Api-Key") != "real" || h.Get("Authorization") != "" || h.Get("Cookie") != "" || h.Get("Accept") != "*/*" {
		t.Errorf("after injection: %v", h)
	}
}

// TestScrubReader: an echoed secret is replaced even when it straddles
// reads, and nothing else is held back.
func TestScrubReader(t *testing.T) {
	t.Parallel()
	in := "a secret-token b secret-tok secret-token" + strings.Repeat("x", 100) + "secret-token"
	r := newScrubReader(io.NopCloser(iotest.OneByteReader(strings.NewReader(in))), [][]byte{[]byte("secret-token")})
	out, err := io.ReadAll(r)
	want := strings.ReplaceAll(in, "secret-token", "[redacted]")
	if err != nil || string(out) != want {
		t.Errorf("got %q, %v\nwant %q", out, err, want)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		method string
		body   bool
		want   string
	}{
		{"GET", false, "read"}, {"HEAD", false, "read"}, {"OPTIONS", false, "read"},
		{"GET", true, "unknown"}, {"POST", true, "write"}, {"PUT", false, "write"}, {"PATCH", true, "write"},
		{"DELETE", false, "delete"}, {"CONNECT", false, "unknown"}, {"TRACE", false, "unknown"}, {"PROPFIND", false, "unknown"},
	} {
		r, _ := stdhttp.NewRequest(tc.method, "https://x/", nil)
		if tc.body {
			r, _ = stdhttp.NewRequest(tc.method, "https://x/", strings.NewReader("b"))
		}
		if got := classify(r); got != tc.want {
			t.Errorf("%s body=%v: %s, want %s", tc.method, tc.body, got, tc.want)
		}
	}
}
