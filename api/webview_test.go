package api

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store"
)

func TestRelative(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		d    time.Duration
		want string
	}{
		{"now", 0, "0 s ago"},
		{"seconds", -42 * time.Second, "42 s ago"},
		{"minutes", -(2*time.Minute + 59*time.Second), "2 min ago"},
		{"hours", -3 * time.Hour, "3 h ago"},
		{"days", -50 * time.Hour, "2 d ago"},
		{"future", 90 * time.Second, "in 1 min"},
		{"soon", 1500 * time.Millisecond, "in 1 s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := relative(tc.d); got != tc.want {
				t.Errorf("relative(%v) = %q, want %q", tc.d, got, tc.want)
			}
		})
	}
}

func TestHumanUnits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, got, want string
	}{
		{"sub-ms", humanDuration(420 * time.Microsecond), "420 µs"},
		{"ms", humanDuration(12345 * time.Microsecond), "12.3 ms"},
		{"s", humanDuration(1520 * time.Millisecond), "1.52 s"},
		{"min", humanDuration(123 * time.Second), "2 min 3 s"},
		{"none", humanDuration(0), ""},
		{"ns", humanDuration(5), "<1 µs"},
		{"bytes", humanBytes(512), "512 B"},
		{"KiB", humanBytes(1536), "1.5 KiB"},
		{"MiB", humanBytes(3 << 20), "3.0 MiB"},
		{"cut", shownText("héllo", 2), "h… (6 bytes in all)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

// ev builds a recorded event at second sec.
func ev(seq int64, kind, text string, f func(*store.ExportRow)) store.ExportRow {
	r := store.ExportRow{Seq: seq, Kind: kind, Text: text,
		Time: time.Date(2026, 11, 30, 12, 0, int(seq), 0, time.UTC).Format(time.RFC3339Nano)}
	if f != nil {
		f(&r)
	}
	return r
}

func TestJoinCommands(t *testing.T) {
	t.Parallel()
	long := "SELECT " + strings.Repeat("x", 300)
	allow := func(r *store.ExportRow) { r.Decision = "allow"; r.RuleID = "r1" }
	evs := []store.ExportRow{
		ev(1, "session_open", "", nil),
		ev(2, "decision", "connect", allow),
		// Pipelined: two commands, then their results in order.
		ev(3, "command", "SELECT 1", allow),
		ev(4, "command", long, allow),
		ev(5, "result", "SELECT 1", func(r *store.ExportRow) { r.Tag = "SELECT 1"; r.Rows = 1; r.DurationNS = 1500000 }),
		ev(6, "result", long[:200]+"...", func(r *store.ExportRow) { r.Error = "ERROR: boom (SQLSTATE XX000)"; r.DurationNS = 2000 }),
		// Recorded with its result (async): nothing to join.
		ev(7, "command", "SELECT 2", func(r *store.ExportRow) { allow(r); r.Tag = "SELECT 1"; r.Rows = 1; r.DurationNS = 3000 }),
		// Refused: no result comes; a later result of the same text
		// belongs to the next command.
		ev(8, "command", "SELECT 1", func(r *store.ExportRow) { r.Decision = "deny"; r.Error = "denied" }),
		ev(9, "command", "SELECT 1", allow),
		ev(10, "approval", "pending", func(r *store.ExportRow) { r.ApprovalID = "apr_1"; r.Params = `{"class":"unbounded-write"}` }),
		ev(11, "result", "SELECT 1", func(r *store.ExportRow) { r.Tag = "SELECT 1"; r.Rows = 1 }),
		// A kind this page does not know, and an HTTP-like exchange.
		ev(12, "pty_resize", "80x24", nil),
		ev(13, "command", "GET /v1/items", func(r *store.ExportRow) { allow(r); r.Tag = "200"; r.Bytes = 2048; r.DurationNS = 5e6 }),
		ev(14, "result", "orphan", func(r *store.ExportRow) { r.Tag = "X" }),
		// A terminal's chunks make one line.
		ev(15, "cast", "cast 1", func(r *store.ExportRow) { r.Params = "abc" }),
		ev(16, "cast", "cast 1", func(r *store.ExportRow) { r.Params = "defg" }),
		ev(17, "session_close", "", nil),
	}
	got := joinCommands(evs, time.Date(2026, 11, 30, 12, 2, 0, 0, time.UTC))
	type line struct {
		Seq                                            int64
		Kind, Decision, Text, Result, Rows, Bytes, Dur string
		Err                                            string
		Rel                                            string
	}
	var lines []line
	for _, r := range got {
		lines = append(lines, line{r.Seq, r.Kind, r.Decision, r.Text[:min(len(r.Text), 13)], r.Result, r.Rows, r.Bytes, r.Duration, r.Error, r.When.Rel})
	}
	want := []line{
		{2, "decision", "allow", "connect", "", "", "", "", "", "1 min ago"},
		{3, "command", "allow", "SELECT 1", "SELECT 1", "1", "", "1.5 ms", "", "1 min ago"},
		{4, "command", "allow", "SELECT xxxxxx", "", "", "", "2 µs", "ERROR: boom (SQLSTATE XX000)", "1 min ago"},
		{7, "command", "allow", "SELECT 2", "SELECT 1", "1", "", "3 µs", "", "1 min ago"},
		{8, "command", "deny", "SELECT 1", "", "", "", "", "denied", "1 min ago"},
		{9, "command", "allow", "SELECT 1", "SELECT 1", "1", "", "", "", "1 min ago"},
		{10, "approval", "", "pending: unbo", "", "", "", "", "", "1 min ago"},
		{12, "pty_resize", "", "80x24", "", "", "", "", "", "1 min ago"},
		{13, "command", "allow", "GET /v1/items", "200", "", "2.0 KiB", "5 ms", "", "1 min ago"},
		{14, "result", "", "orphan", "X", "", "", "", "", "1 min ago"},
		{15, "cast", "", "cast 1", "", "", "7 B", "", "", "1 min ago"},
	}
	if d := cmp.Diff(want, lines); d != "" {
		t.Errorf("rows (-want +got):\n%s", d)
	}
}

func TestApprovalText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, state, params, want string
	}{
		{"pending", "pending", `{"class":"write"}`, "pending: write"},
		{"partly", "pending", `{"approved_by":["ada"]}`, "pending, approved so far by ada"},
		{"approved", "approved", `{"decided_by":"bob","scope":"session","reason":"ok"}`, "approved by bob (session): ok"},
		{"expired", "expired", `{"reason":"approval timed out"}`, "expired: approval timed out"},
		{"not json", "denied", `{`, "denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := approvalText(store.ExportRow{Kind: "approval", Text: tc.state, Params: tc.params}); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEarlierIsBounded(t *testing.T) {
	t.Parallel()
	var evs []store.ExportRow
	for i := range 15 {
		seq := int64(2*i + 1)
		evs = append(evs, ev(seq, "command", fmt.Sprint("SELECT ", i), func(r *store.ExportRow) { r.Decision = "allow" }),
			ev(seq+1, "result", fmt.Sprint("SELECT ", i), func(r *store.ExportRow) { r.Tag = "SELECT 1" }))
	}
	evs = append(evs, ev(40, "command", "DELETE FROM t", func(r *store.ExportRow) { r.Decision = "allow"; r.ApprovalID = "apr_me" }))
	rows, more := earlier(policy.Request{ID: "apr_me"}, evs, false, time.Now())
	if len(rows) != maxEarlier || !more {
		t.Fatalf("%d rows, more %v; want %d and more", len(rows), more, maxEarlier)
	}
	if first, last := rows[0].Text, rows[len(rows)-1].Text; first != "SELECT 5" || last != "SELECT 14" {
		t.Errorf("rows run %q to %q, want SELECT 5 to SELECT 14 (most recent last, not the request's own)", first, last)
	}
}

func TestPagesRender(t *testing.T) {
	t.Parallel()
	now := time.Now()
	cmd := cmdRow{Seq: 3, When: whenOf(now.Add(-2*time.Minute), now), Kind: "command", Decision: "allow", Text: "SELECT <b>",
		Result: "SELECT 1", Rows: "1", Duration: "1.5 ms", Error: "ERROR: x"}
	var b strings.Builder
	d := indexData{Name: "ada", CSRF: "tok", Now: whenOf(now, now), Pending: []pendingView{{
		Request: policy.Request{ID: "apr_1", SessionID: "s1", Command: "DELETE FROM t", Required: 1},
		Asked:   whenOf(now, now), Expires: whenOf(now.Add(time.Minute), now), Earlier: tableOf([]cmdRow{cmd}, "postgres"), More: true,
	}}, Filter: filterView{Workload: "agent", Workloads: []string{"agent", "admin"}, Active: true}}
	if err := pages.ExecuteTemplate(&b, "index.html", d); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<section class="req" data-id="apr_1"`, `SELECT &lt;b&gt;`, `2 min ago`, `in 1 min`, ` UTC</time>`,
		`<option value="agent" selected>`, `<td class="rows num">1</td>`, `id="no-sessions">No session matches`, `href="/ui/sessions/s1"`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("index lacks %s", want)
		}
	}
	b.Reset()
	row := sessionRow{Outcome: "closed", Lasted: "3 s"}
	if err := pages.ExecuteTemplate(&b, "session.html", sessionData{ID: "s1", Session: &row, Rows: tableOf([]cmdRow{cmd}, "http")}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<th>Status</th>`, `<td class="dur num">1.5 ms</td>`, `<td class="err">ERROR: x</td>`, `after 3 s`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("session page lacks %s", want)
		}
	}
	// No command counted bytes: no Bytes column.
	if strings.Contains(b.String(), "<th>Bytes</th>") || strings.Contains(b.String(), `class="bytes`) {
		t.Errorf("session page shows an empty Bytes column")
	}
}
