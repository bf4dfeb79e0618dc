// Package event is loopgate's recording vocabulary: the values protocol
// handlers hand to a recorder. It is a leaf: no SQL, no cgo, nothing of
// loopgate's imported, so l7 packages can record without linking SQLite.
package event

import "time"

// Outcome is how a session ended.
type Outcome string

// Outcomes. A session is "open" until it ends; a daemon that finds open
// sessions at start (it crashed, or was killed) marks them "interrupted".
const (
	OutcomeOpen          Outcome = "open"
	OutcomeClosed        Outcome = "closed"
	OutcomeRefused       Outcome = "refused"
	OutcomeDenied        Outcome = "denied"
	OutcomeRevoked       Outcome = "revoked"
	OutcomeError         Outcome = "error"
	OutcomeInternalError Outcome = "internal_error"
	OutcomeShutdown      Outcome = "shutdown"
	OutcomeInterrupted   Outcome = "interrupted"
)

// Session is a session as it starts: who connected, to what, from where.
type Session struct {
	ID       string
	Workload string
	Target   string
	Protocol string
	// OrigDst is the address the client dialled, as host:port.
	OrigDst string
	// Client is the client's socket address as the daemon saw it.
	Client     string
	PID        int
	TID        int
	UID        uint32
	GID        uint32
	CgroupID   uint64
	CgroupPath string
	Exe        string
	Comm       string
	// ProcessStart is the start time of the process; with PID it names it.
	ProcessStart time.Time
	Started      time.Time
}

// End is how a session finished.
type End struct {
	Ended     time.Time
	BytesUp   int64 // client to target
	BytesDown int64 // target to client
	Outcome   Outcome
	Error     string
}

// Kind is what an event records.
type Kind string

// Event kinds. Every session has a session_open and (unless the daemon died)
// a session_close event; they carry the session row so edits to the sessions
// table are caught by audit verify.
const (
	KindSessionOpen  Kind = "session_open"
	KindSessionClose Kind = "session_close"
	KindDecision     Kind = "decision"
	KindCommand      Kind = "command"
	KindResult       Kind = "result"
	KindRevoked      Kind = "revoked"
	KindNote         Kind = "note"
	// KindCast holds asciicast v2 lines of one terminal (an SSH pty
	// channel), masked, in Params; Text names the terminal ("cast 1").
	// A session's cast events of one Text, in order, concatenate to a
	// .cast file.
	KindCast Kind = "cast"
)

// Event is one thing that happened in a session: a command, a decision, the
// session's start or end.
type Event struct {
	SessionID string
	Time      time.Time
	Kind      Kind
	// Text is the command text (masked), or a description.
	Text string
	// Params are the command's parameters (masked), JSON.
	Params     string
	Decision   string
	RuleID     string
	ApprovalID string
	// Tag is the command's completion tag (PostgreSQL's "SELECT 3").
	Tag      string
	Duration time.Duration
	Rows     int64
	Bytes    int64
	Error    string
}

// KindApproval records an approval request or a change to it.
const KindApproval Kind = "approval"

// Approval is an approval request as recorded: filed, then decided (or
// expired, or abandoned). History is never deleted.
type Approval struct {
	ID         string
	SessionID  string
	State      string
	Workload   string
	Target     string
	Class      string
	RuleID     string
	Command    string // masked
	ParamsHash string
	ApprovedBy []string
	DecidedBy  string
	Reason     string
	Scope      string
	Requested  time.Time
	Expires    time.Time
	Decided    time.Time
}
