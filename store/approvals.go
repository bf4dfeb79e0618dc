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

// RecordApproval inserts or updates an approval and appends a chained
// approval event with its state, durably.
func (s *DB) RecordApproval(ctx context.Context, a event.Approval) error {
	snap, err := json.Marshal(approvalJSON(a))
	if err != nil {
		return err
	}
	return s.write(ctx, &op{
		apply: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO approvals (id, session_id, rule_id, command, params_hash,
				requested, expires, state, decided, decided_by, reason, class, workload, target, scope, approved_by)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT(id) DO UPDATE SET state = excluded.state, decided = excluded.decided,
				decided_by = excluded.decided_by, reason = excluded.reason, scope = excluded.scope,
				approved_by = excluded.approved_by`,
				a.ID, a.SessionID, a.RuleID, a.Command, a.ParamsHash, colTime(a.Requested), colTime(a.Expires),
				a.State, nullTime(a.Decided), a.DecidedBy, a.Reason, a.Class, a.Workload, a.Target, a.Scope,
				strings.Join(a.ApprovedBy, ","))
			if err != nil {
				return fmt.Errorf("record approval %s: %w", a.ID, err)
			}
			return nil
		},
		events: []event.Event{{SessionID: a.SessionID, Kind: event.KindApproval, Text: a.State,
			ApprovalID: a.ID, RuleID: a.RuleID, Params: string(snap), Error: refusal(a)}},
	})
}

// refusal is the reason of a request that did not end approved.
func refusal(a event.Approval) string {
	switch a.State {
	case "denied", "expired", "abandoned":
		return a.Reason
	}
	return ""
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return colTime(t)
}

type approvalView struct {
	ID         string   `json:"id"`
	Session    string   `json:"session"`
	State      string   `json:"state"`
	Workload   string   `json:"workload"`
	Target     string   `json:"target"`
	Class      string   `json:"class"`
	RuleID     string   `json:"rule"`
	Command    string   `json:"command"`
	ParamsHash string   `json:"params_hash"`
	ApprovedBy []string `json:"approved_by,omitempty"`
	DecidedBy  string   `json:"decided_by,omitempty"`
	Reason     string   `json:"reason,omitempty"`
	Scope      string   `json:"scope,omitempty"`
	Requested  string   `json:"requested"`
	Expires    string   `json:"expires"`
	Decided    string   `json:"decided,omitempty"`
}

// ApprovalJSON is the stable JSON form of a recorded approval.
func ApprovalJSON(a event.Approval) any { return approvalJSON(a) }

func approvalJSON(a event.Approval) approvalView {
	return approvalView{ID: a.ID, Session: a.SessionID, State: a.State, Workload: a.Workload, Target: a.Target,
		Class: a.Class, RuleID: a.RuleID, Command: a.Command, ParamsHash: a.ParamsHash, ApprovedBy: a.ApprovedBy,
		DecidedBy: a.DecidedBy, Reason: a.Reason, Scope: a.Scope, Requested: fmtTime(a.Requested),
		Expires: fmtTime(a.Expires), Decided: fmtTime(a.Decided)}
}

const approvalColumns = `SELECT id, session_id, rule_id, command, params_hash, requested, expires, state,
	COALESCE(decided, ''), decided_by, reason, class, workload, target, scope, approved_by FROM approvals`

// Approval returns one recorded approval.
func (s *DB) Approval(ctx context.Context, id string) (event.Approval, error) {
	list, err := s.queryApprovals(ctx, approvalColumns+" WHERE id = ?", id)
	if err != nil {
		return event.Approval{}, err
	}
	if len(list) == 0 {
		return event.Approval{}, fmt.Errorf("approval %s: %w", id, ErrNotFound)
	}
	return list[0], nil
}

// Approvals returns recorded approvals, newest first; state "" means all.
func (s *DB) Approvals(ctx context.Context, state string, limit int) ([]event.Approval, error) {
	q := approvalColumns
	var args []any
	if state != "" {
		q += " WHERE state = ?"
		args = append(args, state)
	}
	q += " ORDER BY requested DESC"
	if limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", limit)
	}
	return s.queryApprovals(ctx, q, args...)
}

func (s *DB) queryApprovals(ctx context.Context, q string, args ...any) ([]event.Approval, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list approvals: %w", err)
	}
	defer rows.Close()
	var out []event.Approval
	for rows.Next() {
		var a event.Approval
		var req, exp, dec, by string
		if err := rows.Scan(&a.ID, &a.SessionID, &a.RuleID, &a.Command, &a.ParamsHash, &req, &exp, &a.State, &dec,
			&a.DecidedBy, &a.Reason, &a.Class, &a.Workload, &a.Target, &a.Scope, &by); err != nil {
			return nil, err
		}
		a.Requested, _ = parseTime(req)
		a.Expires, _ = parseTime(exp)
		a.Decided, _ = parseTime(dec)
		if by != "" {
			a.ApprovedBy = strings.Split(by, ",")
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// AbandonPendingApprovals closes requests left pending by a daemon that
// died: their sessions are gone. It returns how many.
func (s *DB) AbandonPendingApprovals(ctx context.Context, now time.Time) (int, error) {
	pending, err := s.Approvals(ctx, "pending", 0)
	if err != nil {
		return 0, err
	}
	for _, a := range pending {
		a.State, a.Decided, a.Reason = "abandoned", now, "the daemon stopped while the request was pending"
		if err := s.RecordApproval(ctx, a); err != nil {
			return 0, err
		}
	}
	return len(pending), nil
}

// Stats are totals for metrics.
type Stats struct {
	Sessions     map[string]int64 // by outcome
	Decisions    map[string]int64 // by action
	Approvals    map[string]int64 // by state
	ApprovalWait time.Duration    // average, decided requests
}

// Stats counts what the store holds.
func (s *DB) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Sessions: map[string]int64{}, Decisions: map[string]int64{}, Approvals: map[string]int64{}}
	for _, q := range []struct {
		sql string
		m   map[string]int64
	}{
		{`SELECT outcome, count(*) FROM sessions GROUP BY outcome`, st.Sessions},
		{`SELECT decision, count(*) FROM events WHERE decision != '' AND kind IN ('decision', 'command') GROUP BY decision`, st.Decisions},
		{`SELECT state, count(*) FROM approvals GROUP BY state`, st.Approvals},
	} {
		rows, err := s.db.QueryContext(ctx, q.sql)
		if err != nil {
			return st, err
		}
		for rows.Next() {
			var k string
			var n int64
			if err := rows.Scan(&k, &n); err == nil {
				q.m[k] = n
			}
		}
		rows.Close()
	}
	var avg sql.NullFloat64
	s.db.QueryRowContext(ctx, `SELECT avg((julianday(decided) - julianday(requested)) * 86400.0) FROM approvals WHERE decided IS NOT NULL`).Scan(&avg)
	st.ApprovalWait = time.Duration(avg.Float64 * float64(time.Second))
	return st, nil
}

// SessionEvents returns a session's events in chain order.
func (s *DB) SessionEvents(ctx context.Context, id string) ([]ExportRow, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT e.seq, e.time, e.session_id, COALESCE(s.workload, ''), COALESCE(s.target, ''),
		COALESCE(s.pid, 0), COALESCE(s.uid, 0), COALESCE(s.exe, ''), e.kind, e.text, e.params, e.decision, e.rule_id,
		e.approval_id, e.tag, e.duration_ns, e.rows, e.bytes, e.error, e.hash
		FROM event_spans sp JOIN events e ON e.seq BETWEEN sp.first_seq AND sp.last_seq AND e.session_id = sp.session_id
		LEFT JOIN sessions s ON s.id = e.session_id WHERE sp.session_id = ? ORDER BY e.seq`, id)
	if err != nil {
		return nil, fmt.Errorf("session events: %w", err)
	}
	defer rows.Close()
	out := []ExportRow{}
	for rows.Next() {
		var r ExportRow
		if err := rows.Scan(&r.Seq, &r.Time, &r.Session, &r.Workload, &r.Target, &r.PID, &r.UID, &r.Exe,
			&r.Kind, &r.Text, &r.Params, &r.Decision, &r.RuleID, &r.ApprovalID, &r.Tag, &r.DurationNS, &r.Rows,
			&r.Bytes, &r.Error, &r.Hash); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
