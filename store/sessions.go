package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/loopgate/loopgate/store/event"
)

// Session is a recorded session row.
type Session struct {
	event.Session
	event.End
}

// OpenSession records a session's start: the sessions row and a chained
// session_open event carrying it, followed by first (the session's first
// events, its first decision) in the same write. It returns only once all
// are durable, so a caller may forward traffic after it returns.
func (s *DB) OpenSession(ctx context.Context, e event.Session, first ...event.Event) error {
	snap, err := json.Marshal(openSnapshot(e))
	if err != nil {
		return err
	}
	evs := append([]event.Event{{SessionID: e.ID, Time: e.Started, Kind: event.KindSessionOpen, Params: string(snap)}}, first...)
	return s.write(ctx, &op{
		apply:  func(ctx context.Context, tx *sql.Tx) error { return insertSession(ctx, tx, e) },
		events: evs,
		// A start whose first decision allows is as durable as the
		// allowed statements after it (sync.go): committed to the WAL,
		// fsynced with the next group. A start written alone (a refused
		// session) or with a refusal waits for the fsync.
		lazy: len(first) > 0 && lazyEvents(first),
	})
}

func insertSession(ctx context.Context, tx *sql.Tx, e event.Session) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO sessions
		(id, workload, target, protocol, orig_dst, client, pid, tid, process_start, uid, gid,
		 cgroup_id, cgroup_path, exe, comm, started, outcome)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.Workload, e.Target, e.Protocol, e.OrigDst, e.Client, e.PID, e.TID,
		colTime(e.ProcessStart), e.UID, e.GID, int64(e.CgroupID), e.CgroupPath, e.Exe, e.Comm,
		colTime(e.Started), string(event.OutcomeOpen))
	if err != nil {
		return fmt.Errorf("record session %s: %w", e.ID, err)
	}
	return nil
}

// CloseSession records how session id ended, with a chained session_close
// event carrying the end.
func (s *DB) CloseSession(ctx context.Context, id string, e event.End) error {
	o, err := closeOp(id, e)
	if err != nil {
		return err
	}
	return s.write(ctx, o)
}

// closeOp is the write that records how session id ended.
func closeOp(id string, e event.End) (*op, error) {
	snap, err := json.Marshal(closeSnapshot(e))
	if err != nil {
		return nil, err
	}
	return &op{
		apply:  func(ctx context.Context, tx *sql.Tx) error { return updateSessionEnd(ctx, tx, id, e) },
		events: []event.Event{{SessionID: id, Time: e.Ended, Kind: event.KindSessionClose, Params: string(snap), Error: e.Error, Bytes: e.BytesUp + e.BytesDown}},
	}, nil
}

func updateSessionEnd(ctx context.Context, tx *sql.Tx, id string, e event.End) error {
	res, err := tx.ExecContext(ctx, `UPDATE sessions SET ended = ?, bytes_up = ?, bytes_down = ?,
		outcome = ?, error = ? WHERE id = ?`,
		colTime(e.Ended), e.BytesUp, e.BytesDown, string(e.Outcome), e.Error, id)
	if err != nil {
		return fmt.Errorf("record end of session %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("record end of session %s: %w", id, ErrNotFound)
	}
	return nil
}

// InterruptOpenSessions closes sessions still open (left by a daemon that
// died) as interrupted, each with its session_close event, and returns how
// many there were.
func (s *DB) InterruptOpenSessions(ctx context.Context, now time.Time) (int64, error) {
	var open []*Session
	err := s.Sessions(ctx, Filter{Outcome: string(event.OutcomeOpen)}, func(x *Session) error {
		open = append(open, x)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("close interrupted sessions: %w", err)
	}
	for _, x := range open {
		// The byte counts are the last SessionProgressAsync wrote.
		end := event.End{Ended: now, Outcome: event.OutcomeInterrupted, Error: "daemon stopped while the session was open",
			BytesUp: x.BytesUp, BytesDown: x.BytesDown}
		if err := s.CloseSession(ctx, x.ID, end); err != nil {
			return 0, fmt.Errorf("close interrupted sessions: %w", err)
		}
	}
	return int64(len(open)), nil
}

// Filter selects sessions. Zero fields match everything.
type Filter struct {
	Workload string
	Target   string
	Outcome  string
	Since    time.Time
	Until    time.Time
	// Limit caps the number of rows; 0 means no limit.
	Limit int
}

// where returns SQL conditions (columns prefixed with p) and their args.
func (f Filter) where(p string) ([]string, []any) {
	var where []string
	var args []any
	add := func(cond string, v any) { where = append(where, p+cond); args = append(args, v) }
	if f.Workload != "" {
		add("workload = ?", f.Workload)
	}
	if f.Target != "" {
		add("target = ?", f.Target)
	}
	if f.Outcome != "" {
		add("outcome = ?", f.Outcome)
	}
	if !f.Since.IsZero() {
		add("started >= ?", colTime(f.Since))
	}
	if !f.Until.IsZero() {
		add("started < ?", colTime(f.Until))
	}
	return where, args
}

const sessionColumns = `id, workload, target, protocol, orig_dst, client, pid, tid, process_start,
	uid, gid, cgroup_id, cgroup_path, exe, comm, started, COALESCE(ended, ''), bytes_up, bytes_down,
	outcome, error`

// Sessions calls fn for each session matching f, oldest first, streaming
// rows so memory stays constant. fn's error stops the walk and is returned.
func (s *DB) Sessions(ctx context.Context, f Filter, fn func(*Session) error) error {
	where, args := f.where("")
	q := "SELECT " + sessionColumns + " FROM sessions"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY started, id"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		sess, err := scanSession(rows)
		if err != nil {
			return err
		}
		if err := fn(sess); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list sessions: %w", err)
	}
	return nil
}

// RecentSessions returns the n newest sessions, newest first.
func (s *DB) RecentSessions(ctx context.Context, n int) ([]*Session, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+sessionColumns+" FROM sessions ORDER BY started DESC, id DESC LIMIT ?", n)
	if err != nil {
		return nil, fmt.Errorf("recent sessions: %w", err)
	}
	defer rows.Close()
	var out []*Session
	for rows.Next() {
		x, err := scanSession(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

// Session returns one session by id.
func (s *DB) Session(ctx context.Context, id string) (*Session, error) {
	row := s.db.QueryRowContext(ctx, "SELECT "+sessionColumns+" FROM sessions WHERE id = ?", id)
	sess, err := scanSession(row)
	if err == sql.ErrNoRows {
		return nil, fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	return sess, err
}

type scanner interface{ Scan(dest ...any) error }

func scanSession(r scanner) (*Session, error) {
	var (
		x                              Session
		procStart, started, ended, out string
		cgid                           int64
	)
	err := r.Scan(&x.ID, &x.Workload, &x.Target, &x.Protocol, &x.OrigDst, &x.Client, &x.PID, &x.TID,
		&procStart, &x.UID, &x.GID, &cgid, &x.CgroupPath, &x.Exe, &x.Comm, &started, &ended,
		&x.BytesUp, &x.BytesDown, &out, &x.Error)
	if err == sql.ErrNoRows {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("read session: %w", err)
	}
	x.CgroupID = uint64(cgid)
	x.Outcome = event.Outcome(out)
	for _, p := range []struct {
		s   string
		dst *time.Time
	}{{procStart, &x.ProcessStart}, {started, &x.Started}, {ended, &x.Ended}} {
		t, err := parseTime(p.s)
		if err != nil {
			return nil, fmt.Errorf("read session %s: bad time %q: %w", x.ID, p.s, err)
		}
		*p.dst = t
	}
	return &x, nil
}

// View is the stable JSON form of a session, as the CLI and API show it.
type View struct {
	sessionSnapshot
	endSnapshot
}

// View returns the session's JSON form.
func (s *Session) View() View {
	return View{openSnapshot(s.Session), closeSnapshot(s.End)}
}

// sessionSnapshot is the canonical JSON of a session row that its
// session_open and session_close events carry; audit verify compares the
// sessions table against it.
type sessionSnapshot struct {
	ID           string `json:"id"`
	Workload     string `json:"workload"`
	Target       string `json:"target"`
	Protocol     string `json:"protocol"`
	OrigDst      string `json:"orig_dst"`
	Client       string `json:"client"`
	PID          int    `json:"pid"`
	TID          int    `json:"tid"`
	ProcessStart string `json:"process_start"`
	UID          uint32 `json:"uid"`
	GID          uint32 `json:"gid"`
	CgroupID     uint64 `json:"cgroup_id"`
	CgroupPath   string `json:"cgroup_path"`
	Exe          string `json:"exe"`
	Comm         string `json:"comm"`
	Started      string `json:"started"`
}

type endSnapshot struct {
	Ended     string `json:"ended"`
	BytesUp   int64  `json:"bytes_up"`
	BytesDown int64  `json:"bytes_down"`
	Outcome   string `json:"outcome"`
	Error     string `json:"error"`
}

func openSnapshot(e event.Session) sessionSnapshot {
	return sessionSnapshot{
		ID: e.ID, Workload: e.Workload, Target: e.Target, Protocol: e.Protocol, OrigDst: e.OrigDst,
		Client: e.Client, PID: e.PID, TID: e.TID, ProcessStart: fmtTime(e.ProcessStart), UID: e.UID,
		GID: e.GID, CgroupID: e.CgroupID, CgroupPath: e.CgroupPath, Exe: e.Exe, Comm: e.Comm,
		Started: fmtTime(e.Started),
	}
}

func closeSnapshot(e event.End) endSnapshot {
	return endSnapshot{Ended: fmtTime(e.Ended), BytesUp: e.BytesUp, BytesDown: e.BytesDown, Outcome: string(e.Outcome), Error: e.Error}
}
