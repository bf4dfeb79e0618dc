package postgres

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

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

// countingConn counts bytes read and written.
type countingConn struct {
	net.Conn
	read, written atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

// Serve runs one PostgreSQL session.
func (h *Handler) Serve(ctx context.Context, conn net.Conn, s *l7.Session) (l7.Result, error) {
	client := &countingConn{Conn: conn}
	result := func() l7.Result { return l7.Result{BytesUp: client.read.Load(), BytesDown: client.written.Load()} }
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	// be only writes; the agent's bytes are framed by ar.
	be := pgproto3.NewBackend(nil, client)
	ar := newAgentReader(client)
	defer ar.release()
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // login must not linger
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
	st, err := readStartup(ar, client, tlsFor)
	if err != nil {
		return result(), err
	}
	if st.tls != nil {
		// From here on the agent speaks through TLS; count what it says.
		before := result()
		client = &countingConn{Conn: st.tls}
		client.read.Store(before.BytesUp)
		client.written.Store(before.BytesDown)
		be = pgproto3.NewBackend(nil, client)
		ar = st.reader
		defer ar.release()
	}
	if st.cancel != nil {
		if err := s.Open(ctx); err != nil { // nothing goes to the target unrecorded
			return result(), err
		}
		err := h.cancels.cancel(ctx, s.Subject.OrigDst.String(), s.Subject.Workload, st.cancel)
		s.Record(ctx, event.Event{Kind: event.KindCommand, Text: "cancel request", Error: errString(err)})
		return result(), err
	}
	refuse := func(code, msg string, cause error) (l7.Result, error) {
		be.Send(fatal(code, msg))
		be.Flush()
		return result(), cause
	}

	// Who may open a session at all, and with what token.
	cfg := s.Policy()
	if w, ok := cfg.WorkloadByName(s.Subject.Workload); ok && w.Token != nil {
		tok, err := readPassword(be, ar)
		if err != nil {
			return result(), err
		}
		if err := cfg.Authenticate(ctx, h.Verifier, s.Subject, tok); err != nil {
			msg := "loopgate: OIDC token refused: " + err.Error()
			c := &l7.Command{Kind: event.KindDecision, Text: "connect", Decision: policy.Decision{Action: policy.Deny, Reason: msg}}
			s.Authorize(ctx, c)
			return refuse(codeInvalidPassword, msg, &l7.DeniedError{Decision: c.Decision})
		}
	}
	// Statements are decided one by one; the session holds its admission
	// (a reload that leaves no rule covering it cuts it off).
	connect := &l7.Command{Kind: event.KindDecision, Text: "connect", Decision: cfg.Admit(s.Subject), Hold: true}
	if err := s.Authorize(ctx, connect); err != nil {
		return refuse(codeConnectionFailure, "loopgate: session could not be recorded", err)
	}
	ad := connect.Decision
	if ad.Action != policy.Allow {
		return refuse(codeInvalidAuthorization, "loopgate: "+ad.Reason, &l7.DeniedError{Decision: ad})
	}
	// Startup parameters are settings: decided as the SET they amount to.
	if err := h.decideParams(cfg, s.Subject, st.params); err != nil {
		var sr *startupRefused
		errors.As(err, &sr)
		s.Record(ctx, event.Event{Kind: event.KindDecision, Text: "startup parameters", Decision: string(policy.Deny), Error: sr.msg})
		return refuse(sr.code, sr.msg, err)
	}

	readOnly := readOnlyRule(cfg, s.Subject)
	server, err := h.connectUpstream(ctx, s.Subject.Target, s.Subject.OrigDst.String(), st.params, s.Subject.Workload, readOnly)
	if err != nil {
		var sr *startupRefused
		if errors.As(err, &sr) {
			return refuse(sr.code, sr.msg, err)
		}
		return refuse(codeConnectionFailure, "loopgate: cannot reach the database", err)
	}
	hj, role := server.hj, server.role
	up := &countingConn{Conn: hj.Conn}
	pooled := false // the pool took the connection
	defer func() {
		if !pooled {
			up.Close()
		}
	}()
	for k, v := range hj.ParameterStatuses {
		if sqlclass.UnsafeSetting(k, v) {
			// The server's own default (or the role's): policy would read
			// SQL differently from it.
			if role != nil {
				up.Close()
				role.drop(context.WithoutCancel(ctx))
			}
			return refuse(codeFeatureNotSupported, fmt.Sprintf("loopgate: the server runs with %s=%s, which policy cannot follow", k, v),
				fmt.Errorf("server setting %s=%s", k, v))
		}
	}
	r := newRelay(ctx, h, s, be, ar, client, up)
	r.ro = readOnlyState{on: readOnly, rule: ad.RuleID, cfg: cfg}
	defer r.release()
	var expired atomic.Bool
	if role != nil {
		s.Log.Info("session role created", "role", role.name, "valid_until", role.expires)
		defer func() {
			dctx := context.WithoutCancel(ctx)
			dyn := s.Subject.Target.Credentials.Dynamic
			if err := role.drop(dctx); err != nil {
				s.Log.Error("session role not dropped; will try again", "role", role.name, "err", err)
				h.roles.failed(role, dyn)
			}
			// Roles earlier sessions left, and a check of the admin.
			h.roles.tidy(dctx, s.Log, role.admin, dyn)
		}()
		// When the role expires, so does the session: its backend is
		// terminated, which ends the relay.
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
		defer timer.Stop()
	}
	stopUp := context.AfterFunc(ctx, r.stop)
	defer stopUp()

	// The agent sees its backend's real PID (pg_terminate_backend,
	// pg_stat_activity) and a secret of ours; see cancel.go.
	secret, forgetKey := h.cancels.issue(s.Subject.OrigDst.String(), hj.PID, hj.SecretKey, s.Subject.Workload)
	defer forgetKey()
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
	if err := be.Flush(); err != nil {
		return result(), err
	}
	conn.SetDeadline(time.Time{})
	ar.max = maxMessageBody
	// Plaintext sessions run on an event loop; TLS needs the goroutines.
	var loop *evLoop
	if st.tls == nil && loopable(client.Conn, up.Conn) {
		loop = h.loops.pick()
	}
	s.Log.Info("postgres session ready", "database", st.params["database"], "user", st.params["user"], "backend_pid", hj.PID,
		"reused", server.reused, "event_loop", loop != nil)

	r.session = r.maskerFor(ad)
	r.params = st.params
	r.txStatus = tx
	if loop != nil {
		// The agent may have sent messages right behind its startup.
		early, _ := ar.br.Peek(ar.br.Buffered())
		err = r.runLoop(loop, early)
		if r.loopUp == nil {
			r.loopUp = closedConn{}
		}
		r.stopMu.Lock()
		up.Conn, hj.Conn = r.loopUp, r.loopUp
		r.stopMu.Unlock()
	} else {
		err = r.run()
	}
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
		return result(), context.Cause(ctx)
	}
	if expired.Load() {
		return result(), fmt.Errorf("session role %s expired at %s", role.name, role.expires.Format(time.RFC3339))
	}
	return result(), err
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
