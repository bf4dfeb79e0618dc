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
	"sync"
	"time"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// Recorder records sessions. *store.DB satisfies it. OpenSession must be
// durable when it returns: the session forwards nothing before.
type Recorder interface {
	OpenSession(ctx context.Context, s event.Session) error
	CloseSession(ctx context.Context, id string, e event.End) error
}

// Handler speaks one protocol for one session. Serve returns when the
// session is over; it must stop promptly when ctx is cancelled. The conn is
// the Server's: Serve need not close it.
type Handler interface {
	Serve(ctx context.Context, conn net.Conn, s *Session) (Result, error)
}

// Session is what a handler knows about the session it serves.
type Session struct {
	ID      string
	Subject *policy.Subject
	Log     *slog.Logger
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

	wg sync.WaitGroup
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
					s.Log.Error("accept failed", "err", err)
					if isTemporary(err) {
						time.Sleep(50 * time.Millisecond)
						continue
					}
					errc <- err
					return
				}
				s.wg.Go(func() { s.serve(sessCtx, acc) })
			}
		})
	}
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
	// EMFILE/ENFILE and friends: back off and keep serving.
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

	// Record the start first. A refused connection is recorded too.
	recCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	openErr := s.Recorder.OpenSession(recCtx, rec)
	cancel()
	defer func() {
		if p := recover(); p != nil {
			log.Error("session panicked", "panic", p, "stack", string(debug.Stack()))
			end.Outcome = event.OutcomeInternalError
			end.Error = fmt.Sprint("internal error: ", p)
		}
		end.Ended = time.Now()
		if openErr == nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			if err := s.Recorder.CloseSession(cctx, id, end); err != nil {
				log.Error("session end not recorded", "err", err)
			}
			cancel()
		}
		log.Info("session closed", "outcome", end.Outcome, "bytes_up", end.BytesUp, "bytes_down", end.BytesDown, "err", end.Error)
	}()

	switch {
	case openErr != nil:
		log.Error("session refused: start not recorded", "err", openErr)
		end.Outcome, end.Error = event.OutcomeRefused, "start not recorded: "+openErr.Error()
		return
	case acc.Err != nil:
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
	res, err := h.Serve(ctx, conn, &Session{ID: id, Subject: acc.Subject, Log: log})
	end.BytesUp, end.BytesDown = res.BytesUp, res.BytesDown
	if err != nil {
		end.Outcome, end.Error = event.OutcomeError, err.Error()
		if cause := context.Cause(ctx); cause != nil {
			end.Outcome, end.Error = event.OutcomeShutdown, cause.Error()
		}
	}
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
