package api

import (
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
)

// TestWebPagesOverStore: the pages read a real store: the filters, the
// session view of an SSH exec and of an HTTP request, and bad parameters.
func TestWebPagesOverStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := store.OpenWith(ctx, filepath.Join(t.TempDir(), "loopgate.db"), store.Options{Sync: store.SyncFull})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg, err := policy.Parse("c.yaml", []byte("approvers:\n  - {name: root, uid: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Hour)
	for i, x := range []struct {
		id, workload, target, protocol string
		evs                            []event.Event
	}{
		{"s-ssh", "deploy", "web1", "ssh", []event.Event{
			{Kind: event.KindCommand, Text: "ls -l /srv", Decision: "allow", RuleID: "ops"},
			{Kind: event.KindResult, Text: "ls -l /srv", Tag: "exit 0", Bytes: 1234, Duration: 40 * time.Millisecond, Params: `{"exit":"0"}`},
			{Kind: "pty_resize", Text: "100x30"},
			{Kind: event.KindCast, Text: "cast 1", Params: `{"version":2,"width":80,"height":24}` + "\n"},
			{Kind: event.KindCast, Text: "cast 1", Params: `[0.1,"o","$ "]` + "\n"},
			{Kind: event.KindCast, Text: "cast 2", Params: `{"version":2,"width":100,"height":30}` + "\n"},
			{Kind: event.KindCast, Text: "cast 1", Params: `[0.5,"o","ls\r\n"]` + "\n"},
		}},
		{"s-http", "agent", "api", "http", []event.Event{
			{Kind: event.KindCommand, Text: "DELETE /v1/items/7", Decision: "deny", RuleID: "api-read", Error: "delete denied by rule api-read"},
			{Kind: event.KindCommand, Text: "GET /v1/items", Decision: "allow", Tag: "200", Bytes: 2 << 20, Duration: 3 * time.Millisecond},
		}},
		{"s-pg", "agent", "appdb", "postgres", nil},
	} {
		s := event.Session{ID: x.id, Workload: x.workload, Target: x.target, Protocol: x.protocol, Exe: "/usr/bin/x",
			Started: start.Add(time.Duration(i) * time.Minute)}
		if err := db.OpenSession(ctx, s); err != nil {
			t.Fatal(err)
		}
		for j := range x.evs {
			x.evs[j].SessionID = x.id
			x.evs[j].Time = s.Started.Add(time.Second)
		}
		if err := db.AppendEvents(ctx, x.evs...); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.CloseSession(ctx, "s-ssh", event.End{Ended: start.Add(2 * time.Second), Outcome: event.OutcomeClosed}); err != nil {
		t.Fatal(err)
	}
	srv := &Server{Broker: &policy.Broker{Policy: func() *policy.Config { return cfg }, Timeout: time.Minute},
		Store: db, Policy: func() *policy.Config { return cfg }}
	h := srv.Handler()
	cookie := &http.Cookie{Name: cookieName, Value: srv.web.add(&webSession{name: "ada", csrf: "tok", expires: time.Now().Add(time.Hour)})}
	get := func(path string, signedIn bool) (int, string, http.Header) {
		req := httptest.NewRequest("GET", path, nil)
		if signedIn {
			req.AddCookie(cookie)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		b, _ := io.ReadAll(w.Result().Body)
		return w.Code, string(b), w.Result().Header
	}
	for _, tc := range []struct {
		name, path string
		code       int
		want, not  []string
	}{
		{"all sessions", "/ui/", 200, []string{`data-id="s-ssh"`, `data-id="s-http"`, `data-id="s-pg"`, "1 h ago"}, nil},
		{"by workload", "/ui/?workload=agent", 200, []string{`data-id="s-http"`, `data-id="s-pg"`, `<option value="agent" selected>`}, []string{`data-id="s-ssh"`}},
		{"by target", "/ui/?target=web1", 200, []string{`data-id="s-ssh"`}, []string{`data-id="s-http"`, `data-id="s-pg"`}},
		{"by outcome", "/ui/?outcome=open", 200, []string{`data-id="s-http"`}, []string{`data-id="s-ssh"`}},
		{"nothing matches", "/ui/?workload=agent&target=web1", 200, []string{"No session matches."}, []string{`class="session"`}},
		{"bad before", "/ui/?before=yesterday", 400, nil, nil},
		{"ssh exec", "/ui/sessions/s-ssh", 200, []string{`<th>Result</th>`, `<code>ls -l /srv</code>`, `<td class="result">exit 0</td>`,
			`<td class="bytes num">1.2 KiB</td>`, `<td class="dur num">40 ms</td>`, `<span class="kind">pty_resize</span> <code>100x30</code>`,
			`<span class="kind">cast</span> <code>cast 1</code> <a class="cast" href="/ui/sessions/s-ssh/cast?name=cast&#43;1" download>`,
			// The player's button, shown by app.js: without script, the link.
			`<button type="button" class="play" data-src="/ui/sessions/s-ssh/cast?name=cast&#43;1" hidden>play</button>`,
			`<code>cast 2</code>`,
			"after 2 s"}, []string{`<th>Rows</th>`, `<th>Error</th>`}},
		{"http requests", "/ui/sessions/s-http", 200, []string{`<th>Status</th>`, `<td class="result">200</td>`, `<td class="bytes num">2.0 MiB</td>`,
			`<td class="err">delete denied by rule api-read</td>`, "still open"}, []string{`<th>Rows</th>`}},
		{"no such session", "/ui/sessions/nope", 404, nil, nil},
		{"bad after", "/ui/sessions/s-ssh?after=x", 400, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, hdr := get(tc.path, true)
			if code != tc.code {
				t.Fatalf("%s: %d, want %d: %s", tc.path, code, tc.code, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("%s lacks %s", tc.path, w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(body, n) {
					t.Errorf("%s has %s", tc.path, n)
				}
			}
			if code == 200 {
				if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
					t.Errorf("CSP %q", csp)
				}
				// One script, from the daemon, nothing inline.
				if n, m := strings.Count(body, "<script"), strings.Count(body, `<script src="/ui/app.js" defer></script>`); n != 1 || m != 1 {
					t.Errorf("%d scripts, %d of them app.js", n, m)
				}
			}
		})
	}
	if code, _, hdr := get("/ui/sessions/s-ssh", false); code != http.StatusSeeOther || hdr.Get("Location") != "/ui/" {
		t.Errorf("signed out session view: %d %s", code, hdr.Get("Location"))
	}
	// A terminal's chunks, in order, make its .cast file.
	code, body, hdr := get("/ui/sessions/s-ssh/cast?name=cast+1", true)
	want := `{"version":2,"width":80,"height":24}` + "\n" + `[0.1,"o","$ "]` + "\n" + `[0.5,"o","ls\r\n"]` + "\n"
	if code != 200 || body != want || hdr.Get("Content-Type") != "application/x-asciicast" ||
		!strings.Contains(hdr.Get("Content-Disposition"), `filename="loopgate-s-ssh-cast-1.cast"`) {
		t.Errorf("cast: %d %q %v", code, body, hdr)
	}
	for _, path := range []string{"/ui/sessions/s-ssh/cast?name=cast+9", "/ui/sessions/s-http/cast?name=cast+1"} {
		if code, _, _ := get(path, true); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, code)
		}
	}
	if code, _, _ := get("/ui/sessions/s-ssh/cast?name=cast+1", false); code != http.StatusSeeOther {
		t.Errorf("signed out cast: %d", code)
	}
}

// TestWebSessionsPageBack: the list shows the newest 50 sessions and links
// the older ones, keeping the filter.
func TestWebSessionsPageBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := store.OpenWith(ctx, filepath.Join(t.TempDir(), "loopgate.db"), store.Options{Sync: store.SyncFull})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now().Add(-time.Hour)
	for i := range maxListed + 3 {
		s := event.Session{ID: fmt.Sprintf("s%02d", i), Workload: "bulk", Target: "t", Started: start.Add(time.Duration(i) * time.Second)}
		if err := db.OpenSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	db.OpenSession(ctx, event.Session{ID: "other", Workload: "other", Target: "t", Started: start})
	cfg, _ := policy.Parse("c.yaml", []byte("approvers:\n  - {name: root, uid: 0}\n"))
	srv := &Server{Broker: &policy.Broker{Policy: func() *policy.Config { return cfg }, Timeout: time.Minute},
		Store: db, Policy: func() *policy.Config { return cfg }}
	h := srv.Handler()
	cookie := &http.Cookie{Name: cookieName, Value: srv.web.add(&webSession{name: "ada", csrf: "tok", expires: time.Now().Add(time.Hour)})}
	get := func(path string) string {
		req := httptest.NewRequest("GET", path, nil)
		req.AddCookie(cookie)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			t.Fatalf("%s: %d", path, w.Code)
		}
		return w.Body.String()
	}
	first := get("/ui/?workload=bulk")
	if n := strings.Count(first, `<tr class="session"`); n != maxListed {
		t.Errorf("first page lists %d sessions", n)
	}
	m := regexp.MustCompile(`<a href="([^"]+)" id="older">`).FindStringSubmatch(first)
	if m == nil || !strings.Contains(first, `data-id="s52"`) || strings.Contains(first, `data-id="s02"`) {
		t.Fatalf("first page: newest first, then a link to older ones: %v", m)
	}
	older := get(html.UnescapeString(m[1]))
	if n := strings.Count(older, `<tr class="session"`); n != 3 || !strings.Contains(older, `data-id="s00"`) ||
		strings.Contains(older, `data-id="other"`) || strings.Contains(older, `id="older"`) || !strings.Contains(older, `id="clear"`) {
		t.Errorf("older page lists %d sessions:\n%s", n, older)
	}
}
