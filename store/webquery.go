package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Read-only queries for pages that show a bounded slice of the store: the
// newest sessions matching a filter, and a window of one session's events.
// A session's events are found through its spans (writer.go), walked in
// batches, so a window costs the events it returns plus those of other
// sessions interleaved in the same commits, never the whole session.

// LatestSessions returns up to n sessions matching f, newest first. f.Limit
// is ignored; f.Until pages back in time.
func (s *DB) LatestSessions(ctx context.Context, f Filter, n int) ([]*Session, error) {
	where, args := f.where("")
	q := "SELECT " + sessionColumns + " FROM sessions"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY started DESC, id DESC LIMIT ?"
	rows, err := s.db.QueryContext(ctx, q, append(args, n)...)
	if err != nil {
		return nil, fmt.Errorf("latest sessions: %w", err)
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
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("latest sessions: %w", err)
	}
	return out, nil
}

// EventWindow selects a window of one session's events.
type EventWindow struct {
	// After selects events with a greater sequence number (0: from the
	// first).
	After int64
	// Last selects the last N events instead of the first N after After.
	Last bool
	// N caps the number of events returned; at most maxWindow.
	N int
	// Kinds, if any, selects events of these kinds only.
	Kinds []string
}

// maxWindow bounds one window.
const maxWindow = 5000

// spanBatch is how many spans one query reads.
const spanBatch = 256

// SessionEventWindow returns the events of session id that w selects, in
// chain order. Only the event columns of each row are set (not the
// session's workload, target, pid, uid and exe).
func (s *DB) SessionEventWindow(ctx context.Context, id string, w EventWindow) ([]ExportRow, error) {
	n := min(w.N, maxWindow)
	if n <= 0 {
		return nil, nil
	}
	kindCond, kindArgs := "", []any{}
	if len(w.Kinds) > 0 {
		kindCond = " AND kind IN (?" + strings.Repeat(", ?", len(w.Kinds)-1) + ")"
		for _, k := range w.Kinds {
			kindArgs = append(kindArgs, k)
		}
	}
	order := "ASC"
	if w.Last {
		order = "DESC"
	}
	spanQ := `SELECT first_seq, last_seq FROM event_spans WHERE session_id = ? AND last_seq > ? AND first_seq ` +
		map[bool]string{false: ">", true: "<"}[w.Last] + ` ? ORDER BY first_seq ` + order + ` LIMIT ?`
	evQ := `SELECT seq, time, session_id, kind, text, params, decision, rule_id, approval_id, tag, duration_ns,
		rows, bytes, error, hash FROM events WHERE seq BETWEEN ? AND ? AND session_id = ?` + kindCond +
		` ORDER BY seq ` + order + ` LIMIT ?`
	var out []ExportRow
	// cursor is the first_seq the next batch of spans starts beyond.
	cursor := int64(-1)
	if w.Last {
		cursor = 1<<63 - 1
	}
	for len(out) < n {
		spans, err := s.spans(ctx, spanQ, id, w.After, cursor)
		if err != nil {
			return nil, err
		}
		for _, sp := range spans {
			cursor = sp[0]
			if len(out) >= n {
				break
			}
			args := append(append([]any{max(sp[0], w.After+1), sp[1], id}, kindArgs...), n-len(out))
			rows, err := s.db.QueryContext(ctx, evQ, args...)
			if err != nil {
				return nil, fmt.Errorf("session events: %w", err)
			}
			for rows.Next() {
				var r ExportRow
				if err := rows.Scan(&r.Seq, &r.Time, &r.Session, &r.Kind, &r.Text, &r.Params, &r.Decision, &r.RuleID,
					&r.ApprovalID, &r.Tag, &r.DurationNS, &r.Rows, &r.Bytes, &r.Error, &r.Hash); err != nil {
					rows.Close()
					return nil, fmt.Errorf("session events: %w", err)
				}
				out = append(out, r)
			}
			err = rows.Err()
			rows.Close()
			if err != nil {
				return nil, fmt.Errorf("session events: %w", err)
			}
		}
		if len(spans) < spanBatch {
			break
		}
	}
	if w.Last {
		slices.Reverse(out)
	}
	return out, nil
}

// spans reads one batch of a session's spans as {first, last} pairs.
func (s *DB) spans(ctx context.Context, q, id string, after, cursor int64) ([][2]int64, error) {
	rows, err := s.db.QueryContext(ctx, q, id, after, cursor, spanBatch)
	if err != nil {
		return nil, fmt.Errorf("session event spans: %w", err)
	}
	defer rows.Close()
	var out [][2]int64
	for rows.Next() {
		var sp [2]int64
		if err := rows.Scan(&sp[0], &sp[1]); err != nil {
			return nil, fmt.Errorf("session event spans: %w", err)
		}
		out = append(out, sp)
	}
	return out, rows.Err()
}
