package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
	"github.com/loopgate/loopgate/tests/lgtest"
)

// approvalsAPI is an API with a store, a broker and an approver, alice,
// who authenticates with a bearer token over loopback TCP.
type approvalsAPI struct {
	srv    *httptest.Server
	broker *policy.Broker
	db     *store.DB
	token  string
}

func newApprovalsAPI(t *testing.T) *approvalsAPI {
	t.Helper()
	is := lgtest.StartIssuer(t)
	cfg, err := policy.Parse("c.yaml", []byte("approvers:\n  - {name: alice, oidc_subject: alice}\n"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "lg.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b := &policy.Broker{Policy: func() *policy.Config { return cfg }, Timeout: time.Minute}
	s := &Server{Broker: b, Store: db, Policy: func() *policy.Config { return cfg },
		Verifier: policy.NewVerifier([]policy.Issuer{{URL: is.URL, Audience: "loopgate-api"}}, nil)}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &approvalsAPI{srv: srv, broker: b, db: db,
		token: is.Token(t, lgtest.Claims{Subject: "alice", Audience: "loopgate-api"})}
}

func (a *approvalsAPI) do(t *testing.T, method, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, a.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body json.RawMessage
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// TestListApprovalsByState: state=all lists the pending requests and the
// recorded ones, as no state does; a state lists only its own.
func TestListApprovalsByState(t *testing.T) {
	t.Parallel()
	a := newApprovalsAPI(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	now := time.Now()
	for _, st := range []string{"denied", "expired"} {
		err := a.db.RecordApproval(ctx, event.Approval{ID: "apr_" + st, SessionID: "s0", State: st, Requested: now, Expires: now, Decided: now})
		if err != nil {
			t.Fatal(err)
		}
	}
	filed := make(chan string, 1)
	go a.broker.Ask(ctx, policy.Request{SessionID: "s1", UID: 1000, Class: "write"}, func(r policy.Request) { filed <- r.ID })
	pending := <-filed
	tests := []struct {
		name   string
		query  string
		status int
		want   []string
	}{
		{"no state", "", http.StatusOK, []string{pending, "apr_denied", "apr_expired"}},
		{"all", "?state=all", http.StatusOK, []string{pending, "apr_denied", "apr_expired"}},
		{"pending", "?state=pending", http.StatusOK, []string{pending}},
		{"denied", "?state=denied", http.StatusOK, []string{"apr_denied"}},
		{"unknown state", "?state=nonsense", http.StatusBadRequest, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := a.do(t, "GET", "/v1/approvals"+tc.query)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if tc.want == nil {
				return
			}
			var out struct {
				Approvals []struct{ ID string } `json:"approvals"`
			}
			if err := json.Unmarshal(body, &out); err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, x := range out.Approvals {
				ids = append(ids, x.ID)
			}
			slices.Sort(ids)
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(ids, want) {
				t.Errorf("approvals %v, want %v", ids, want)
			}
		})
	}
}

// TestDecideNotPending: deciding a request that is no longer pending is a
// conflict that says what became of it.
func TestDecideNotPending(t *testing.T) {
	t.Parallel()
	a := newApprovalsAPI(t)
	now := time.Now()
	for _, x := range []event.Approval{
		{ID: "apr_gone", State: policy.StateAbandoned, Reason: "the session ended while waiting: the client closed its connection"},
		{ID: "apr_late", State: policy.StateExpired, Reason: "approval timed out after 5m0s"},
		{ID: "apr_done", State: policy.StateDenied, DecidedBy: "bob", Reason: "no"},
	} {
		x.SessionID, x.Requested, x.Expires, x.Decided = "s", now, now, now
		if err := a.db.RecordApproval(context.Background(), x); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, id, code, msg string
		status              int
	}{
		{"abandoned", "apr_gone", "abandoned", "approval apr_gone is abandoned, nothing waits for it any more: the session ended while waiting: the client closed its connection", http.StatusConflict},
		{"expired", "apr_late", "expired", "approval apr_late is expired, nothing waits for it any more: approval timed out after 5m0s", http.StatusConflict},
		{"decided", "apr_done", "already_decided", "approval apr_done was already denied by bob", http.StatusConflict},
		{"unknown", "apr_nope", "not_found", "", http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := a.do(t, "POST", "/v1/approvals/"+tc.id+"/approve")
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			json.Unmarshal(body, &e)
			if status != tc.status || e.Error.Code != tc.code || tc.msg != "" && e.Error.Message != tc.msg {
				t.Errorf("got %d %s %q, want %d %s %q", status, e.Error.Code, e.Error.Message, tc.status, tc.code, tc.msg)
			}
		})
	}
}
