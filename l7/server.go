package l7

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// Recorder records sessions. *store.DB satisfies it. OpenSession writes a
// session's start and the events given with it (its first decision) in one
// durable write; it must be durable when it returns: the session forwards
// nothing before.
type Recorder interface {
	OpenSession(ctx context.Context, s event.Session, first ...event.Event) error
	// CloseSessionAsync queues a session's end behind what the session
	// queued before it, to be written with the next commit. Nothing waits
	// for it: the session is over. A daemon killed first leaves the session
	// open, and the next start marks it interrupted.
	CloseSessionAsync(id string, e event.End)
	// AppendEvents writes events before it returns, at least into the
	// store's log, which outlives the daemon's process (kill -9); how
	// soon each also reaches the disk is the store's sync level.
	AppendEvents(ctx context.Context, events ...event.Event) error
	// AppendEventsNow is AppendEvents for a caller that must not wait (an
	// event loop serving other sessions): it writes events, as
	// AppendEvents would, only if it can without waiting (the store
	// writes allowed statements' records with one write to its log and
	// nothing holds it), and reports whether it did. false with a nil
	// error: nothing was written; call AppendEvents. An error: the write
	// failed, as AppendEvents would have.
	AppendEventsNow(events ...event.Event) (bool, error)
	// AppendEventsAsync queues events to be written soon, in order, and
	// no later than the next durable write (so before the session's end).
	// It waits only when too many are queued.
	AppendEventsAsync(events ...event.Event)
	// SessionProgressAsync queues an open session's byte counts so far,
	// written with the next commit; a session the daemon never closed is
	// marked interrupted with the last counts written.
	SessionProgressAsync(id string, bytesUp, bytesDown int64)
}

// Handler speaks one protocol for one session. Serve returns when the
// session is over; it must stop promptly when ctx is cancelled. The conn is
// the Server's: Serve need not close it.
type Handler interface {
	Serve(ctx context.Context, conn net.Conn, s *Session) (Result, error)
}

// Session is what a handler knows about the session it serves. Its methods
// are safe for concurrent use.
type Session struct {
	ID      string
	Subject *policy.Subject
	Log     *slog.Logger

	srv      *Server
	conn     net.Conn   // the client's connection (nil in handler tests): watched while a command waits for approval
	mu       sync.Mutex // guards admitted and held
	admitted []string   // classes the session holds open (rechecked on reload)
	held     bool       // the session was admitted: a reload rechecks it

	// start is the session's start record until it is written, with the
	// session's first durable write (one commit, not two). openMu guards it
	// and is held across that write.
	openMu  sync.Mutex
	start   *event.Session
	written atomic.Bool // start is nil: the hot path reads this, not openMu
}

// durable writes evs durably, after the session's start if that is not
// written yet.
func (s *Session) durable(ctx context.Context, evs ...event.Event) error {
	s.openMu.Lock()
	if st := s.start; st != nil {
		defer s.openMu.Unlock()
		if err := s.srv.Recorder.OpenSession(ctx, *st, evs...); err != nil {
			return fmt.Errorf("record session start: %w", err)
		}
		s.start = nil
		s.written.Store(true)
		return nil
	}
	s.openMu.Unlock()
	if len(evs) == 0 {
		return nil
	}
	return s.srv.Recorder.AppendEvents(ctx, evs...)
}

// Open writes the session's start now if nothing has yet. A handler calls
// it before it sends anything anywhere on the session's behalf without
// recording first (decisions and Record write the start themselves).
func (s *Session) Open(ctx context.Context) error { return s.durable(ctx) }

// ErrDenied is returned by handlers whose session policy refused; the
// session is recorded as denied.
var ErrDenied = errors.New("denied by policy")

// DeniedError carries the decision that refused a session.
type DeniedError struct{ Decision policy.Decision }

func (e *DeniedError) Error() string { return e.Decision.Reason }
func (e *DeniedError) Unwrap() error { return ErrDenied }

// RevokedError is the cancel cause of a session a config reload cut off.
type RevokedError struct{ Reason string }

func (e *RevokedError) Error() string { return "revoked: " + e.Reason }

// Policy returns the current config.
func (s *Session) Policy() *policy.Config { return s.srv.Policy() }

// ask asks the approvers about a command the policy holds for approval
// and blocks until they decide, it expires, ctx ends or the client closes
// its connection (the request is then abandoned, with ErrClientGone as the
// reason). notify is called with the request once it is pending (to tell
// the agent). The answer is recorded by the broker; an error means deny.
// Handlers call Authorize, which calls this.
func (s *Session) ask(ctx context.Context, d policy.Decision, command, params string, notify func(policy.Request)) (policy.Outcome, error) {
	if s.srv.Broker == nil {
		return policy.Outcome{Reason: "approvals are not available"}, errors.New("no approval broker")
	}
	if err := s.Open(ctx); err != nil { // the request refers to the session
		return policy.Outcome{Reason: "the session could not be recorded"}, err
	}
	sub := s.Subject
	r := policy.Request{
		SessionID: s.ID, Workload: sub.Workload, Target: sub.Target.Name, PID: sub.PID, UID: sub.UID, Exe: sub.Exe,
		Command: command, ParamsHash: policy.HashParams(params), Class: d.Class, RuleID: d.RuleID,
		Required: d.ApprovalsRequired, Approvers: d.Approvers,
	}
	if sub.Claims != nil {
		r.Subject = sub.Claims.Subject
	}
	if s.conn != nil {
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		stop := watchHangup(s.conn, func() { cancel(ErrClientGone) })
		defer stop()
	}
	return s.srv.Broker.Ask(ctx, r, notify)
}

// Record appends events to the session's record, durably, in order.
func (s *Session) Record(ctx context.Context, evs ...event.Event) error {
	for i := range evs {
		evs[i].SessionID = s.ID
		if evs[i].Time.IsZero() {
			evs[i].Time = time.Now()
		}
	}
	return s.durable(ctx, evs...)
}

// RecordNow is Record for a caller that must not wait (the event loop):
// it records evs, durably as Record does, only if that needs no wait (the
// session's start is written and the Recorder takes them at once), and
// reports whether it did. false with a nil error: nothing was recorded;
// call Record where waiting is allowed.
func (s *Session) RecordNow(evs ...event.Event) (bool, error) {
	if !s.written.Load() {
		return false, nil // the start's commit comes first
	}
	for i := range evs {
		evs[i].SessionID = s.ID
		if evs[i].Time.IsZero() {
			evs[i].Time = time.Now()
		}
	}
	return s.srv.Recorder.AppendEventsNow(evs...)
}

// RecordAsync queues events for the session's record: for what may trail
// the traffic (results, statements under record: async rules). They are
// written before the session's end.
func (s *Session) RecordAsync(evs ...event.Event) {
	for i := range evs {
		evs[i].SessionID = s.ID
		if evs[i].Time.IsZero() {
			evs[i].Time = time.Now()
		}
	}
	if !s.written.Load() {
		// Never ahead of the session's start in the chain.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.durable(ctx, evs...); err != nil {
			s.Log.Error("record not written", "err", err)
		}
		return
	}
	s.srv.Recorder.AppendEventsAsync(evs...)
}

// admit notes classes the session now holds open (Command.Hold): a
// reload re-decides them and cuts the session off if the new policy no
// longer allows them.
func (s *Session) admit(classes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = true
	s.admitted = append(s.admitted, classes...)
}

// admittedClasses returns the classes the session holds, and whether it
// was admitted at all (a session still logging in is not rechecked).
func (s *Session) admittedClasses() ([]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.admitted), s.held
}

// Result is what a handler reports about a finished session.
type Result struct {
	BytesUp   int64 // client to target
	BytesDown int64 // target to client
}

// Accepted is one accepted connection. Err set means the connection must be
// refused (and recorded as refused); Subject may then be partly filled.
type Accepted struct {
	Conn    net.Conn
	Subject *policy.Subject
	Err     error
}

// Accepter yields connections. Accept blocks; after Close it returns an
// error wrapping net.ErrClosed.
type Accepter interface {
	Accept() (Accepted, error)
	Close() error
}

// Server runs sessions from one or more Accepters.
type Server struct {
	Accepters []Accepter
	// Handlers maps a target protocol to its handler.
	Handlers map[string]Handler
	Recorder Recorder
	Log      *slog.Logger
	// Drain is how long Run waits at shutdown for open sessions to end by
	// themselves before cancelling them.
	Drain time.Duration
	// Policy returns the current config; it changes on reload.
	Policy func() *policy.Config
	// Broker holds commands that need a human; nil denies them.
	Broker *policy.Broker
	// MaxSessions, if positive, caps the sessions open at once below the
	// config's limits: max_sessions (the daemon sets it from its file
	// descriptor limit). Past either, sessions are refused (budget.go).
	MaxSessions int
	// Progress is how often the byte counts of live sessions are queued
	// for the record (from the kernel's counters of the client's TCP
	// socket), so a daemon killed with SIGKILL leaves them on its
	// interrupted sessions; 0 means 5 seconds, negative never.
	Progress time.Duration

	wg     sync.WaitGroup
	mu     sync.Mutex // guards live
	live   map[string]*liveSession
	budget budget
}

type liveSession struct {
	sess   *Session
	cancel context.CancelCauseFunc
	// up and down are the counts last queued (progress goroutine only).
	up, down int64
}

// Recheck re-decides what every live session holds under cfg (the new
// config, already current) and cancels, with a RevokedError, each session
// the new policy no longer allows. It returns how many it cut off.
func (s *Server) Recheck(ctx context.Context, cfg *policy.Config) int {
	s.mu.Lock()
	live := make([]*liveSession, 0, len(s.live))
	for _, l := range s.live {
		live = append(live, l)
	}
	s.mu.Unlock()
	n := 0
	for _, l := range live {
		sub := l.sess.Subject
		classes, held := l.sess.admittedClasses()
		if !held {
			continue // still logging in: its admission decides under the new config
		}
		var reason string
		if nt, ok := cfg.TargetByName(sub.Target.Name); !ok || nt.Protocol != sub.Target.Protocol {
			reason = fmt.Sprintf("target %q removed", sub.Target.Name)
		} else if d := cfg.Admit(sub); d.Action != policy.Allow {
			// Every session needs a rule that covers it, whatever it holds.
			reason = d.Reason
		} else if len(classes) > 0 {
			if d := cfg.Decide(sub, classes); d.Action != policy.Allow {
				reason = d.Reason
			}
		}
		if reason == "" {
			continue
		}
		n++
		l.sess.Log.Warn("session revoked by reload", "reason", reason)
		s.Recorder.AppendEvents(ctx, event.Event{SessionID: l.sess.ID, Time: time.Now(), Kind: event.KindRevoked, Text: reason})
		l.cancel(&RevokedError{Reason: reason})
	}
	return n
}

// ErrShutdown is the cancel cause of sessions cut by daemon shutdown.
var ErrShutdown = errors.New("daemon shutting down")

// Run accepts until ctx is done, then stops accepting, waits up to Drain for
// sessions, cancels the rest with ErrShutdown and waits for them.
func (s *Server) Run(ctx context.Context) error {
	sessCtx, cancelSessions := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelSessions(ErrShutdown)

	var accepting sync.WaitGroup
	errc := make(chan error, len(s.Accepters))
	s.reserveSpare()
	defer s.releaseSpare()
	for _, a := range s.Accepters {
		accepting.Go(func() {
			for {
				acc, err := a.Accept()
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						continue
					}
					if s.shed(a, err) {
						continue
					}
					s.Log.Error("accept failed", "err", err)
					errc <- err
					return
				}
				s.start(sessCtx, acc)
			}
		})
	}
	stopProgress := make(chan struct{})
	var progress sync.WaitGroup
	if s.Progress >= 0 {
		progress.Go(func() { s.progress(stopProgress) })
	}
	defer func() { close(stopProgress); progress.Wait() }()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	for _, a := range s.Accepters {
		a.Close()
	}
	accepting.Wait()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.Drain):
		s.Log.Info("drain timeout; cancelling open sessions")
		cancelSessions(ErrShutdown)
		<-done
	}
	return runErr
}

func isTemporary(err error) bool {
	// EMFILE/ENFILE and friends: shed and keep serving.
	var se interface{ Temporary() bool }
	return errors.As(err, &se) && se.Temporary()
}

// serve runs one session from start record to end record.
func (s *Server) serve(ctx context.Context, acc Accepted) {
	conn := acc.Conn
	defer conn.Close()
	id := NewID()
	rec := sessionRecord(id, acc)
	log := s.Log.With("session", id, "workload", rec.Workload, "target", rec.Target, "pid", rec.PID)
	end := event.End{Outcome: event.OutcomeClosed}

	// The start is written with the session's first durable record (its
	// first decision, before anything is forwarded): one commit, not two.
	// A session that ends before any record (refused, or the client left
	// during its handshake) gets its start written at the end.
	sess := &Session{ID: id, Subject: acc.Subject, Log: log, srv: s, conn: conn, start: &rec}
	defer func() {
		if p := recover(); p != nil {
			log.Error("session panicked", "panic", p, "stack", string(debug.Stack()))
			end.Outcome = event.OutcomeInternalError
			end.Error = fmt.Sprint("internal error: ", p)
		}
		if s.Broker != nil {
			// Nothing of a session that ended can be approved.
			s.Broker.EndSession(id)
		}
		end.Ended = time.Now()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := sess.Open(cctx); err != nil {
			log.Error("session not recorded", "err", err)
		} else {
			s.Recorder.CloseSessionAsync(id, end)
		}
		log.Info("session closed", "outcome", end.Outcome, "bytes_up", end.BytesUp, "bytes_down", end.BytesDown, "err", end.Error)
	}()

	if acc.Err != nil {
		log.Warn("session refused", "err", acc.Err)
		end.Outcome, end.Error = event.OutcomeRefused, acc.Err.Error()
		return
	}
	h, ok := s.Handlers[acc.Subject.Target.Protocol]
	if !ok {
		end.Outcome, end.Error = event.OutcomeRefused, fmt.Sprintf("no handler for protocol %q", acc.Subject.Target.Protocol)
		log.Error("session refused", "err", end.Error)
		return
	}
	log.Info("session open", "orig_dst", rec.OrigDst, "exe", rec.Exe, "uid", rec.UID)
	sessCtx, cancelSess := context.WithCancelCause(ctx)
	defer cancelSess(nil)
	s.track(id, &liveSession{sess: sess, cancel: cancelSess})
	defer s.untrack(id)
	res, err := h.Serve(sessCtx, conn, sess)
	end.BytesUp, end.BytesDown = res.BytesUp, res.BytesDown
	var revoked *RevokedError
	cause := context.Cause(sessCtx)
	switch {
	case errors.As(cause, &revoked):
		end.Outcome, end.Error = event.OutcomeRevoked, revoked.Error()
	case cause != nil && ctx.Err() != nil:
		end.Outcome, end.Error = event.OutcomeShutdown, context.Cause(ctx).Error()
	case errors.Is(err, ErrDenied):
		end.Outcome, end.Error = event.OutcomeDenied, err.Error()
	case err != nil:
		end.Outcome, end.Error = event.OutcomeError, err.Error()
	}
}

// NewSession returns a session of this server for sub, as serve makes one
// once its start is written; for handler tests.
func (s *Server) NewSession(id string, sub *policy.Subject) *Session {
	sess := &Session{ID: id, Subject: sub, Log: s.Log.With("session", id), srv: s}
	sess.written.Store(true)
	return sess
}

func (s *Server) track(id string, l *liveSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live == nil {
		s.live = map[string]*liveSession{}
	}
	s.live[id] = l
}

func (s *Server) untrack(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.live, id)
}

func sessionRecord(id string, acc Accepted) event.Session {
	rec := event.Session{ID: id, Started: time.Now()}
	if acc.Conn != nil {
		rec.Client = acc.Conn.RemoteAddr().String()
	}
	sub := acc.Subject
	if sub == nil {
		return rec
	}
	rec.Workload = sub.Workload
	if sub.Target != nil {
		rec.Target = sub.Target.Name
		rec.Protocol = sub.Target.Protocol
	}
	if sub.OrigDst.IsValid() {
		rec.OrigDst = sub.OrigDst.String()
	}
	rec.PID, rec.TID = sub.PID, sub.TID
	rec.UID, rec.GID = sub.UID, sub.GID
	rec.CgroupID, rec.CgroupPath = sub.CgroupID, sub.CgroupPath
	rec.Exe, rec.Comm = sub.Exe, sub.Comm
	rec.ProcessStart = sub.ProcessStart
	return rec
}

// NewID returns a new session id: 48 bits of milliseconds then 48 random
// bits, hex, so ids sort by creation time.
func NewID() string {
	var b [12]byte
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(time.Now().UnixMilli()))
	copy(b[:6], ms[2:])
	rand.Read(b[6:])
	return hex.EncodeToString(b[:])
}
