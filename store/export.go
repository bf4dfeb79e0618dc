package store

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// ExportRow is one exported event with the identity of its session.
type ExportRow struct {
	Seq        int64  `json:"seq"`
	Time       string `json:"time"`
	Session    string `json:"session"`
	Workload   string `json:"workload"`
	Target     string `json:"target"`
	PID        int    `json:"pid"`
	UID        uint32 `json:"uid"`
	Exe        string `json:"exe"`
	Kind       string `json:"kind"`
	Text       string `json:"text"`
	Params     string `json:"params"`
	Decision   string `json:"decision"`
	RuleID     string `json:"rule_id"`
	ApprovalID string `json:"approval_id"`
	Tag        string `json:"tag"`
	DurationNS int64  `json:"duration_ns"`
	Rows       int64  `json:"rows"`
	Bytes      int64  `json:"bytes"`
	Error      string `json:"error"`
	Hash       string `json:"hash"`
}

var exportColumns = []string{"seq", "time", "session", "workload", "target", "pid", "uid", "exe", "kind",
	"text", "params", "decision", "rule_id", "approval_id", "tag", "duration_ns", "rows", "bytes", "error", "hash"}

func (r *ExportRow) strings() []string {
	return []string{strconv.FormatInt(r.Seq, 10), r.Time, r.Session, r.Workload, r.Target,
		strconv.Itoa(r.PID), strconv.FormatUint(uint64(r.UID), 10), r.Exe, r.Kind, r.Text, r.Params,
		r.Decision, r.RuleID, r.ApprovalID, r.Tag, strconv.FormatInt(r.DurationNS, 10),
		strconv.FormatInt(r.Rows, 10), strconv.FormatInt(r.Bytes, 10), r.Error, r.Hash}
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// Export streams the events of sessions matching f, in chain order, as
// "jsonl" (one object a line), "csv" (with a header) or "text" (a table
// for people; text is shortened). Memory stays
// constant whatever the store's size.
func (s *DB) Export(ctx context.Context, f Filter, format string, w io.Writer) error {
	return s.ExportWith(ctx, f, format, w, ExportOptions{})
}

// ExportOptions tune ExportWith.
type ExportOptions struct {
	// Progress, if set, is called now and then from the exporting
	// goroutine with how far through the log the export is and how far
	// it goes, in events (of every session, exported or not).
	Progress func(done, total int64)
}

// ExportWith is Export with options.
func (s *DB) ExportWith(ctx context.Context, f Filter, format string, w io.Writer, opts ExportOptions) error {
	var emit func(*ExportRow) error
	var flush func() error
	switch format {
	case "jsonl":
		enc := json.NewEncoder(w)
		emit = func(r *ExportRow) error { return enc.Encode(r) }
		flush = func() error { return nil }
	case "csv":
		cw := csv.NewWriter(w)
		if err := cw.Write(exportColumns); err != nil {
			return err
		}
		emit = func(r *ExportRow) error { return cw.Write(r.strings()) }
		flush = func() error { cw.Flush(); return cw.Error() }
	case "text":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tSESSION\tWORKLOAD\tKIND\tDECISION\tRULE\tTEXT\tTAG\tERROR")
		emit = func(r *ExportRow) error {
			_, err := fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Time, r.Session, r.Workload,
				r.Kind, r.Decision, r.RuleID, oneLine(r.Text), r.Tag, oneLine(r.Error))
			return err
		}
		flush = tw.Flush
	default:
		return fmt.Errorf("export: unknown format %q (jsonl, csv or text)", format)
	}
	where, args := f.where("s.")
	q := `SELECT e.seq, e.time, e.session_id, s.workload, s.target, s.pid, s.uid, s.exe, e.kind, e.text,
		e.params, e.decision, e.rule_id, e.approval_id, e.tag, e.duration_ns, e.rows, e.bytes, e.error, e.hash
		FROM events e JOIN sessions s ON s.id = e.session_id`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY e.seq"
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	defer rows.Close()
	var first, total int64
	if opts.Progress != nil {
		s.db.QueryRowContext(ctx, `SELECT COALESCE(MIN(seq), 1), COALESCE(MAX(seq), 0) FROM events`).Scan(&first, &total)
		total -= first - 1
		opts.Progress(0, total)
	}
	var r ExportRow
	var n int64
	for rows.Next() {
		if err := rows.Scan(&r.Seq, &r.Time, &r.Session, &r.Workload, &r.Target, &r.PID, &r.UID, &r.Exe,
			&r.Kind, &r.Text, &r.Params, &r.Decision, &r.RuleID, &r.ApprovalID, &r.Tag, &r.DurationNS, &r.Rows,
			&r.Bytes, &r.Error, &r.Hash); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		if err := emit(&r); err != nil {
			return err
		}
		if n++; opts.Progress != nil && n%progressEvery == 0 {
			opts.Progress(r.Seq-first+1, total)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return flush()
}
