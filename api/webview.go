package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
)

// What the approver page shows, computed on the server: times as UTC text
// with a relative "ago" (app.js turns them into the browser's local time
// and keeps "ago" current), and a session's events joined into one row per
// command.

// when is a time as the page shows it.
type when struct {
	ISO string // RFC 3339 in UTC, read by app.js; "" for no time
	UTC string // "2026-11-30 12:09:09 UTC", shown without script
	Rel string // "2 min ago", "in 45 s"
}

// utcLayout is how a time is shown before app.js makes it local. app.js
// shows the same fields in the same order.
const utcLayout = "2006-01-02 15:04:05"

func whenOf(t, now time.Time) when {
	if t.IsZero() {
		return when{}
	}
	return when{ISO: t.UTC().Format(time.RFC3339Nano), UTC: t.UTC().Format(utcLayout) + " UTC", Rel: relative(t.Sub(now))}
}

// relative says how far d (a time minus now) is from now, in its largest
// unit: "5 s ago", "2 min ago", "3 h ago", "4 d ago", or "in 2 min".
// app.js's rel() is the same function.
func relative(d time.Duration) string {
	future := d > 0
	if d < 0 {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = fmt.Sprintf("%d s", int(d/time.Second))
	case d < time.Hour:
		s = fmt.Sprintf("%d min", int(d/time.Minute))
	case d < 24*time.Hour:
		s = fmt.Sprintf("%d h", int(d/time.Hour))
	default:
		s = fmt.Sprintf("%d d", int(d/(24*time.Hour)))
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

// humanDuration shows a command's duration with three significant
// figures: "420 µs", "12.3 ms", "1.52 s", "2 min 3 s".
func humanDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return ""
	case d < time.Microsecond:
		return "<1 µs"
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d/time.Microsecond)
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'g', 3, 64) + " ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'g', 3, 64) + " s"
	default:
		return fmt.Sprintf("%d min %d s", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
}

// humanBytes shows a byte count: "512 B", "1.5 KiB", "3.2 MiB".
func humanBytes(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, unit := float64(n)/1024, "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + unit
}

// maxShownText is the longest command text a row shows whole.
const maxShownText = 4 << 10

// shownText cuts text longer than n bytes (at a UTF-8 boundary) and says
// how long it was.
func shownText(text string, n int) string {
	if len(text) <= n {
		return text
	}
	cut := n
	for cut > 0 && !utf8Start(text[cut]) {
		cut--
	}
	return text[:cut] + fmt.Sprintf("… (%d bytes in all)", len(text))
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }

// cmdRow is one line of a session: a command joined with its result, or
// any other event shown generically (kind, text, decision, error).
//
// Protocols fill the same columns: PostgreSQL a statement, its completion
// tag ("SELECT 3") and rows; SSH an exec's argv, its exit status and bytes;
// HTTP "METHOD path", the status and bytes. A protocol that records one
// event per command (result fields set on the command event) needs no join.
type cmdRow struct {
	Seq      int64
	When     when
	Kind     string
	Decision string
	Rule     string
	Approval string
	Text     string
	Result   string // the completion tag, status or exit status
	Rows     string // "" when none were counted
	Bytes    string
	Duration string
	Error    string
	// Done is set once the row has its result (or needs none).
	Done bool
	// Cast names the terminal recording the row stands for ("cast 1"),
	// and CastURL is where its .cast file is (set by the page).
	Cast, CastURL string
}

// cmdTable is rows with the columns any of them fills: a protocol that
// counts no rows (HTTP, SSH) shows no Rows column, and one that records
// no bytes per command (PostgreSQL) no Bytes column.
type cmdTable struct {
	Rows                                    []cmdRow
	Result, Counted, Bytes, Duration, Error bool
	// ResultName heads the result column: what the protocol calls it.
	ResultName string
}

// resultNames name a protocol's result column; others (SSH, whose result
// reads "exit 7" or "signal KILL") say "Result".
var resultNames = map[string]string{"postgres": "Tag", "http": "Status"}

func tableOf(rows []cmdRow, protocol string) cmdTable {
	t := cmdTable{Rows: rows, ResultName: resultNames[protocol]}
	if t.ResultName == "" {
		t.ResultName = "Result"
	}
	for _, r := range rows {
		t.Result = t.Result || r.Result != ""
		t.Counted = t.Counted || r.Rows != ""
		t.Bytes = t.Bytes || r.Bytes != ""
		t.Duration = t.Duration || r.Duration != ""
		t.Error = t.Error || r.Error != ""
	}
	return t
}

// maxOpenCommands bounds the commands a join keeps waiting for their
// results (PostgreSQL pipelines a few; more is a result that never came).
const maxOpenCommands = 64

// joinCommands turns a session's events (chain order) into rows: a result
// fills the row of the oldest waiting command whose text it carries (a
// result's text may be the command's shortened, ending in "..."). Session
// open and close events are left out (the page's header shows them), and a
// terminal's cast events make one row.
func joinCommands(evs []store.ExportRow, now time.Time) []cmdRow {
	rows := make([]cmdRow, 0, len(evs))
	var open []int // indexes into rows of commands waiting for a result
	casts := map[string]int{}
	castBytes := map[string]int64{}
	for _, e := range evs {
		switch event.Kind(e.Kind) {
		case event.KindSessionOpen, event.KindSessionClose:
			continue
		case event.KindCast:
			// A terminal is recorded in chunks: one line for all
			// of them, at the first, with their size.
			castBytes[e.Text] += int64(len(e.Params))
			if i, ok := casts[e.Text]; ok {
				rows[i].Bytes = humanBytes(castBytes[e.Text])
				continue
			}
			casts[e.Text] = len(rows)
			r := rowOf(e, now)
			r.Done, r.Cast, r.Bytes = true, e.Text, humanBytes(castBytes[e.Text])
			rows = append(rows, r)
			continue
		case event.KindResult:
			if i := matchResult(rows, open, e.Text); i >= 0 {
				fillResult(&rows[open[i]], e)
				open = append(open[:i], open[i+1:]...)
				continue
			}
		}
		r := rowOf(e, now)
		if event.Kind(e.Kind) == event.KindCommand {
			// A command recorded with its result, or refused, has
			// no result to wait for.
			if e.Tag != "" || e.DurationNS > 0 || e.Error != "" || e.Decision != "" && e.Decision != string(policy.Allow) {
				r.Done = true
			} else {
				open = append(open, len(rows))
				if len(open) > maxOpenCommands {
					open = open[1:]
				}
			}
		} else {
			r.Done = true
		}
		rows = append(rows, r)
	}
	return rows
}

// matchResult returns the index in open of the oldest command a result of
// text belongs to, or -1.
func matchResult(rows []cmdRow, open []int, text string) int {
	prefix, cut := strings.CutSuffix(text, "...")
	for i, j := range open {
		c := rows[j].Text
		if c == text || cut && strings.HasPrefix(c, prefix) {
			return i
		}
	}
	return -1
}

func rowOf(e store.ExportRow, now time.Time) cmdRow {
	t, _ := time.Parse(time.RFC3339Nano, e.Time)
	r := cmdRow{Seq: e.Seq, When: whenOf(t, now), Kind: e.Kind, Decision: e.Decision, Rule: e.RuleID,
		Approval: e.ApprovalID, Text: shownText(e.Text, maxShownText)}
	fillResult(&r, e)
	if event.Kind(e.Kind) == event.KindApproval {
		r.Text = approvalText(e)
	}
	return r
}

// approvalText says what an approval event recorded: its state, and who
// decided how, from the request it carries (store's approval JSON).
func approvalText(e store.ExportRow) string {
	var a struct {
		Class      string   `json:"class"`
		ApprovedBy []string `json:"approved_by"`
		DecidedBy  string   `json:"decided_by"`
		Reason     string   `json:"reason"`
		Scope      string   `json:"scope"`
	}
	if json.Unmarshal([]byte(e.Params), &a) != nil {
		return e.Text
	}
	var b strings.Builder
	b.WriteString(e.Text)
	switch {
	case a.DecidedBy != "":
		fmt.Fprintf(&b, " by %s", a.DecidedBy)
	case len(a.ApprovedBy) > 0:
		fmt.Fprintf(&b, ", approved so far by %s", strings.Join(a.ApprovedBy, ", "))
	case e.Text == policy.StatePending && a.Class != "":
		fmt.Fprintf(&b, ": %s", a.Class)
	}
	if a.Scope != "" && e.Text == policy.StateApproved {
		fmt.Fprintf(&b, " (%s)", a.Scope)
	}
	if a.Reason != "" {
		fmt.Fprintf(&b, ": %s", a.Reason)
	}
	return b.String()
}

// fillResult sets what an event says of a command's outcome.
func fillResult(r *cmdRow, e store.ExportRow) {
	r.Done = true
	if e.Tag != "" {
		r.Result = e.Tag
	}
	if e.Rows > 0 {
		r.Rows = strconv.FormatInt(e.Rows, 10)
	}
	if e.Bytes > 0 {
		r.Bytes = humanBytes(e.Bytes)
	}
	if e.DurationNS > 0 {
		r.Duration = humanDuration(time.Duration(e.DurationNS))
	}
	if e.Error != "" {
		r.Error = e.Error
	}
	if r.Decision == "" {
		r.Decision = e.Decision
	}
}

// maxEarlier is how many of its session's earlier commands a pending
// request shows.
const maxEarlier = 10

// pendingView is a pending request with what its session did before.
type pendingView struct {
	policy.Request
	Asked, Expires when
	// Earlier are the session's last commands before the request, most
	// recent last.
	Earlier cmdTable
	// More says the session ran commands before Earlier's first.
	More bool
	// EarlierErr says why Earlier could not be read.
	EarlierErr string
}

// earlierKinds are the events that show what a session did.
var earlierKinds = []string{string(event.KindCommand), string(event.KindResult)}

// earlier picks the last maxEarlier command rows of evs (the session's last
// command and result events) other than the request's own.
func earlier(q policy.Request, evs []store.ExportRow, full bool, now time.Time) ([]cmdRow, bool) {
	rows := joinCommands(evs, now)
	out := rows[:0]
	for _, r := range rows {
		if r.Approval != q.ID || r.Approval == "" {
			out = append(out, r)
		}
	}
	more := full
	if len(out) > maxEarlier {
		out, more = out[len(out)-maxEarlier:], true
	}
	for i := range out {
		out[i].Text = shownText(out[i].Text, 300)
	}
	return out, more
}

// sessionRow is a session in the list.
type sessionRow struct {
	store.View
	Start    when
	Lasted   string // "" while open
	Traffic  string // bytes up (to the target) and down
	Outcome  string
	ErrorMsg string
}

func sessionRowOf(x *store.Session, now time.Time) sessionRow {
	r := sessionRow{View: x.View(), Start: whenOf(x.Started, now), Outcome: string(x.Outcome), ErrorMsg: x.Error}
	if !x.Ended.IsZero() {
		r.Lasted = humanDuration(x.Ended.Sub(x.Started))
		if r.Lasted == "" {
			r.Lasted = "0 s"
		}
	}
	r.Traffic = "↑ " + humanBytes(x.BytesUp) + " ↓ " + humanBytes(x.BytesDown)
	return r
}

// outcomes are the values the outcome filter offers.
var outcomes = []string{string(event.OutcomeOpen), string(event.OutcomeClosed), string(event.OutcomeRefused),
	string(event.OutcomeDenied), string(event.OutcomeRevoked), string(event.OutcomeError),
	string(event.OutcomeInternalError), string(event.OutcomeShutdown), string(event.OutcomeInterrupted)}

// filterView is the session filter form: the chosen values and the
// choices (configured names, and a chosen value no longer configured).
type filterView struct {
	Workload, Target, Outcome    string
	Workloads, Targets, Outcomes []string
	// Active says a filter is set or the list is paged back.
	Active bool
}

func withChoice(names []string, chosen string) []string {
	if chosen == "" {
		return names
	}
	for _, n := range names {
		if n == chosen {
			return names
		}
	}
	return append(names, chosen)
}
