package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
)

// Server serves the API. Its fields are set before Run and not changed.
type Server struct {
	Broker *policy.Broker
	Store  *store.DB
	Policy func() *policy.Config
	// Verifier checks bearer tokens on the TCP listener (API audience).
	Verifier *policy.Verifier
	Log      *slog.Logger
	// LearnedChanged is called after an operator confirms or drops a
	// learned column (learned.go), so that sessions follow; nil: nobody.
	LearnedChanged func(event.LearnedColumn)

	registry *prometheus.Registry
	initOnce sync.Once
	web      webSessions

	// Set by Listen, used by Serve.
	socket    string
	servers   []*http.Server
	listeners []net.Listener
}

type ctxKey int

const peerKey ctxKey = 1

// peer is what the transport says about the caller.
type peer struct {
	uid int64 // -1 on TCP
}

// Run serves on the unix socket (and TCP address if set) until ctx ends.
func (s *Server) Run(ctx context.Context, socket, tcp string) error {
	if err := s.Listen(socket, tcp); err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Listen creates the unix socket (mode 0660, api.group's) and the TCP
// listener if tcp is set, so that callers can say the API is up before
// Serve runs.
func (s *Server) Listen(socket, tcp string) error {
	s.initOnce.Do(s.init)
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return fmt.Errorf("api socket dir: %w", err)
	}
	gid := -1
	if g := s.socketGroup(); g != "" {
		var err error
		if gid, err = lookupGroup(g); err != nil {
			return fmt.Errorf("api socket group: %w", err)
		}
	}
	os.Remove(socket)
	uln, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("api listen %s: %w", socket, err)
	}
	// Root and the group (api.group; unset: the daemon's, root) may
	// connect; the uid decides what they may do.
	if gid < 0 && s.Log != nil && s.Policy != nil && slices.ContainsFunc(s.Policy().Approvers, func(a policy.Approver) bool { return a.UID > 0 }) {
		s.Log.Warn("approvers named by uid cannot reach the API socket: set api.group to a group they are in", "socket", socket)
	}
	if err := os.Chown(socket, -1, gid); err != nil {
		uln.Close()
		return fmt.Errorf("api socket group: %w", err)
	}
	if err := os.Chmod(socket, 0o660); err != nil {
		uln.Close()
		return fmt.Errorf("api socket mode: %w", err)
	}
	s.socket = socket
	s.servers = []*http.Server{s.httpServer(true)}
	s.listeners = []net.Listener{uln}
	if tcp != "" {
		tln, err := net.Listen("tcp", tcp)
		if err != nil {
			uln.Close()
			return fmt.Errorf("api listen %s: %w", tcp, err)
		}
		s.servers = append(s.servers, s.httpServer(false))
		s.listeners = append(s.listeners, tln)
	}
	return nil
}

// Serve serves what Listen opened until ctx ends, then shuts down and
// removes the socket.
func (s *Server) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := range s.servers {
		wg.Go(func() { s.servers[i].Serve(s.listeners[i]) })
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range s.servers {
		srv.Shutdown(sctx)
	}
	wg.Wait()
	os.Remove(s.socket)
	return nil
}

// socketGroup is the config's api.group.
func (s *Server) socketGroup() string {
	if s.Policy == nil {
		return ""
	}
	if cfg := s.Policy(); cfg != nil {
		return cfg.API.Group
	}
	return ""
}

// lookupGroup returns the gid of a group name or number.
func lookupGroup(g string) (int, error) {
	if n, err := strconv.Atoi(g); err == nil && n >= 0 {
		return n, nil
	}
	gr, err := user.LookupGroup(g)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(gr.Gid)
}

func (s *Server) httpServer(unixSocket bool) *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			p := peer{uid: -1}
			if uc, ok := c.(*net.UnixConn); ok && unixSocket {
				if raw, err := uc.SyscallConn(); err == nil {
					raw.Control(func(fd uintptr) {
						if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
							p.uid = int64(cred.Uid)
						}
					})
				}
			}
			return context.WithValue(ctx, peerKey, p)
		},
	}
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	s.initOnce.Do(s.init)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/approvals", s.auth(false, s.listApprovals))
	mux.HandleFunc("GET /v1/approvals/stream", s.auth(false, s.streamApprovals))
	mux.HandleFunc("GET /v1/approvals/{id}", s.auth(false, s.getApproval))
	mux.HandleFunc("POST /v1/approvals/{id}/approve", s.auth(true, s.decide(true)))
	mux.HandleFunc("POST /v1/approvals/{id}/deny", s.auth(true, s.decide(false)))
	mux.HandleFunc("GET /v1/sessions", s.auth(false, s.listSessions))
	mux.HandleFunc("GET /v1/sessions/{id}", s.auth(false, s.getSession))
	mux.HandleFunc("GET /v1/sessions/{id}/events", s.auth(false, s.sessionEvents))
	s.webRoutes(mux)
	s.learnedRoutes(mux)
	return mux
}

// apiError is the JSON error shape: {"error": {"code": ..., "message": ...}}.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]apiError{"error": {Code: code, Message: msg}})
}

type identityKey struct{}

// auth identifies the caller. Reading needs an approver (or root on the
// socket); deciding needs an approver.
func (s *Server) auth(decide bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := r.Context().Value(peerKey).(peer)
		if !ok {
			p = peer{uid: -1} // no transport facts: a stranger, never root
		}
		who := policy.Identity{UID: p.uid}
		if p.uid < 0 {
			tok, ok := bearer(r)
			if !ok {
				writeError(w, http.StatusUnauthorized, "unauthenticated", "present an OIDC bearer token or use the unix socket")
				return
			}
			if s.Verifier == nil {
				writeError(w, http.StatusUnauthorized, "unauthenticated", "no OIDC issuers are configured")
				return
			}
			c, err := s.Verifier.Verify(r.Context(), tok)
			if err != nil {
				writeError(w, http.StatusUnauthorized, "invalid_token", err.Error())
				return
			}
			who = policy.Identity{UID: -1, Subject: c.Subject, Groups: c.Groups}
		}
		approver := s.Broker.IsApprover(who)
		if !approver && !(p.uid == 0 && !decide) {
			writeError(w, http.StatusForbidden, "not_an_approver", who.String()+" is not a configured approver")
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, who)))
	}
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "Bearer "
	if len(h) > len(p) && h[:len(p)] == p {
		return h[len(p):], true
	}
	return "", false
}

func (s *Server) listApprovals(w http.ResponseWriter, r *http.Request) {
	state := r.URL.Query().Get("state")
	switch state {
	case "all":
		state = "" // pending from the broker, the rest from the store
	case "", policy.StatePending, policy.StateApproved, policy.StateDenied, policy.StateExpired, policy.StateAbandoned:
	default:
		writeError(w, http.StatusBadRequest, "bad_request", "state must be pending, approved, denied, expired, abandoned or all")
		return
	}
	var out []any
	if state == "" || state == policy.StatePending {
		for _, q := range s.Broker.Pending() {
			out = append(out, q)
		}
	}
	if state != policy.StatePending && s.Store != nil {
		hist, err := s.Store.Approvals(r.Context(), state, 500)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "store", err.Error())
			return
		}
		for _, a := range hist {
			if a.State == policy.StatePending {
				continue // live ones come from the broker
			}
			out = append(out, recorded(a))
		}
	}
	if out == nil {
		out = []any{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"approvals": out})
}

func (s *Server) getApproval(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if q, ok := s.Broker.Get(id); ok {
		writeJSON(w, http.StatusOK, q)
		return
	}
	if a, ok := s.historical(r, id); ok {
		writeJSON(w, http.StatusOK, a)
		return
	}
	writeError(w, http.StatusNotFound, "not_found", "no approval "+id)
}

// decision is the body of approve and deny.
type decision struct {
	Reason string `json:"reason"`
	Scope  string `json:"scope"`  // once, session, window
	Window string `json:"window"` // duration, for scope window
}

func (s *Server) decide(approve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var d decision
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if r.ContentLength != 0 {
			if err := json.NewDecoder(r.Body).Decode(&d); err != nil {
				writeError(w, http.StatusBadRequest, "bad_request", "body: "+err.Error())
				return
			}
		}
		var dur time.Duration
		if d.Window != "" {
			var err error
			if dur, err = time.ParseDuration(d.Window); err != nil || dur <= 0 || dur > 24*time.Hour {
				writeError(w, http.StatusBadRequest, "bad_request", "window must be a duration up to 24h")
				return
			}
		}
		who := r.Context().Value(identityKey{}).(policy.Identity)
		q, err := s.Broker.Decide(r.Context(), r.PathValue("id"), who, approve, d.Reason, d.Scope, dur)
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, q)
		case errors.Is(err, policy.ErrNoSuchRequest):
			// Decided, expired or abandoned requests are no longer pending.
			if a, ok := s.notPending(r, r.PathValue("id")); ok {
				writeError(w, http.StatusConflict, a.code, a.msg)
				return
			}
			writeError(w, http.StatusNotFound, "not_found", err.Error())
		case errors.Is(err, policy.ErrAlreadyDecided), errors.Is(err, policy.ErrAlreadyApproved):
			writeError(w, http.StatusConflict, "already_decided", err.Error())
		case errors.Is(err, policy.ErrSelfApproval):
			writeError(w, http.StatusForbidden, "self_approval", err.Error())
		case errors.Is(err, policy.ErrNotApprover):
			writeError(w, http.StatusForbidden, "not_an_approver", err.Error())
		default:
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		}
	}
}

// notPending says why a recorded request cannot be decided: the code is
// already_decided, expired or abandoned.
func (s *Server) notPending(r *http.Request, id string) (struct{ code, msg string }, bool) {
	var out struct{ code, msg string }
	if s.Store == nil {
		return out, false
	}
	a, err := s.Store.Approval(r.Context(), id)
	if err != nil {
		return out, false
	}
	switch a.State {
	case policy.StateAbandoned, policy.StateExpired:
		out.code = a.State
		out.msg = fmt.Sprintf("approval %s is %s, nothing waits for it any more: %s", id, a.State, a.Reason)
	case policy.StateApproved, policy.StateDenied:
		out.code = "already_decided"
		out.msg = fmt.Sprintf("approval %s was already %s by %s", id, a.State, a.DecidedBy)
	default: // its final state is being recorded
		out.code = "already_decided"
		out.msg = "the request is no longer pending"
	}
	return out, true
}

// historical returns a recorded (no longer pending) approval.
func (s *Server) historical(r *http.Request, id string) (any, bool) {
	if s.Store == nil {
		return nil, false
	}
	a, err := s.Store.Approval(r.Context(), id)
	if err != nil {
		return nil, false
	}
	return recorded(a), true
}

// streamApprovals sends the pending requests, then new and changed ones,
// as server-sent events.
func (s *Server) streamApprovals(w http.ResponseWriter, r *http.Request) {
	s.stream(w, r, true)
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request, replay bool) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "no_stream", "streaming unsupported")
		return
	}
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{})
	ch, stop := s.Broker.Watch()
	defer stop()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if replay {
		for _, q := range s.Broker.Pending() {
			writeEvent(w, q)
		}
	}
	fl.Flush()
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case q := <-ch:
			writeEvent(w, q)
			fl.Flush()
		case <-tick.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
		}
	}
}

func writeEvent(w http.ResponseWriter, q policy.Request) {
	b, _ := json.Marshal(q)
	fmt.Fprintf(w, "event: approval\ndata: %s\n\n", b)
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	f := store.Filter{Workload: r.URL.Query().Get("workload"), Target: r.URL.Query().Get("target"),
		Outcome: r.URL.Query().Get("outcome"), Limit: 500}
	if n, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && n > 0 && n < 10000 {
		f.Limit = n
	}
	out := []store.View{}
	err := s.Store.Sessions(r.Context(), f, func(x *store.Session) error { out = append(out, x.View()); return nil })
	if err != nil {
		writeError(w, http.StatusInternalServerError, "store", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": out})
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	x, err := s.Store.Session(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, "store", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, x.View())
}

func (s *Server) sessionEvents(w http.ResponseWriter, r *http.Request) {
	evs, err := s.Store.SessionEvents(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusInternalServerError, "store", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": evs})
}
