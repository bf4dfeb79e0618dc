package api

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestStreamOverSocket: a request filed after a client subscribes arrives
// on the event stream, over the unix socket, identified as root.
func TestStreamOverSocket(t *testing.T) {
	cfg, err := policy.Parse("c.yaml", []byte("approvers:\n  - {name: root, uid: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := &policy.Broker{Policy: func() *policy.Config { return cfg }, Timeout: 5 * time.Second}
	s := &Server{Broker: b, Policy: func() *policy.Config { return cfg }}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx, sock, "")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	var resp *http.Response
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err = hc.Get("http://lg/v1/approvals/stream")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %s", resp.Status)
	}
	go b.Ask(ctx, policy.Request{SessionID: "s", UID: 1000, Class: "write"}, nil)
	sc := bufio.NewScanner(resp.Body)
	got := make(chan string, 1)
	go func() {
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				got <- d
				return
			}
		}
	}()
	select {
	case d := <-got:
		if !strings.Contains(d, `"state":"pending"`) {
			t.Errorf("event %s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event on the stream")
	}
}

func TestWebhook(t *testing.T) {
	cfg, _ := policy.Parse("c.yaml", []byte("approvers:\n  - {name: root, uid: 0}\n"))
	b := &policy.Broker{Policy: func() *policy.Config { return cfg }, Timeout: 10 * time.Second}
	var mu sync.Mutex
	var texts []string
	fails := 1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 { // the first delivery fails: it must be retried
			fails--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var body struct{ Text string }
		json.NewDecoder(r.Body).Decode(&body)
		texts = append(texts, body.Text)
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wh := &Webhook{URL: srv.URL, Broker: b, Log: slog.New(slog.NewTextHandler(t.Output(), nil))}
	go wh.Run(ctx)
	time.Sleep(50 * time.Millisecond) // let Run subscribe
	var id string
	go b.Ask(ctx, policy.Request{SessionID: "s", Workload: "w", Target: "db", UID: 1000, Class: "write", Command: "DELETE FROM t"},
		func(r policy.Request) { mu.Lock(); id = r.ID; mu.Unlock() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n, cur := len(texts), id
		mu.Unlock()
		if n == 1 && cur != "" {
			b.Decide(ctx, cur, policy.Identity{UID: 0}, true, "fine", "", 0)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pending request not delivered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		mu.Lock()
		n := len(texts)
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("decision not delivered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(texts[0], "wants to run (write") || !strings.Contains(texts[1], "approved by root: fine") {
		t.Errorf("texts = %q", texts)
	}
}

// TestBearerTokens: the TCP listener takes only tokens for the API's own
// audience, unexpired, from a configured issuer, of an approver.
func TestBearerTokens(t *testing.T) {
	is := lgtest.StartIssuer(t)
	cfg, err := policy.Parse("c.yaml", []byte("approvers:\n  - {name: alice, oidc_subject: alice}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := &policy.Broker{Policy: func() *policy.Config { return cfg }}
	s := &Server{Broker: b, Policy: func() *policy.Config { return cfg },
		Verifier: policy.NewVerifier([]policy.Issuer{{URL: is.URL, Audience: "loopgate-api"}}, nil)}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	tests := []struct {
		name  string
		token string
		want  int
	}{
		{"none", "", http.StatusUnauthorized},
		{"approver", is.Token(t, lgtest.Claims{Subject: "alice", Audience: "loopgate-api"}), http.StatusOK},
		{"workload audience", is.Token(t, lgtest.Claims{Subject: "alice", Audience: "loopgate"}), http.StatusUnauthorized},
		{"expired", is.Token(t, lgtest.Claims{Subject: "alice", Audience: "loopgate-api", Expiry: time.Now().Add(-time.Hour)}), http.StatusUnauthorized},
		{"not an approver", is.Token(t, lgtest.Claims{Subject: "mallory", Audience: "loopgate-api"}), http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+"/v1/approvals", nil)
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}
