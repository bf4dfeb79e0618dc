package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loopgate/loopgate/store/event"
)

func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sub", "loopgate.db")
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func TestOpenPermissionsAndMigrations(t *testing.T) {
	t.Parallel()
	db, path := openTemp(t)
	for _, p := range []string{path, path + "-wal"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", p, st.Mode().Perm())
		}
	}
	if st, _ := os.Stat(filepath.Dir(path)); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode = %v", st.Mode().Perm())
	}
	v, err := db.SchemaVersion(context.Background())
	if err != nil || v != len(migrations) {
		t.Fatalf("version = %d, %v", v, err)
	}
	db.Close()
	if err := db.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Reopening applies nothing twice.
	db2, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	db2.Close()
}

func TestSessionRoundTrip(t *testing.T) {
	t.Parallel()
	db, _ := openTemp(t)
	ctx := context.Background()
	start := time.Date(2026, 11, 25, 10, 0, 0, 123, time.UTC)
	s := event.Session{
		ID: "a1", Workload: "demo", Target: "echo", Protocol: "tcp", OrigDst: "127.0.0.2:7000",
		Client: "127.0.0.1:5555", PID: 42, TID: 43, UID: 1000, GID: 1000, CgroupID: 1 << 40,
		CgroupPath: "loopgate/demo", Exe: "/usr/bin/bash", Comm: "bash",
		ProcessStart: start.Add(-time.Second), Started: start,
	}
	if err := db.OpenSession(ctx, s); err != nil {
		t.Fatal(err)
	}
	got, err := db.Session(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Outcome != event.OutcomeOpen {
		t.Errorf("outcome = %q", got.Outcome)
	}
	end := event.End{Ended: start.Add(time.Minute), BytesUp: 10, BytesDown: 20, Outcome: event.OutcomeClosed}
	if err := db.CloseSession(ctx, "a1", end); err != nil {
		t.Fatal(err)
	}
	got, _ = db.Session(ctx, "a1")
	if diff := cmp.Diff(Session{Session: s, End: end}, *got); diff != "" {
		t.Errorf("session (-want +got):\n%s", diff)
	}
	if err := db.CloseSession(ctx, "nope", end); err == nil {
		t.Error("closing an unknown session succeeded")
	}
}

func TestInterruptAndFilter(t *testing.T) {
	t.Parallel()
	db, _ := openTemp(t)
	ctx := context.Background()
	base := time.Now().Add(-time.Hour)
	for i, w := range []string{"a", "b", "a"} {
		s := event.Session{ID: string(rune('x' + i)), Workload: w, Target: "t", Started: base.Add(time.Duration(i) * time.Minute)}
		if err := db.OpenSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	db.CloseSession(ctx, "x", event.End{Ended: time.Now(), Outcome: event.OutcomeClosed})
	n, err := db.InterruptOpenSessions(ctx, time.Now())
	if err != nil || n != 2 {
		t.Fatalf("interrupted %d, %v", n, err)
	}
	tests := []struct {
		name string
		f    Filter
		want []string
	}{
		{"all", Filter{}, []string{"x", "y", "z"}},
		{"workload", Filter{Workload: "a"}, []string{"x", "z"}},
		{"outcome", Filter{Outcome: string(event.OutcomeInterrupted)}, []string{"y", "z"}},
		{"since", Filter{Since: base.Add(30 * time.Second)}, []string{"y", "z"}},
		{"until", Filter{Until: base.Add(30 * time.Second)}, []string{"x"}},
		{"limit", Filter{Limit: 1}, []string{"x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var ids []string
			err := db.Sessions(ctx, tc.f, func(s *Session) error { ids = append(ids, s.ID); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, ids); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	}
}

// The hand-written canonical encoding is byte for byte encoding/json's:
// hashes written before it must still verify.
func FuzzCanonicalJSON(f *testing.F) {
	f.Add("s", "2026-11-25T10:00:00.000000123Z", "command", "SELECT 1", "", "allow", "r", "", "", int64(5), int64(1), int64(0), "")
	f.Add("s", "t", "result", "SELECT '<a>&\"\\\n\t\b\f\x00\u2028é\xff'", "1, 'x'", "deny", "", "id", "SELECT 1", int64(-1), int64(0), int64(9), "42501: no")
	f.Fuzz(func(t *testing.T, session, tm, kind, text, params, decision, rule, approval, tag string, dur, rows, bytes int64, errText string) {
		c := canonicalEvent{Session: session, Time: tm, Kind: kind, Text: text, Params: params, Decision: decision, Rule: rule,
			Approval: approval, Tag: tag, DurationNS: dur, Rows: rows, Bytes: bytes, Error: errText}
		want, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.appendJSON(nil); string(got) != string(want) {
			t.Fatalf("canonical encoding differs:\n got %s\nwant %s", got, want)
		}
	})
}

// A session's events are found through spans: interleaved sessions, async
// and durable writes, and a write that fails (its events roll back and
// leave no span).
func TestSessionEventsThroughSpans(t *testing.T) {
	t.Parallel()
	db, path := openTemp(t)
	ctx := context.Background()
	want := map[string][]string{}
	note := func(id, text string) event.Event {
		want[id] = append(want[id], text)
		return event.Event{SessionID: id, Kind: event.KindNote, Text: text}
	}
	for _, id := range []string{"a", "b", "c"} {
		if err := db.OpenSession(ctx, event.Session{ID: id, Started: time.Now()}, note(id, id+"-first")); err != nil {
			t.Fatal(err)
		}
		want[id] = append([]string{""}, want[id]...) // the session_open event
	}
	for i := range 50 {
		id := []string{"a", "b", "c"}[i%3]
		db.AppendEventsAsync(note(id, fmt.Sprint(id, i)))
		if i%7 == 0 {
			if err := db.AppendEvents(ctx, note("b", fmt.Sprint("durable", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Opening "a" again fails: its events are rolled back with it.
	if err := db.OpenSession(ctx, event.Session{ID: "a"}, event.Event{SessionID: "a", Kind: event.KindNote, Text: "never"}); err == nil {
		t.Fatal("second open of a session succeeded")
	}
	db.AppendEventsAsync(note("c", "last"))
	if err := db.CloseSession(ctx, "c", event.End{Ended: time.Now(), Outcome: event.OutcomeClosed}); err != nil {
		t.Fatal(err)
	}
	want["c"] = append(want["c"], "")
	for id, texts := range want {
		evs, err := db.SessionEvents(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range evs {
			if e.Session != id {
				t.Errorf("SessionEvents(%s) returned an event of %s", id, e.Session)
			}
			got = append(got, e.Text)
		}
		if diff := cmp.Diff(texts, got); diff != "" {
			t.Errorf("SessionEvents(%s) (-want +got):\n%s", id, diff)
		}
	}
	// Every span starts and ends on an event of its own session.
	var bad int
	if err := db.db.QueryRowContext(ctx, `SELECT count(*) FROM event_spans sp
		LEFT JOIN events f ON f.seq = sp.first_seq LEFT JOIN events l ON l.seq = sp.last_seq
		WHERE f.session_id IS NOT sp.session_id OR l.session_id IS NOT sp.session_id`).Scan(&bad); err != nil || bad != 0 {
		t.Fatalf("%d spans do not bound their session's events (%v)", bad, err)
	}

	// A store from before spans (schema 4) gets one span per session.
	db.Close()
	raw, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DROP TABLE event_spans`, `CREATE INDEX events_session ON events(session_id, seq)`,
		`DROP TABLE learned_columns`, `DELETE FROM schema_migrations WHERE version >= 5`} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	db2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	evs, err := db2.SessionEvents(ctx, "b")
	if err != nil || len(evs) != len(want["b"]) {
		t.Fatalf("after migration: %d events of b, want %d (%v)", len(evs), len(want["b"]), err)
	}
	if rep, err := db2.Verify(ctx, nil); err != nil || rep.Problem != nil {
		t.Fatalf("verify after migration: %+v %v", rep, err)
	}
}

// TestInterruptedKeepsProgress: a session the daemon never closed is
// marked interrupted with the byte counts last written, and progress
// queued after a session's end changes nothing.
func TestInterruptedKeepsProgress(t *testing.T) {
	t.Parallel()
	db, path := openTemp(t)
	ctx := context.Background()
	for _, id := range []string{"killed", "closed"} {
		if err := db.OpenSession(ctx, event.Session{ID: id, Started: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	db.SessionProgressAsync("killed", 10, 20)
	db.SessionProgressAsync("killed", 300, 4000)
	db.CloseSessionAsync("closed", event.End{Ended: time.Now(), BytesUp: 5, BytesDown: 6, Outcome: event.OutcomeClosed})
	db.SessionProgressAsync("closed", 7, 8)
	db.Close() // as far as the commits got before the kill
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if n, err := db.InterruptOpenSessions(ctx, time.Now()); err != nil || n != 1 {
		t.Fatalf("interrupted %d, %v", n, err)
	}
	for _, tc := range []struct {
		id       string
		outcome  event.Outcome
		up, down int64
	}{{"killed", event.OutcomeInterrupted, 300, 4000}, {"closed", event.OutcomeClosed, 5, 6}} {
		x, err := db.Session(ctx, tc.id)
		if err != nil {
			t.Fatal(err)
		}
		if x.Outcome != tc.outcome || x.BytesUp != tc.up || x.BytesDown != tc.down {
			t.Errorf("%s: %s %d/%d, want %s %d/%d", tc.id, x.Outcome, x.BytesUp, x.BytesDown, tc.outcome, tc.up, tc.down)
		}
	}
	if rep, err := db.Verify(ctx, nil); err != nil || rep.Problem != nil {
		t.Errorf("verify: %+v, %v", rep, err)
	}
}
