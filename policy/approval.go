package policy

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Approval states.
const (
	StatePending   = "pending"
	StateApproved  = "approved"
	StateDenied    = "denied"
	StateExpired   = "expired"
	StateAbandoned = "abandoned" // its session ended (or the daemon died) first
)

// Scopes an approver may grant.
const (
	ScopeOnce    = "once"    // this exact command
	ScopeSession = "session" // this class for the rest of the session
	ScopeWindow  = "window"  // this workload × target × class for a while
)

// Broker errors; the API maps them to HTTP statuses.
var (
	ErrNoSuchRequest   = errors.New("no such approval request")
	ErrAlreadyDecided  = errors.New("approval request already decided")
	ErrSelfApproval    = errors.New("nobody approves their own request")
	ErrNotApprover     = errors.New("not an approver for this request")
	ErrAlreadyApproved = errors.New("this approver already approved")
	ErrTooManyPending  = errors.New("too many pending approval requests")
	// ErrStoppedWaiting is the cancel cause with which a waiter (an HTTP
	// request answered 403 after its wait) leaves its request pending: the
	// request outlives the waiter and its session until it is decided or
	// expires, and its decision answers the agent's retry of the same
	// command (see retry.go).
	ErrStoppedWaiting = errors.New("stopped waiting; the request stays pending for a retry")
)

// Request is a command waiting for a human.
type Request struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	SessionID string `json:"session"`
	Workload  string `json:"workload"`
	Target    string `json:"target"`
	PID       int    `json:"pid"`
	UID       uint32 `json:"uid"`
	Exe       string `json:"exe"`
	Subject   string `json:"token_subject,omitempty"`
	Command   string `json:"command"` // masked
	// ParamsHash binds the approval to the exact parameters.
	ParamsHash string    `json:"params_hash"`
	Class      string    `json:"class"`
	RuleID     string    `json:"rule"`
	Required   int       `json:"approvals_required"`
	Approvers  []string  `json:"approvers"`
	ApprovedBy []string  `json:"approved_by,omitempty"`
	DecidedBy  string    `json:"decided_by,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Scope      string    `json:"scope,omitempty"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
	Decided    time.Time `json:"decided,omitzero"`
}

// Identity is who is deciding.
type Identity struct {
	// UID is a local user's uid (from the API's unix socket), -1 if none.
	UID     int64
	Subject string // OIDC sub
	Groups  []string
}

func (id Identity) String() string {
	if id.UID >= 0 {
		return fmt.Sprintf("uid:%d", id.UID)
	}
	return "sub:" + id.Subject
}

// ApprovalRecorder persists requests and decisions (the store). Record is
// called with the request as it stands after every change.
type ApprovalRecorder interface {
	RecordApproval(ctx context.Context, r Request) error
}

// Broker holds pending approval requests and the grants they produced. It
// is safe for concurrent use. mu guards everything below it.
type Broker struct {
	Policy   func() *Config
	Recorder ApprovalRecorder
	// Timeout is how long a request waits before it is denied as expired.
	Timeout time.Duration
	// MaxPending bounds waiting requests; more are denied at once.
	MaxPending int

	mu       sync.Mutex
	pending  map[string]*pendingRequest
	session  map[string]bool      // sessionID + "\x00" + class
	windows  map[string]time.Time // workload \x00 target \x00 class -> until
	watchers map[chan Request]struct{}
	retries  map[string]retryGrant // retryKey -> decision of a request whose waiter left
}

type pendingRequest struct {
	req  Request
	done chan struct{}
	// detached: its waiter left with ErrStoppedWaiting; the broker itself
	// expires and records it, and its decision waits in retries.
	detached bool
}

// Outcome is what a waiting command learns.
type Outcome struct {
	Approved bool
	ID       string
	Reason   string
	// Granted is true when a standing grant (session or window) approved
	// the command without a new request.
	Granted bool
	// Pending is true when the waiter stopped waiting (ErrStoppedWaiting)
	// and request ID stays pending for the agent's retry.
	Pending bool
}

func (b *Broker) init() {
	if b.pending == nil {
		b.pending = map[string]*pendingRequest{}
		b.session = map[string]bool{}
		b.windows = map[string]time.Time{}
		b.watchers = map[chan Request]struct{}{}
		b.retries = map[string]retryGrant{}
	}
}

// HashParams is the hash an approval is bound to.
func HashParams(params string) string {
	h := sha256.Sum256([]byte(params))
	return hex.EncodeToString(h[:8])
}

// Ask files a request and blocks until it is decided, expires, or ctx ends
// (then it is abandoned). notify is called once the request is pending
// (so the agent can be told its id) and not at all when a standing grant
// applies.
func (b *Broker) Ask(ctx context.Context, r Request, notify func(Request)) (Outcome, error) {
	b.mu.Lock()
	b.init()
	if b.session[r.SessionID+"\x00"+r.Class] {
		b.mu.Unlock()
		return Outcome{Approved: true, Granted: true, Reason: "approved for the rest of the session"}, nil
	}
	wkey := r.Workload + "\x00" + r.Target + "\x00" + r.Class
	if until, ok := b.windows[wkey]; ok && time.Now().Before(until) {
		b.mu.Unlock()
		return Outcome{Approved: true, Granted: true, Reason: "approved by a window until " + until.Format(time.RFC3339)}, nil
	}
	if out, p, ok := b.retryLocked(r); ok {
		if p == nil {
			b.mu.Unlock()
			return out, nil
		}
		pr := p.req
		b.mu.Unlock()
		if notify != nil {
			notify(pr)
		}
		return b.wait(ctx, p, pr, time.Until(pr.Expires))
	}
	if b.MaxPending > 0 && len(b.pending) >= b.MaxPending {
		b.mu.Unlock()
		return Outcome{Reason: ErrTooManyPending.Error()}, ErrTooManyPending
	}
	timeout := b.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	r.ID = newApprovalID()
	r.State = StatePending
	r.Created = time.Now().UTC()
	r.Expires = r.Created.Add(timeout)
	if r.Required < 1 {
		r.Required = 1
	}
	p := &pendingRequest{req: r, done: make(chan struct{})}
	b.pending[r.ID] = p
	b.mu.Unlock()

	if err := b.record(ctx, r); err != nil {
		b.finish(r.ID, StateAbandoned, "", "request could not be recorded", "")
		return Outcome{ID: r.ID, Reason: "approval request could not be recorded"}, err
	}
	b.broadcast(r)
	if notify != nil {
		notify(r)
	}
	return b.wait(ctx, p, r, timeout)
}

// wait waits for p's decision (r is p's request as the caller read it), up
// to timeout, and records it.
func (b *Broker) wait(ctx context.Context, p *pendingRequest, r Request, timeout time.Duration) (Outcome, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		b.finish(r.ID, StateExpired, "", "approval timed out after "+b.timeout().String(), "")
	case <-ctx.Done():
		if errors.Is(context.Cause(ctx), ErrStoppedWaiting) && b.detach(p) {
			return Outcome{ID: r.ID, Pending: true, Reason: "approval " + r.ID + " is pending; retry the same request once it is approved"}, nil
		}
		reason := "the session ended while waiting"
		if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
			reason += ": " + c.Error()
		}
		if final, ok := b.finish(r.ID, StateAbandoned, "", reason, ""); ok {
			b.broadcast(final)
		}
	}
	b.mu.Lock()
	final := p.req
	b.mu.Unlock()
	if err := b.record(context.WithoutCancel(ctx), final); err != nil {
		// An approval whose decision cannot be recorded does not count.
		return Outcome{ID: final.ID, Reason: "approval decision could not be recorded"}, err
	}
	return Outcome{Approved: final.State == StateApproved, ID: final.ID, Reason: final.Reason}, nil
}

// finish sets a terminal state once. It returns the final request and
// whether it did.
func (b *Broker) finish(id, state, by, reason, scope string) (Request, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.pending[id]
	if !ok || p.req.State != StatePending {
		return Request{}, false
	}
	p.req.State, p.req.DecidedBy, p.req.Reason, p.req.Scope = state, by, reason, scope
	p.req.Decided = time.Now().UTC()
	delete(b.pending, id)
	close(p.done)
	if p.detached {
		b.settleLocked(p)
	}
	return p.req, true
}

// EndSession abandons the requests of session id still pending (their
// waiting Ask records them and returns not approved) and forgets the
// session's grants. The session's server calls it when the session ends,
// so a request whose session is gone cannot be approved.
func (b *Broker) EndSession(id string) {
	b.mu.Lock()
	b.init()
	var ids []string
	for rid, p := range b.pending {
		if p.req.SessionID == id && !p.detached {
			ids = append(ids, rid)
		}
	}
	for k := range b.session {
		if strings.HasPrefix(k, id+"\x00") {
			delete(b.session, k)
		}
	}
	b.mu.Unlock()
	for _, rid := range ids {
		if final, ok := b.finish(rid, StateAbandoned, "", "the session ended while waiting", ""); ok {
			b.broadcast(final)
		}
	}
}

// Decide records an approver's decision. Approving with scope session or
// window also grants later commands of the class (window: for dur).
func (b *Broker) Decide(ctx context.Context, id string, who Identity, approve bool, reason, scope string, dur time.Duration) (Request, error) {
	b.mu.Lock()
	b.init()
	p, ok := b.pending[id]
	if !ok {
		b.mu.Unlock()
		return Request{}, fmt.Errorf("%s: %w", id, ErrNoSuchRequest)
	}
	r := p.req
	b.mu.Unlock()
	name, err := b.approverName(r, who)
	if err != nil {
		return r, err
	}
	if !approve {
		final, ok := b.finish(id, StateDenied, name, cmp.Or(reason, "denied by "+name), "")
		if !ok {
			return r, ErrAlreadyDecided
		}
		b.broadcast(final)
		b.recordDetached(ctx, final)
		return final, nil
	}
	switch scope {
	case "", ScopeOnce, ScopeSession, ScopeWindow:
	default:
		return r, fmt.Errorf("unknown scope %q", scope)
	}
	b.mu.Lock()
	p, ok = b.pending[id]
	if !ok {
		b.mu.Unlock()
		return r, ErrAlreadyDecided
	}
	if slices.Contains(p.req.ApprovedBy, name) {
		b.mu.Unlock()
		return p.req, ErrAlreadyApproved
	}
	p.req.ApprovedBy = append(p.req.ApprovedBy, name)
	enough := len(p.req.ApprovedBy) >= p.req.Required
	cur := p.req
	b.mu.Unlock()
	if !enough {
		b.record(ctx, cur)
		b.broadcast(cur)
		return cur, nil
	}
	if scope == "" {
		scope = ScopeOnce
	}
	final, ok := b.finish(id, StateApproved, name, cmp.Or(reason, "approved by "+joinNames(cur.ApprovedBy)), scope)
	if !ok {
		return r, ErrAlreadyDecided
	}
	b.mu.Lock()
	switch scope {
	case ScopeSession:
		b.session[r.SessionID+"\x00"+r.Class] = true
	case ScopeWindow:
		if dur <= 0 {
			dur = 15 * time.Minute
		}
		b.windows[r.Workload+"\x00"+r.Target+"\x00"+r.Class] = time.Now().Add(dur)
	}
	b.mu.Unlock()
	b.broadcast(final)
	b.recordDetached(ctx, final)
	return final, nil
}

// approverName maps an identity to a configured approver allowed to decide r.
func (b *Broker) approverName(r Request, who Identity) (string, error) {
	if who.UID >= 0 && who.UID == int64(r.UID) || who.Subject != "" && who.Subject == r.Subject {
		return "", ErrSelfApproval
	}
	return b.approverAmong(r.Approvers, who)
}

// approverAmong returns the name of the configured approver who is, among
// names (all approvers when names is empty).
func (b *Broker) approverAmong(names []string, who Identity) (string, error) {
	for _, a := range b.Policy().Approvers {
		if len(names) > 0 && !slices.Contains(names, a.Name) {
			continue
		}
		if a.UID >= 0 && a.UID == who.UID ||
			a.OIDCSubject != "" && a.OIDCSubject == who.Subject ||
			a.OIDCGroup != "" && slices.Contains(who.Groups, a.OIDCGroup) {
			if a.OIDCGroup != "" && a.UID < 0 && a.OIDCSubject == "" {
				return a.Name + ":" + who.Subject, nil // a group holds several people
			}
			return a.Name, nil
		}
	}
	return "", ErrNotApprover
}

// IsApprover reports whether who is any configured approver.
func (b *Broker) IsApprover(who Identity) bool {
	_, err := b.approverAmong(nil, who)
	return err == nil
}

// Pending returns the waiting requests, oldest first.
func (b *Broker) Pending() []Request {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Request, 0, len(b.pending))
	for _, p := range b.pending {
		out = append(out, p.req)
	}
	slices.SortFunc(out, func(a, c Request) int { return a.Created.Compare(c.Created) })
	return out
}

// Get returns a pending request.
func (b *Broker) Get(id string) (Request, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.pending[id]
	if !ok {
		return Request{}, false
	}
	return p.req, true
}

// Watch returns a channel of requests as they are filed or change, and a
// function to stop watching. A slow watcher misses updates rather than
// slowing the data path.
func (b *Broker) Watch() (<-chan Request, func()) {
	ch := make(chan Request, 64)
	b.mu.Lock()
	b.init()
	b.watchers[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.watchers, ch)
		b.mu.Unlock()
	}
}

func (b *Broker) broadcast(r Request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.watchers {
		select {
		case ch <- r:
		default:
		}
	}
}

func (b *Broker) record(ctx context.Context, r Request) error {
	if b.Recorder == nil {
		return nil
	}
	return b.Recorder.RecordApproval(ctx, r)
}

func newApprovalID() string {
	var x [8]byte
	rand.Read(x[:])
	return "apr_" + hex.EncodeToString(x[:])
}

func joinNames(ns []string) string {
	out := ""
	for i, n := range ns {
		if i > 0 {
			out += ", "
		}
		out += n
	}
	return out
}
