package api

// Learned columns: table columns a rule's value detector fired on, which
// the daemon masks as columns of the rule until an operator drops them.

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
)

// learnedView is the JSON form of a learned column.
type learnedView struct {
	Rule      string `json:"rule"`
	Mask      string `json:"mask"`
	Column    string `json:"column"`
	State     string `json:"state"`
	Session   string `json:"session"`
	FirstSeen string `json:"first_seen"`
	Changed   string `json:"changed"`
	ChangedBy string `json:"changed_by,omitempty"`
}

func learnedJSON(c event.LearnedColumn) learnedView {
	return learnedView{Rule: c.Rule, Mask: c.Mask, Column: c.Column, State: c.State, Session: c.SessionID,
		FirstSeen: c.FirstSeen.UTC().Format(time.RFC3339Nano), Changed: c.Changed.UTC().Format(time.RFC3339Nano), ChangedBy: c.ChangedBy}
}

func (s *Server) learnedRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/masks/learned", s.auth(false, s.listLearned))
	mux.HandleFunc("POST /v1/masks/learned/confirm", s.auth(true, s.setLearned(stateConfirmed)))
	mux.HandleFunc("POST /v1/masks/learned/drop", s.auth(true, s.setLearned(stateDropped)))
	mux.HandleFunc("POST /ui/learned", s.webLearned)
}

// The states an operator sets (policy/mask's StateConfirmed, StateDropped).
const (
	stateConfirmed = "confirmed"
	stateDropped   = "dropped"
)

func (s *Server) listLearned(w http.ResponseWriter, r *http.Request) {
	out := []learnedView{}
	if s.Store != nil {
		list, err := s.Store.LearnedColumns(r.Context())
		if err != nil {
			writeError(w, http.StatusInternalServerError, "store", err.Error())
			return
		}
		for _, c := range list {
			out = append(out, learnedJSON(c))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"columns": out})
}

// learnedRef names a learned column: the body of confirm and drop.
type learnedRef struct {
	Rule   string `json:"rule"`
	Mask   string `json:"mask"`
	Column string `json:"column"`
}

func (s *Server) setLearned(state string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var ref learnedRef
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if err := json.NewDecoder(r.Body).Decode(&ref); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "body: "+err.Error())
			return
		}
		who := r.Context().Value(identityKey{}).(policy.Identity)
		c, status, code, err := s.changeLearned(r, ref, state, who)
		if err != nil {
			writeError(w, status, code, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, learnedJSON(c))
	}
}

// changeLearned records an operator's confirm or drop and tells the
// daemon's sessions (LearnedChanged).
func (s *Server) changeLearned(r *http.Request, ref learnedRef, state string, who policy.Identity) (event.LearnedColumn, int, string, error) {
	if ref.Rule == "" || ref.Mask == "" || ref.Column == "" {
		return event.LearnedColumn{}, http.StatusBadRequest, "bad_request", errors.New("rule, mask and column are required")
	}
	if s.Store == nil {
		return event.LearnedColumn{}, http.StatusServiceUnavailable, "store", errors.New("no store")
	}
	c, err := s.Store.SetLearnedState(r.Context(), ref.Rule, ref.Mask, ref.Column, state, who.String())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return c, http.StatusNotFound, "not_found", err
	case err != nil:
		return c, http.StatusInternalServerError, "store", err
	}
	if s.LearnedChanged != nil {
		s.LearnedChanged(c)
	}
	return c, 0, "", nil
}

// webLearned is the page's confirm and drop.
func (s *Server) webLearned(w http.ResponseWriter, r *http.Request) {
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
	state := stateConfirmed
	if r.PostFormValue("action") == "drop" {
		state = stateDropped
	}
	ref := learnedRef{Rule: r.PostFormValue("rule"), Mask: r.PostFormValue("mask"), Column: r.PostFormValue("column")}
	msg := ref.Column + ": " + state
	if _, _, _, err := s.changeLearned(r, ref, state, ws.who); err != nil {
		msg = ref.Column + ": " + err.Error()
	}
	http.Redirect(w, r, "/ui/?m="+url.QueryEscape(msg), http.StatusSeeOther)
}
