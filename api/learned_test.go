package api

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
)

func TestLearnedColumns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(t.TempDir(), "lg.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.LearnColumn(ctx, event.LearnedColumn{Rule: "r", Mask: "email", Column: "users.email", SessionID: "s1", FirstSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	cfg, err := policy.Parse("c.yaml", []byte("approvers:\n  - {name: root, uid: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var changed []event.LearnedColumn
	s := &Server{Broker: &policy.Broker{Policy: func() *policy.Config { return cfg }}, Store: db,
		Policy: func() *policy.Config { return cfg }, LearnedChanged: func(c event.LearnedColumn) { changed = append(changed, c) }}
	h := s.Handler()
	call := func(uid int64, method, path, body string) (int, string) {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req = req.WithContext(context.WithValue(req.Context(), peerKey, peer{uid: uid}))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code, w.Body.String()
	}
	ref := `{"rule": "r", "mask": "email", "column": "users.email"}`
	for _, tc := range []struct {
		name         string
		uid          int64
		method, path string
		body         string
		code         int
		want         string
	}{
		{"list", 0, "GET", "/v1/masks/learned", "", 200, `"state":"learned"`},
		{"not an approver", 1000, "POST", "/v1/masks/learned/drop", ref, 403, "not_an_approver"},
		{"unknown column", 0, "POST", "/v1/masks/learned/drop", `{"rule": "r", "mask": "email", "column": "t.x"}`, 404, "not_found"},
		{"missing fields", 0, "POST", "/v1/masks/learned/confirm", `{"rule": "r"}`, 400, "bad_request"},
		{"drop", 0, "POST", "/v1/masks/learned/drop", ref, 200, `"state":"dropped"`},
		{"listed dropped", 0, "GET", "/v1/masks/learned", "", 200, `"changed_by":"uid:0"`},
	} {
		code, body := call(tc.uid, tc.method, tc.path, tc.body)
		if code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want %d and %q", tc.name, code, body, tc.code, tc.want)
		}
	}
	if len(changed) != 1 || changed[0].State != "dropped" || changed[0].Column != "users.email" {
		t.Errorf("LearnedChanged got %+v, want one drop", changed)
	}
	var out struct{ Columns []learnedView }
	_, body := call(0, "GET", "/v1/masks/learned", "")
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Columns) != 1 || out.Columns[0].Session != "s1" {
		t.Errorf("list = %s (%v)", body, err)
	}
}

// TestLearnedOnPage: the web page lists learned columns with confirm and
// drop buttons.
func TestLearnedOnPage(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	d := indexData{Name: "ada", CSRF: "tok", Learned: []event.LearnedColumn{{Rule: "r", Mask: "email", Column: "users.email",
		SessionID: "s1", FirstSeen: time.Now(), State: "learned"}}}
	if err := pages.ExecuteTemplate(&b, "index.html", d); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<td>users.email</td>`, `action="/ui/learned"`, `value="drop"`, `value="confirm"`, `name="csrf" value="tok"`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("page lacks %s", want)
		}
	}
}
