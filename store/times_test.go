package store

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loopgate/loopgate/store/event"
)

// TestTimesCompareAsTimes: RFC 3339 with its fraction trimmed does not sort
// as text ("…:54Z" after "…:54.309Z"), so a --since of a whole second
// missed sessions later in that second.
func TestTimesCompareAsTimes(t *testing.T) {
	t.Parallel()
	db, _ := openTemp(t)
	ctx := context.Background()
	sec := time.Date(2026, 11, 30, 8, 42, 54, 0, time.UTC)
	for _, s := range []struct {
		id string
		at time.Time
	}{
		{"before", sec.Add(-100 * time.Millisecond)},
		{"whole", sec},
		{"later", sec.Add(309 * time.Millisecond)},
		{"tenth", sec.Add(300 * time.Millisecond)},
		{"next", sec.Add(time.Second)},
	} {
		if err := db.OpenSession(ctx, event.Session{ID: s.id, Workload: "w", Target: "t", Started: s.at}); err != nil {
			t.Fatal(err)
		}
		if err := db.RecordApproval(ctx, event.Approval{ID: s.id, SessionID: s.id, State: "denied", Requested: s.at, Expires: s.at.Add(time.Minute), Decided: s.at}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		f    Filter
		want []string
	}{
		{"all in time order", Filter{}, []string{"before", "whole", "tenth", "later", "next"}},
		{"since a whole second", Filter{Since: sec}, []string{"whole", "tenth", "later", "next"}},
		{"since a fraction", Filter{Since: sec.Add(300 * time.Millisecond)}, []string{"tenth", "later", "next"}},
		{"until a whole second", Filter{Until: sec.Add(time.Second)}, []string{"before", "whole", "tenth", "later"}},
		{"until a fraction", Filter{Until: sec.Add(309 * time.Millisecond)}, []string{"before", "whole", "tenth"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ids []string
			err := db.Sessions(ctx, tc.f, func(s *Session) error { ids = append(ids, s.ID); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, ids); diff != "" {
				t.Errorf("sessions (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("approvals newest first", func(t *testing.T) {
		list, err := db.Approvals(ctx, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, a := range list {
			ids = append(ids, a.ID)
		}
		if diff := cmp.Diff([]string{"next", "later", "tenth", "whole", "before"}, ids); diff != "" {
			t.Errorf("approvals (-want +got):\n%s", diff)
		}
	})
	t.Run("export since a whole second", func(t *testing.T) {
		var buf countWriter
		if err := db.Export(ctx, Filter{Since: sec, Until: sec.Add(time.Second)}, "jsonl", &buf); err != nil {
			t.Fatal(err)
		}
		// whole, tenth, later: a session_open and an approval event each.
		if buf.lines != 6 {
			t.Errorf("exported %d events, want 6", buf.lines)
		}
	})
	if rep, err := db.Verify(ctx, nil); err != nil || rep.Problem != nil {
		t.Errorf("verify: %+v, %v", rep, err)
	}
}

type countWriter struct{ lines int }

func (w *countWriter) Write(p []byte) (int, error) {
	for _, b := range p {
		if b == '\n' {
			w.lines++
		}
	}
	return len(p), nil
}

// TestMigrateFixedWidthTimes: rows written before times were fixed width
// are rewritten, and still match the events that recorded them.
func TestMigrateFixedWidthTimes(t *testing.T) {
	t.Parallel()
	db, _ := openTemp(t)
	ctx := context.Background()
	sec := time.Date(2026, 11, 30, 8, 42, 54, 0, time.UTC)
	for i, at := range []time.Time{sec.Add(309 * time.Millisecond), sec, sec.Add(300 * time.Millisecond)} {
		id := string(rune('a' + i))
		if err := db.OpenSession(ctx, event.Session{ID: id, Started: at, ProcessStart: at.Add(-time.Second)}); err != nil {
			t.Fatal(err)
		}
		if err := db.CloseSession(ctx, id, event.End{Ended: at.Add(time.Second), Outcome: event.OutcomeClosed}); err != nil {
			t.Fatal(err)
		}
		if err := db.RecordApproval(ctx, event.Approval{ID: id, SessionID: id, State: "approved", Requested: at, Expires: at.Add(time.Minute), Decided: at}); err != nil {
			t.Fatal(err)
		}
		// As an earlier build wrote them.
		old := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
		if _, err := db.db.ExecContext(ctx, `UPDATE sessions SET started = ?, ended = ?, process_start = ? WHERE id = ?`,
			old(at), old(at.Add(time.Second)), old(at.Add(-time.Second)), id); err != nil {
			t.Fatal(err)
		}
		if _, err := db.db.ExecContext(ctx, `UPDATE approvals SET requested = ?, expires = ?, decided = ? WHERE id = ?`,
			old(at), old(at.Add(time.Minute)), old(at), id); err != nil {
			t.Fatal(err)
		}
	}
	// Back to version 5 (6 rewrites times; later ones are undone).
	for _, q := range []string{`DROP TABLE learned_columns`, `DELETE FROM schema_migrations WHERE version >= 6`} {
		if _, err := db.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var bad int
	for _, q := range []string{
		`SELECT count(*) FROM sessions WHERE length(started) != 30 OR length(ended) != 30 OR length(process_start) != 30`,
		`SELECT count(*) FROM approvals WHERE length(requested) != 30 OR length(expires) != 30 OR length(decided) != 30`,
	} {
		if err := db.db.QueryRowContext(ctx, q).Scan(&bad); err != nil || bad != 0 {
			t.Errorf("%s: %d, %v", q, bad, err)
		}
	}
	var ids []string
	if err := db.Sessions(ctx, Filter{Since: sec}, func(s *Session) error { ids = append(ids, s.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"b", "c", "a"}, ids); diff != "" {
		t.Errorf("sessions (-want +got):\n%s", diff)
	}
	if rep, err := db.Verify(ctx, nil); err != nil || rep.Problem != nil {
		t.Errorf("verify: %+v, %v", rep, err)
	}
}
