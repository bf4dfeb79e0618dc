package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/loopgate/loopgate/store/event"
)

// LearnColumn records a column learned by a detector (state "learned"),
// with a chained event, durably. A column already recorded for the rule and
// mask keeps its row: a dropped one stays dropped.
func (s *DB) LearnColumn(ctx context.Context, c event.LearnedColumn) error {
	if c.State == "" {
		c.State = "learned"
	}
	if c.Changed.IsZero() {
		c.Changed = c.FirstSeen
	}
	return s.write(ctx, &op{
		apply: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO learned_columns (rule, mask, column_name, first_seen, session_id,
				state, changed, changed_by) VALUES (?, ?, ?, ?, ?, ?, ?, '') ON CONFLICT DO NOTHING`,
				c.Rule, c.Mask, c.Column, colTime(c.FirstSeen), c.SessionID, c.State, colTime(c.Changed))
			if err != nil {
				return fmt.Errorf("record learned column %s: %w", c.Column, err)
			}
			return nil
		},
		events: []event.Event{learnedEvent(c)},
	})
}

// SetLearnedState records an operator's confirm or drop of a learned
// column, with a chained event, durably. It returns ErrNotFound for a
// column never learned.
func (s *DB) SetLearnedState(ctx context.Context, rule, mask, column, state, by string) (event.LearnedColumn, error) {
	list, err := s.queryLearned(ctx, learnedColumns+" WHERE rule = ? AND mask = ? AND column_name = ?", rule, mask, column)
	if err != nil {
		return event.LearnedColumn{}, err
	}
	if len(list) == 0 {
		return event.LearnedColumn{}, fmt.Errorf("learned column %s of rule %s, mask %s: %w", column, rule, mask, ErrNotFound)
	}
	c := list[0]
	c.State, c.ChangedBy, c.Changed = state, by, time.Now()
	err = s.write(ctx, &op{
		apply: func(ctx context.Context, tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `UPDATE learned_columns SET state = ?, changed = ?, changed_by = ?
				WHERE rule = ? AND mask = ? AND column_name = ?`, state, colTime(c.Changed), by, rule, mask, column)
			if err != nil {
				return fmt.Errorf("set learned column %s: %w", column, err)
			}
			if n, _ := res.RowsAffected(); n != 1 {
				return errors.New("learned column vanished")
			}
			return nil
		},
		events: []event.Event{learnedEvent(c)},
	})
	return c, err
}

func learnedEvent(c event.LearnedColumn) event.Event {
	params := c.Mask + " " + c.Column
	if c.ChangedBy != "" {
		params += " by " + c.ChangedBy
	}
	return event.Event{SessionID: c.SessionID, Time: c.Changed, Kind: event.KindMaskColumn, Text: c.State,
		Params: params, RuleID: c.Rule}
}

const learnedColumns = `SELECT rule, mask, column_name, first_seen, session_id, state, changed, changed_by FROM learned_columns`

// LearnedColumns returns every learned column, in every state, ordered by
// rule, mask and column.
func (s *DB) LearnedColumns(ctx context.Context) ([]event.LearnedColumn, error) {
	return s.queryLearned(ctx, learnedColumns+" ORDER BY rule, mask, column_name")
}

func (s *DB) queryLearned(ctx context.Context, q string, args ...any) ([]event.LearnedColumn, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list learned columns: %w", err)
	}
	defer rows.Close()
	var out []event.LearnedColumn
	for rows.Next() {
		var c event.LearnedColumn
		var first, changed string
		if err := rows.Scan(&c.Rule, &c.Mask, &c.Column, &first, &c.SessionID, &c.State, &changed, &c.ChangedBy); err != nil {
			return nil, fmt.Errorf("list learned columns: %w", err)
		}
		c.FirstSeen, _ = parseTime(first)
		c.Changed, _ = parseTime(changed)
		out = append(out, c)
	}
	return out, rows.Err()
}
