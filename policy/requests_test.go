package policy

import (
	"strings"
	"testing"
)

func TestRequestPatterns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pattern, method, path string
		want                  bool
	}{
		{"POST /repos/*/*/merges", "POST", "/repos/acme/app/merges", true},
		{"POST /repos/*/*/merges", "POST", "/repos/acme/merges", false},
		{"POST /repos/*/*/merges", "GET", "/repos/acme/app/merges", false},
		{"DELETE /**", "DELETE", "/", true},
		{"DELETE /**", "DELETE", "/a/b/c", true},
		{"* /admin/**", "GET", "/admin", true},
		{"* /admin/**", "PUT", "/admin/x/y", true},
		{"* /admin/**", "PUT", "/administrator", false},
		{"GET /users/{id}", "GET", "/users/7", true},
		{"GET /users/{id}", "GET", "/users/7/keys", false},
		{"GET /v1/*.json", "GET", "/v1/a.json", true},
		{"GET /a/**/z", "GET", "/a/z", true},
		{"GET /a/**/z", "GET", "/a/b/c/z", true},
		{"GET /", "GET", "/", true},
		{"GET /", "GET", "/x", false},
	}
	for _, tc := range tests {
		t.Run(tc.pattern+" "+tc.method+" "+tc.path, func(t *testing.T) {
			p, err := ParseRequestPattern(tc.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Match(tc.method, tc.path); got != tc.want {
				t.Errorf("got %v", got)
			}
		})
	}
	for _, bad := range []string{"get /x", "GET x", "GET /a/../b", "GET /a//b", "GET /a%2fb", "GET /a**b", "GET /[", "/x"} {
		if _, err := ParseRequestPattern(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestDecideRequest(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("c.yaml", []byte(`targets:
  - {name: api, protocol: http, address: "127.0.0.1:443"}
  - {name: db, protocol: postgres, address: "127.0.0.1:5432"}
workloads:
  - {name: w, cgroup: w}
approvers:
  - {name: alice, uid: 1000}
rules:
  - id: r
    workloads: [w]
    targets: [api]
    allow: [read, write]
    deny: [delete]
    requests:
      approve: ["POST /repos/*/*/merges", "DELETE /tmp/**"]
      deny: ["* /admin/**", "POST /repos/*/secret/**"]
      allow: ["POST /repos/*/secret/**"]
`))
	if err != nil {
		t.Fatal(err)
	}
	tg, _ := cfg.TargetByName("api")
	sub := &Subject{Workload: "w", Target: tg}
	tests := []struct {
		method, path, class string
		want                Action
	}{
		{"GET", "/repos", "read", Allow},
		{"POST", "/repos/a/b/merges", "write", Approve},
		{"DELETE", "/tmp/x", "delete", Approve}, // a pattern comes before the class
		{"DELETE", "/x", "delete", Deny},
		{"GET", "/admin/users", "read", Deny},
		{"POST", "/repos/a/secret/x", "write", Deny}, // deny wins over allow
	}
	for _, tc := range tests {
		d := cfg.DecideRequest(cfg.Decide(sub, []string{tc.class}), tc.method, tc.path)
		if d.Action != tc.want || d.RuleID != "r" {
			t.Errorf("%s %s: %+v, want %s", tc.method, tc.path, d, tc.want)
		}
		if tc.want == Approve && d.ApprovalsRequired < 1 {
			t.Errorf("%s %s: approvals required %d", tc.method, tc.path, d.ApprovalsRequired)
		}
	}
	_, err = Parse("c.yaml", []byte(`targets:
  - {name: db, protocol: postgres, address: "127.0.0.1:5432"}
workloads:
  - {name: w, cgroup: w}
rules:
  - id: r
    workloads: [w]
    targets: [db]
    requests:
      allow: ["GET /x", "GET y"]
`))
	if err == nil || !strings.Contains(err.Error(), "c.yaml:10:") || !strings.Contains(err.Error(), "need an http target") {
		t.Errorf("errors: %v", err)
	}
}

func TestHTTPTargetConfig(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("c.yaml", []byte(`targets:
  - name: gh
    protocol: http
    address: "127.0.0.1:443"
    placeholders: [GH_TOKEN]
    credentials: {scheme: basic, password_env: GH}
  - {name: ai, protocol: http, address: "127.0.0.2:443", credentials: {scheme: raw, header: x-api-key, password_file: /k}}
  - {name: pt, protocol: http, address: "127.0.0.3:443", tls: passthrough}
`))
	if err != nil {
		t.Fatal(err)
	}
	gh, _ := cfg.TargetByName("gh")
	if gh.Credentials.HTTP.Header != "Authorization" || gh.Credentials.User != "x-access-token" || gh.TLS.Mode != TLSVerifyFull {
		t.Errorf("gh = %+v", gh)
	}
	ai, _ := cfg.TargetByName("ai")
	if ai.Credentials.HTTP.Header != "X-Api-Key" {
		t.Errorf("ai = %+v", ai.Credentials)
	}
	if pt, _ := cfg.TargetByName("pt"); !pt.TLS.Passthrough {
		t.Errorf("pt = %+v", pt.TLS)
	}
	for _, bad := range []string{
		`{name: a, protocol: http, address: "1.2.3.4:443", tls: passthrough, credentials: {password_env: X}}`,
		`{name: a, protocol: http, address: "1.2.3.4:443", placeholders: ["9x"]}`,
		`{name: a, protocol: tcp, address: "1.2.3.4:443", tls: passthrough}`,
		`{name: a, protocol: http, address: "1.2.3.4:443", credentials: {scheme: raw, password_env: X}}`,
		`{name: a, protocol: http, address: "1.2.3.4:443", tls: {mode: require}}`,
		`{name: a, protocol: http, address: "1.2.3.4:443", credentials: {cert_file: /c}}`,
	} {
		if _, err := Parse("c.yaml", []byte("targets:\n  - "+bad+"\n")); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
