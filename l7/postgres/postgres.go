package postgres

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/policy/sqlclass"
	"github.com/loopgate/loopgate/store/event"
)

// Handler serves PostgreSQL sessions. It is safe for concurrent use; one
// Handler serves every postgres target so cancel keys resolve across
// sessions.
type Handler struct {
	// Classifier sorts SQL into classes; nil uses a private one.
	Classifier *sqlclass.Classifier
	// Verifier checks OIDC tokens presented as passwords; nil refuses
	// workloads that need one.
	Verifier *policy.Verifier
	// MaskKey keys the hash masking mode; stable across restarts so the
	// same value always masks to the same token.
	MaskKey []byte
	// CA issues certificates for targets whose agents may use TLS
	// (tls.agent); nil answers every SSLRequest 'N'.
	CA *LocalCA
	// Learned holds the table columns value detectors fired on, masked
	// as columns of their rule from then on; nil: detectors do not learn.
	Learned *mask.Learned

	cancels    cancelKeys
	names      columnNames
	catalog    catalog
	loops      loopSet
	pool       serverPool
	roles      roleKeeper
	defaultCls sqlclass.Classifier
}

// Close stops the Handler's event loops. Call it once no session runs.
func (h *Handler) Close() error {
	h.loops.close()
	return nil
}

func (h *Handler) classifier() *sqlclass.Classifier {
	if h.Classifier != nil {
		return h.Classifier
	}
	return &h.defaultCls
}

// Serve runs one PostgreSQL session, in steps: the agent's login (and
// TLS, or a cancel request), its admission by policy, the server
// connection, the greeting, the relay, and what becomes of the server
// connection after.
func (h *Handler) Serve(ctx context.Context, conn net.Conn, s *l7.Session) (l7.Result, error) {
	a := &agentConn{client: &l7.CountingConn{Conn: conn}}
	stopLogin := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stopLogin()
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // login must not linger
	st, err := h.login(s, a)
	defer a.release()
	if err != nil {
		return a.result(), err
	}
	if st.cancel != nil {
		return a.result(), h.forwardCancel(ctx, s, st.cancel)
	}
	cfg := s.Policy()
	ad, err := h.admit(ctx, s, a, cfg, st)
	if err != nil {
		return a.result(), err
	}
	readOnly := readOnlyRule(cfg, s.Subject)
	server, err := h.openUpstream(ctx, s, a, st, readOnly)
	if err != nil {
		return a.result(), err
	}
	hj, role := server.hj, server.role
	up := &l7.CountingConn{Conn: hj.Conn}
	pooled := false // the pool took the connection
	defer func() {
		if !pooled {
			up.Close()
		}
	}()
	r := newRelay(ctx, h, s, a.be, a.ar, a.client, up)
	r.ro = readOnlyState{on: readOnly, rule: ad.RuleID, cfg: cfg}
	defer r.release()
	var expired atomic.Bool
	if role != nil {
		defer h.keepRole(ctx, s, r, role, &expired)()
	}
	stopUp := context.AfterFunc(ctx, r.stop)
	defer stopUp()

	// The agent sees its backend's real PID (pg_terminate_backend,
	// pg_stat_activity) and a secret of ours; see cancel.go.
	secret, forgetKey := h.cancels.issue(s.Subject.OrigDst.String(), hj.PID, hj.SecretKey, s.Subject.Workload)
	defer forgetKey()
	tx, err := greet(a.be, hj, secret)
	if err != nil {
		return a.result(), err
	}
	conn.SetDeadline(time.Time{})
	a.ar.max = maxMessageBody
	// From here the relay's stop (stopUp) ends the session; the login's
	// deadline must not cut off what the agent is told at the end.
	stopLogin()
	t := h.transportFor(r, st, a, up)
	s.Log.Info("postgres session ready", "database", st.params["database"], "user", st.params["user"], "backend_pid", hj.PID,
		"reused", server.reused, "event_loop", t.evented())
	r.session = r.maskerFor(ad)
	r.params = st.params
	r.txStatus = tx
	upConn, err := r.run(t)
	r.stopMu.Lock()
	up.Conn, hj.Conn = upConn, upConn
	r.stopMu.Unlock()
	switch {
	case server.key != "" && r.reusable() && stopUp():
		// The agent said goodbye between transactions: keep the login.
		// Its cancel key goes first (and cancels on their way arrive
		// first), so no late cancel reaches the next session.
		forgetKey()
		pooled = true
		hj.Conn.SetDeadline(time.Time{})
		if perr := h.pool.put(context.WithoutCancel(ctx), server.key, hj); perr != nil {
			s.Log.Warn("server connection not kept", "err", perr)
		}
	case r.terminated:
		up.Write([]byte{'X', 0, 0, 0, 4}) // pass the goodbye on
	}
	if ctx.Err() != nil {
		return a.result(), context.Cause(ctx)
	}
	if expired.Load() {
		return a.result(), fmt.Errorf("session role %s expired at %s", role.name, role.expires.Format(time.RFC3339))
	}
	return a.result(), err
}

// agentConn is the agent's side of a session during login: its
// connection (TLS once the agent asked for it), counted, the writer of
// loopgate's own messages to it, and the reader that frames its messages.
type agentConn struct {
	client *l7.CountingConn
	be     *pgproto3.Backend
	ar     *agentReader
	// before: the reader used before TLS, released with ar.
	before *agentReader
}

func (a *agentConn) result() l7.Result {
	return l7.Result{BytesUp: a.client.In.Load(), BytesDown: a.client.Out.Load()}
}

func (a *agentConn) release() {
	if a.ar != nil {
		a.ar.release()
	}
	if a.before != nil {
		a.before.release()
	}
}

// refuse tells the agent why its session ends (a FATAL), and returns cause.
func (a *agentConn) refuse(code, msg string, cause error) error {
	a.be.Send(fatal(code, msg))
	a.be.Flush()
	return cause
}

// login reads the agent's startup (after TLS, if it asked and its target
// allows it).
func (h *Handler) login(s *l7.Session, a *agentConn) (*startup, error) {
	// be only writes; the agent's bytes are framed by ar.
	a.be = pgproto3.NewBackend(nil, a.client)
	a.ar = newAgentReader(a.client)
	tlsFor := func() *tls.Config {
		t := s.Subject.Target
		if h.CA == nil || !t.TLS.Agent {
			return nil
		}
		c, err := h.CA.ServerConfig(t.Name, targetHosts(t.Addresses))
		if err != nil {
			s.Log.Error("no certificate for the agent; answering N", "err", err)
			return nil
		}
		return c
	}
	st, err := readStartup(a.ar, a.client, tlsFor)
	if err != nil {
		return nil, err
	}
	if st.tls != nil {
		// From here on the agent speaks through TLS; count what it says.
		plain := a.client
		a.client = &l7.CountingConn{Conn: st.tls}
		a.client.In.Store(plain.In.Load())
		a.client.Out.Store(plain.Out.Load())
		a.be = pgproto3.NewBackend(nil, a.client)
		a.before, a.ar = a.ar, st.reader
	}
	return st, nil
}

// forwardCancel passes a cancel request on to the backend it names, if
// the requesting workload owns it (cancel.go), and records it.
func (h *Handler) forwardCancel(ctx context.Context, s *l7.Session, key *pgproto3.CancelRequest) error {
	if err := s.Open(ctx); err != nil { // nothing goes to the target unrecorded
		return err
	}
	err := h.cancels.cancel(ctx, s.Subject.OrigDst.String(), s.Subject.Workload, key)
	s.Record(ctx, event.Event{Kind: event.KindCommand, Text: "cancel request", Error: errString(err)})
	return err
}

// admit decides whether the agent may open this session at all: its OIDC
// token where its workload needs one, a rule covering it, and startup
// parameters it may set. A refusal is recorded and told to the agent.
func (h *Handler) admit(ctx context.Context, s *l7.Session, a *agentConn, cfg *policy.Config, st *startup) (policy.Decision, error) {
	if w, ok := cfg.WorkloadByName(s.Subject.Workload); ok && w.Token != nil {
		tok, err := readPassword(a.be, a.ar)
		if err != nil {
			return policy.Decision{}, err
		}
		if err := cfg.Authenticate(ctx, h.Verifier, s.Subject, tok); err != nil {
			msg := "loopgate: OIDC token refused: " + err.Error()
			c := &l7.Command{Kind: event.KindDecision, Text: "connect", Decision: policy.Decision{Action: policy.Deny, Reason: msg}}
			s.Authorize(ctx, c)
			return c.Decision, a.refuse(codeInvalidPassword, msg, &l7.DeniedError{Decision: c.Decision})
		}
	}
	// Statements are decided one by one; the session holds its admission
	// (a reload that leaves no rule covering it cuts it off).
	connect := &l7.Command{Kind: event.KindDecision, Text: "connect", Decision: cfg.Admit(s.Subject), Hold: true}
	if err := s.Authorize(ctx, connect); err != nil {
		return connect.Decision, a.refuse(codeConnectionFailure, "loopgate: session could not be recorded", err)
	}
	ad := connect.Decision
	if ad.Action != policy.Allow {
		return ad, a.refuse(codeInvalidAuthorization, "loopgate: "+ad.Reason, &l7.DeniedError{Decision: ad})
	}
	// Startup parameters are settings (those in "options" too): decided as
	// the SET they amount to.
	params, err := expandOptions(st.params)
	if err == nil {
		st.params = params
		err = h.decideParams(cfg, s.Subject, st.params)
	}
	if err != nil {
		var sr *startupRefused
		errors.As(err, &sr)
		c := &l7.Command{Kind: event.KindDecision, Text: "startup parameters", Decision: policy.Decision{Action: policy.Deny, RuleID: ad.RuleID, Reason: sr.msg}}
		s.Authorize(ctx, c)
		return c.Decision, a.refuse(sr.code, sr.msg, err)
	}
	return ad, nil
}

// openUpstream connects to the server (or takes a pooled connection) as
// the target's credentials say, and refuses a server whose settings policy
// cannot follow.
func (h *Handler) openUpstream(ctx context.Context, s *l7.Session, a *agentConn, st *startup, readOnly bool) (*upstream, error) {
	server, err := h.connectUpstream(ctx, s.Subject.Target, s.Subject.OrigDst.String(), st.params, s.Subject.Workload, readOnly)
	if err != nil {
		var sr *startupRefused
		if errors.As(err, &sr) {
			return nil, a.refuse(sr.code, sr.msg, err)
		}
		return nil, a.refuse(codeConnectionFailure, "loopgate: cannot reach the database", err)
	}
	for k, v := range server.hj.ParameterStatuses {
		if sqlclass.UnsafeSetting(k, v) {
			// The server's own default (or the role's): policy would read
			// SQL differently from it.
			server.hj.Conn.Close()
			if server.role != nil {
				server.role.drop(context.WithoutCancel(ctx))
			}
			return nil, a.refuse(codeFeatureNotSupported, fmt.Sprintf("loopgate: the server runs with %s=%s, which policy cannot follow", k, v),
				fmt.Errorf("server setting %s=%s", k, v))
		}
	}
	return server, nil
}

// keepRole looks after a session's dynamic role: when it expires, so does
// the session (its backend is terminated, which ends the relay). The
// function it returns drops the role, at the session's end.
func (h *Handler) keepRole(ctx context.Context, s *l7.Session, r *relay, role *sessionRole, expired *atomic.Bool) func() {
	s.Log.Info("session role created", "role", role.name, "valid_until", role.expires)
	timer := time.AfterFunc(time.Until(role.expires), func() {
		expired.Store(true)
		s.Log.Warn("session role expired; ending the session", "role", role.name)
		if err := role.terminate(context.WithoutCancel(ctx)); err != nil {
			s.Log.Error("expired session not terminated; closing", "err", err)
			r.stop()
			return
		}
		// The server tells the agent (FATAL, terminating connection)
		// and closes; close ourselves only if it has not by then.
		time.AfterFunc(5*time.Second, r.stop)
	})
	return func() {
		timer.Stop()
		dctx := context.WithoutCancel(ctx)
		dyn := s.Subject.Target.Credentials.Dynamic
		if err := role.drop(dctx); err != nil {
			s.Log.Error("session role not dropped; will try again", "role", role.name, "err", err)
			h.roles.failed(role, dyn)
		}
		// Roles earlier sessions left, and a check of the admin.
		h.roles.tidy(dctx, s.Log, role.admin, dyn)
	}
}

// greet ends the agent's login as the server ended loopgate's: its
// settings, the backend key (the real PID, our secret) and the first
// ReadyForQuery, whose status it returns.
func greet(be *pgproto3.Backend, hj *pgconn.HijackedConn, secret []byte) (byte, error) {
	be.Send(&pgproto3.AuthenticationOk{})
	for k, v := range hj.ParameterStatuses {
		be.Send(&pgproto3.ParameterStatus{Name: k, Value: v})
	}
	be.Send(&pgproto3.BackendKeyData{ProcessID: hj.PID, SecretKey: secret})
	tx := hj.TxStatus
	if tx == 0 {
		tx = 'I'
	}
	be.Send(&pgproto3.ReadyForQuery{TxStatus: tx})
	return tx, be.Flush()
}

// transportFor picks how the session's bytes move: plaintext sessions run
// on an event loop; TLS needs the goroutines.
func (h *Handler) transportFor(r *relay, st *startup, a *agentConn, up *l7.CountingConn) transport {
	if st.tls == nil && loopable(a.client.Conn, up.Conn) {
		if l := h.loops.pick(); l != nil {
			// The agent may have sent messages right behind its startup.
			early, _ := a.ar.br.Peek(a.ar.br.Buffered())
			return newLoopTransport(r, l, early)
		}
	}
	return &goTransport{r: r}
}

// targetHosts are the host parts of a target's addresses.
func targetHosts(addrs []string) []string {
	var hosts []string
	for _, a := range addrs {
		if h, _, err := net.SplitHostPort(a); err == nil {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
