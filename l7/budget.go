package l7

// Budgets: one workload exhausting its sessions, or the daemon's file
// descriptors, is refused on its own; every other workload goes on being
// served (issue #11 item 6).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// LimitError is why a session was refused: a session budget was full.
type LimitError struct {
	// Workload is the workload whose budget was full; "" for the
	// daemon's own (limits: max_sessions, or its file descriptor limit).
	Workload string
	// Open is how many sessions it had open.
	Open int
}

func (e *LimitError) Error() string {
	if e.Workload == "" {
		return fmt.Sprintf("loopgate: the daemon has %d sessions (limits: max_sessions)", e.Open)
	}
	return fmt.Sprintf("loopgate: workload %s has %d sessions (max_sessions)", e.Workload, e.Open)
}

// Refuser is a Handler that can tell a client in its own protocol why its
// session is refused before it starts (PostgreSQL: an ErrorResponse with
// SQLSTATE 53300). Refuse bounds its own waiting (a second or two) and does
// not close conn. Handlers that are not Refusers have the conn closed.
type Refuser interface {
	Refuse(conn net.Conn, err error)
}

const (
	// maxRefusing bounds refusals told in the client's protocol at once;
	// past it a refused connection is just closed.
	maxRefusing = 128
	// refusalQueue bounds refusals waiting to be recorded; past it they
	// are counted, and the count goes with the next one recorded.
	refusalQueue = 256
	// logEvery is the least time between two log lines about the same
	// budget, or about accept failing.
	logEvery = time.Second
)

// budget counts the sessions of a Server.
//
// mu guards open, perWorkload, logged and suppressed. spareMu guards spare.
type budget struct {
	mu          sync.Mutex
	open        int
	perWorkload map[string]int
	logged      map[string]time.Time // last log line per budget
	suppressed  map[string]int       // refusals since then

	refusing  atomic.Int32
	queue     chan refusal
	queueOnce sync.Once
	recording atomic.Bool
	dropped   atomic.Int64 // refusals not recorded one by one

	spareMu   sync.Mutex
	spare     *os.File
	acceptLog time.Time
	acceptErr int
}

type refusal struct {
	rec event.Session
	end event.End
}

// admit takes a place for acc's session in the daemon's budget and its
// workload's. It returns a release func, or why there is no place.
func (s *Server) admit(cfg *policy.Config, acc Accepted) (func(), *LimitError) {
	b := &s.budget
	global, perWorkload := policy.DefaultMaxSessions, policy.DefaultWorkloadMaxSessions
	if cfg != nil && cfg.Limits.MaxSessions > 0 {
		global = cfg.Limits.MaxSessions
	}
	if s.MaxSessions > 0 {
		global = min(global, s.MaxSessions)
	}
	workload := ""
	if acc.Err == nil && acc.Subject != nil {
		workload = acc.Subject.Workload
	}
	if cfg != nil && workload != "" {
		perWorkload = cfg.WorkloadMaxSessions(workload)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open >= global {
		return nil, &LimitError{Open: b.open}
	}
	if workload != "" {
		if n := b.perWorkload[workload]; n >= perWorkload {
			return nil, &LimitError{Workload: workload, Open: n}
		}
		if b.perWorkload == nil {
			b.perWorkload = map[string]int{}
		}
		b.perWorkload[workload]++
	}
	b.open++
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.open--
		if workload != "" {
			if b.perWorkload[workload]--; b.perWorkload[workload] == 0 {
				delete(b.perWorkload, workload)
			}
		}
	}, nil
}

// start serves acc's session if the budgets have room for it, and refuses
// it otherwise. It runs on the accepting goroutine: it must not block.
func (s *Server) start(ctx context.Context, acc Accepted) {
	var cfg *policy.Config
	if s.Policy != nil {
		cfg = s.Policy()
	}
	release, lim := s.admit(cfg, acc)
	if lim != nil {
		s.wg.Go(func() { s.refuseOverBudget(acc, lim) })
		return
	}
	s.wg.Go(func() {
		defer release()
		s.serve(ctx, acc)
	})
}

// refuseOverBudget tells the client why (if its handler can, and not too
// many are being told), closes the connection, and has the refusal logged
// and recorded, both cheaply: a flood of refusals costs the store at most
// one write at a time and the log a line a second.
func (s *Server) refuseOverBudget(acc Accepted, lim *LimitError) {
	b := &s.budget
	var h Handler
	if acc.Err == nil && acc.Subject != nil && acc.Subject.Target != nil {
		h = s.Handlers[acc.Subject.Target.Protocol]
	}
	if r, ok := h.(Refuser); ok && b.refusing.Add(1) <= maxRefusing {
		r.Refuse(acc.Conn, lim)
		b.refusing.Add(-1)
	} else if ok {
		b.refusing.Add(-1)
	}
	acc.Conn.Close()

	id := NewID()
	rec := sessionRecord(id, acc)
	b.mu.Lock()
	if b.logged == nil {
		b.logged, b.suppressed = map[string]time.Time{}, map[string]int{}
	}
	key := lim.Workload
	n := b.suppressed[key] + 1
	logNow := time.Since(b.logged[key]) >= logEvery
	if logNow {
		b.logged[key], b.suppressed[key] = time.Now(), 0
	} else {
		b.suppressed[key] = n
	}
	b.mu.Unlock()
	if logNow {
		s.Log.Error("sessions refused: budget full", "workload", rec.Workload, "target", rec.Target, "pid", rec.PID,
			"err", lim.Error(), "refused", n)
	}
	b.queueOnce.Do(func() { b.queue = make(chan refusal, refusalQueue) })
	select {
	case b.queue <- refusal{rec: rec, end: event.End{Outcome: event.OutcomeRefused, Error: lim.Error()}}:
	default:
		b.dropped.Add(1)
	}
	if b.recording.CompareAndSwap(false, true) {
		s.wg.Go(s.recordRefusals)
	}
}

// recordRefusals records queued refusals, one write at a time, until the
// queue is empty.
func (s *Server) recordRefusals() {
	b := &s.budget
	for {
		select {
		case r := <-b.queue:
			if n := b.dropped.Swap(0); n > 0 {
				r.end.Error += fmt.Sprintf(" (and %d more refusals not recorded one by one)", n)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			r.end.Ended = time.Now()
			if err := s.Recorder.OpenSession(ctx, r.rec); err != nil {
				s.Log.Error("refused session not recorded", "err", err)
			} else {
				s.Recorder.CloseSessionAsync(r.rec.ID, r.end)
			}
			cancel()
		default:
			b.recording.Store(false)
			if len(b.queue) == 0 || !b.recording.CompareAndSwap(false, true) {
				return
			}
		}
	}
}

// reserveSpare keeps a descriptor in reserve for accepting under EMFILE.
func (s *Server) reserveSpare() {
	s.budget.spareMu.Lock()
	defer s.budget.spareMu.Unlock()
	if s.budget.spare == nil {
		s.budget.spare, _ = os.Open(os.DevNull)
	}
}

func (s *Server) releaseSpare() {
	s.budget.spareMu.Lock()
	defer s.budget.spareMu.Unlock()
	if s.budget.spare != nil {
		s.budget.spare.Close()
		s.budget.spare = nil
	}
}

// shed handles a failed accept and reports whether accepting may go on.
// Out of descriptors (EMFILE, ENFILE), the connection waiting in the
// backlog would make every accept fail at once, forever: the spare
// descriptor is given up to accept it and close it (the client sees its
// connection closed, not a hang), then taken back. Other temporary errors
// back off briefly. Either way it logs once a second, not per attempt.
func (s *Server) shed(a Accepter, err error) bool {
	if !isTemporary(err) {
		return false
	}
	b := &s.budget
	b.spareMu.Lock()
	defer b.spareMu.Unlock()
	b.acceptErr++
	if time.Since(b.acceptLog) >= logEvery {
		s.Log.Error("accept failed; shedding connections", "err", err, "failures", b.acceptErr)
		b.acceptLog, b.acceptErr = time.Now(), 0
	}
	if (errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)) && b.spare != nil {
		b.spare.Close()
		b.spare = nil
		if acc, err := a.Accept(); acc.Conn != nil {
			acc.Conn.Close()
		} else if err != nil && errors.Is(err, net.ErrClosed) {
			return false
		}
		b.spare, _ = os.Open(os.DevNull)
		return true
	}
	time.Sleep(10 * time.Millisecond)
	return true
}
