package api

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
)

// The approver web page: server-rendered HTML on the loopback TCP listener.
// An approver signs in by pasting an OIDC token (verified like an API bearer
// token); the page then lives on an HttpOnly, SameSite=Strict cookie. Every
// POST carries a per-session CSRF token and must come from the page's own
// origin. No script or style is inline (Content-Security-Policy: 'self'),
// and nothing is loaded from elsewhere.
//
// The pages are complete without script: times in UTC with "ago" computed
// by the server. The one script, app.js, shows times in the browser's zone,
// keeps "ago" current, applies the session filter on change, reloads
// the approvals page when a request arrives or changes, and plays a
// terminal's .cast in the session view (a small VT100 subset drawn into a
// <pre>; without script the .cast is a download). What the pages show
// is computed in webview.go; they read bounded windows of the store
// (store.LatestSessions, store.SessionEventWindow), never a whole session
// or table.

//go:embed web/*
var webFS embed.FS

// pages are the page templates; "when" (parts.html) shows a when, and the
// whenNow function makes one of a time.
var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"whenNow": func(t time.Time) when { return whenOf(t, time.Now()) },
}).ParseFS(webFS, "web/*.html"))

const cookieName = "lg_session"

type webSession struct {
	who     policy.Identity
	name    string
	csrf    string
	expires time.Time
}

// webSessions holds signed-in approvers. mu guards m.
type webSessions struct {
	mu sync.Mutex
	m  map[string]*webSession
}

func (w *webSessions) get(r *http.Request) *webSession {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.m[c.Value]
	if s == nil || time.Now().After(s.expires) {
		delete(w.m, c.Value)
		return nil
	}
	return s
}

func (w *webSessions) add(s *webSession) string {
	id := randomToken()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]*webSession{}
	}
	for k, v := range w.m { // drop expired ones
		if time.Now().After(v.expires) {
			delete(w.m, k)
		}
	}
	w.m[id] = s
	return id
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func secureHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin") // no-referrer would make Chromium send "Origin: null"
	h.Set("Cache-Control", "no-store")
}

// sameOrigin rejects cross-site POSTs: the Origin (or Referer) must be this
// server.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		o = r.Header.Get("Referer")
	}
	if o == "" {
		return false
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func (s *Server) webRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /ui/", s.webIndex)
	mux.HandleFunc("POST /ui/login", s.webLogin)
	mux.HandleFunc("POST /ui/decide", s.webDecide)
	mux.HandleFunc("GET /ui/stream", s.webStream)
	mux.HandleFunc("GET /ui/sessions/{id}", s.webSession)
	mux.HandleFunc("GET /ui/sessions/{id}/cast", s.webCast)
	mux.HandleFunc("GET /ui/app.js", func(w http.ResponseWriter, r *http.Request) {
		secureHeaders(w)
		w.Header().Set("Content-Type", "text/javascript")
		b, _ := webFS.ReadFile("web/app.js")
		w.Write(b)
	})
	mux.HandleFunc("GET /ui/style.css", func(w http.ResponseWriter, r *http.Request) {
		secureHeaders(w)
		w.Header().Set("Content-Type", "text/css")
		b, _ := webFS.ReadFile("web/style.css")
		w.Write(b)
	})
}

// maxListed is how many sessions the page lists at once.
const maxListed = 50

type indexData struct {
	Name     string
	CSRF     string
	Now      when
	Pending  []pendingView
	Sessions []sessionRow
	// Older links to the next page of sessions back in time ("": none).
	Older    string
	Filter   filterView
	Learned  []event.LearnedColumn
	Message  string
	StoreErr string
}

func (s *Server) webIndex(w http.ResponseWriter, r *http.Request) {
	secureHeaders(w)
	ws := s.web.get(r)
	if ws == nil {
		pages.ExecuteTemplate(w, "login.html", map[string]string{"Message": r.URL.Query().Get("m")})
		return
	}
	now := time.Now()
	q := r.URL.Query()
	d := indexData{Name: ws.name, CSRF: ws.csrf, Now: whenOf(now, now), Message: q.Get("m")}
	d.Filter = filterView{Workload: q.Get("workload"), Target: q.Get("target"), Outcome: q.Get("outcome"), Outcomes: outcomes}
	// Paging back ("before") is undone by clearing, like a filter.
	d.Filter.Active = d.Filter.Workload != "" || d.Filter.Target != "" || d.Filter.Outcome != "" || q.Get("before") != ""
	protocols := map[string]string{} // by target name
	if s.Policy != nil {
		if cfg := s.Policy(); cfg != nil {
			for _, x := range cfg.Workloads {
				d.Filter.Workloads = append(d.Filter.Workloads, x.Name)
			}
			for _, x := range cfg.Targets {
				d.Filter.Targets = append(d.Filter.Targets, x.Name)
				protocols[x.Name] = x.Protocol
			}
		}
	}
	d.Filter.Workloads = withChoice(d.Filter.Workloads, d.Filter.Workload)
	d.Filter.Targets = withChoice(d.Filter.Targets, d.Filter.Target)
	d.Filter.Outcomes = withChoice(d.Filter.Outcomes, d.Filter.Outcome)
	for _, req := range s.Broker.Pending() {
		p := pendingView{Request: req, Asked: whenOf(req.Created, now), Expires: whenOf(req.Expires, now)}
		if s.Store != nil {
			// Twice the rows shown, and one more: a command and its
			// result are two events.
			n := 2*maxEarlier + 1
			evs, err := s.Store.SessionEventWindow(r.Context(), req.SessionID, store.EventWindow{Last: true, N: n, Kinds: earlierKinds})
			if err != nil {
				p.EarlierErr = err.Error()
			} else {
				var rows []cmdRow
				rows, p.More = earlier(req, evs, len(evs) == n, now)
				p.Earlier = tableOf(rows, protocols[req.Target])
			}
		}
		d.Pending = append(d.Pending, p)
	}
	if s.Store != nil {
		f := store.Filter{Workload: d.Filter.Workload, Target: d.Filter.Target, Outcome: d.Filter.Outcome}
		if b := q.Get("before"); b != "" {
			t, err := time.Parse(time.RFC3339Nano, b)
			if err != nil {
				http.Error(w, "before must be an RFC 3339 time", http.StatusBadRequest)
				return
			}
			f.Until = t
		}
		recent, err := s.Store.LatestSessions(r.Context(), f, maxListed+1)
		if err != nil {
			d.StoreErr = err.Error()
		}
		for i, x := range recent {
			if i == maxListed {
				older := url.Values{}
				for k, v := range map[string]string{"workload": f.Workload, "target": f.Target, "outcome": f.Outcome} {
					if v != "" {
						older.Set(k, v)
					}
				}
				older.Set("before", recent[i-1].Started.UTC().Format(time.RFC3339Nano))
				d.Older = "/ui/?" + older.Encode()
				break
			}
			d.Sessions = append(d.Sessions, sessionRowOf(x, now))
		}
		d.Learned, _ = s.Store.LearnedColumns(r.Context())
	}
	pages.ExecuteTemplate(w, "index.html", d)
}

func (s *Server) webLogin(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	tok := r.PostFormValue("token")
	if s.Verifier == nil || tok == "" {
		http.Redirect(w, r, "/ui/?m=sign+in+with+an+OIDC+token", http.StatusSeeOther)
		return
	}
	c, err := s.Verifier.Verify(r.Context(), tok)
	if err != nil {
		http.Redirect(w, r, "/ui/?m="+url.QueryEscape("token refused: "+err.Error()), http.StatusSeeOther)
		return
	}
	who := policy.Identity{UID: -1, Subject: c.Subject, Groups: c.Groups}
	if !s.Broker.IsApprover(who) {
		http.Redirect(w, r, "/ui/?m="+url.QueryEscape(c.Subject+" is not an approver"), http.StatusSeeOther)
		return
	}
	exp := c.Expiry
	if max := time.Now().Add(8 * time.Hour); exp.IsZero() || exp.After(max) {
		exp = max
	}
	id := s.web.add(&webSession{who: who, name: c.Subject, csrf: randomToken(), expires: exp})
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/ui/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Expires: exp})
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

func (s *Server) webDecide(w http.ResponseWriter, r *http.Request) {
	ws := s.web.get(r)
	if ws == nil {
		http.Error(w, "sign in first", http.StatusUnauthorized)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if !sameOrigin(r) || subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(ws.csrf)) != 1 {
		http.Error(w, "cross-site request refused", http.StatusForbidden)
		return
	}
	id, action := r.PostFormValue("id"), r.PostFormValue("action")
	var dur time.Duration
	if r.PostFormValue("scope") == policy.ScopeWindow {
		dur = 15 * time.Minute
	}
	q, err := s.Broker.Decide(r.Context(), id, ws.who, action == "approve", r.PostFormValue("reason"), r.PostFormValue("scope"), dur)
	msg := id + ": " + q.State
	if err != nil {
		msg = id + ": " + err.Error()
	} else if q.State == policy.StatePending {
		msg = id + ": your approval is recorded; more are required"
	}
	http.Redirect(w, r, "/ui/?m="+url.QueryEscape(msg), http.StatusSeeOther)
}

// webStream tells the page to refresh when requests arrive or change (the
// page already shows the pending ones: no replay, or it would reload
// forever).
func (s *Server) webStream(w http.ResponseWriter, r *http.Request) {
	if s.web.get(r) == nil {
		http.Error(w, "sign in first", http.StatusUnauthorized)
		return
	}
	s.stream(w, r, false)
}

// maxSessionRows is how many events the session view reads at once.
const maxSessionRows = 500

type sessionData struct {
	ID      string
	Now     when
	Session *sessionRow
	Ended   when
	Rows    cmdTable
	// Next links to the session's following events ("": none).
	Next string
	// Paged says the page starts after the session's first events.
	Paged bool
}

func (s *Server) webSession(w http.ResponseWriter, r *http.Request) {
	secureHeaders(w)
	if s.web.get(r) == nil {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	if s.Store == nil {
		http.Error(w, "no store", http.StatusServiceUnavailable)
		return
	}
	id, now := r.PathValue("id"), time.Now()
	d := sessionData{ID: id, Now: whenOf(now, now)}
	x, err := s.Store.Session(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		http.Error(w, "no session "+id, http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	row := sessionRowOf(x, now)
	d.Session, d.Ended = &row, whenOf(x.Ended, now)
	var after int64
	if a := r.URL.Query().Get("after"); a != "" {
		if after, err = strconv.ParseInt(a, 10, 64); err != nil || after < 0 {
			http.Error(w, "after must be an event number", http.StatusBadRequest)
			return
		}
		d.Paged = true
	}
	evs, err := s.Store.SessionEventWindow(r.Context(), id, store.EventWindow{After: after, N: maxSessionRows})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if len(evs) == maxSessionRows {
		d.Next = "/ui/sessions/" + url.PathEscape(id) + "?after=" + strconv.FormatInt(evs[len(evs)-1].Seq, 10)
	}
	d.Rows = tableOf(joinCommands(evs, now), x.Protocol)
	for i := range d.Rows.Rows {
		if c := d.Rows.Rows[i].Cast; c != "" {
			d.Rows.Rows[i].CastURL = "/ui/sessions/" + url.PathEscape(id) + "/cast?" + url.Values{"name": {c}}.Encode()
		}
	}
	pages.ExecuteTemplate(w, "session.html", d)
}

// webCast sends a session's terminal recording (the cast events named by
// the name parameter, "cast 1") as one asciicast v2 file, read in windows
// of the session's events.
func (s *Server) webCast(w http.ResponseWriter, r *http.Request) {
	secureHeaders(w)
	if s.web.get(r) == nil {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	if s.Store == nil {
		http.Error(w, "no store", http.StatusServiceUnavailable)
		return
	}
	id, name := r.PathValue("id"), r.URL.Query().Get("name")
	var after int64
	started := false
	for {
		evs, err := s.Store.SessionEventWindow(r.Context(), id, store.EventWindow{After: after, N: maxSessionRows, Kinds: []string{string(event.KindCast)}})
		if err != nil {
			if !started {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
			return
		}
		for _, e := range evs {
			if e.Text != name {
				continue
			}
			if !started {
				w.Header().Set("Content-Type", "application/x-asciicast")
				w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", "loopgate-"+id+"-"+strings.ReplaceAll(name, " ", "-")+".cast"))
				started = true
			}
			if _, err := io.WriteString(w, e.Params); err != nil {
				return
			}
		}
		if len(evs) < maxSessionRows {
			break
		}
		after = evs[len(evs)-1].Seq
	}
	if !started {
		http.Error(w, fmt.Sprintf("session %s has no terminal recording %q", id, name), http.StatusNotFound)
	}
}
