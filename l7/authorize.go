package l7

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// Command is one thing a session asks to do: a connection, a statement, an
// exec, a request. Every handler decides commands through Authorize, the
// one path that decides, waits for approval and records.
type Command struct {
	// Kind is the event kind the command is recorded as; "" means
	// event.KindCommand.
	Kind event.Kind
	// Text is what runs, as an approver sees it and the record keeps it.
	Text string
	// Params are parameters bound to it (bind values, a body's hash); an
	// approval covers Text and a hash of Params.
	Params  string
	Classes []string
	// Decision is the policy's answer. Left zero, Authorize asks the
	// current policy (Session.Check). A handler that refines a decision
	// (a read-only layer, masks, command patterns) sets it beforehand,
	// starting from Session.Check. After Authorize it is final: allow or
	// deny, never approve.
	Decision policy.Decision
	// Notify is called once the command waits for approval, to tell the
	// agent; nil for none.
	Notify func(policy.Request)
	// Hold: if allowed, the session holds these classes open for its life
	// (a TCP connection holds "connect"); a reload re-decides them and
	// cuts the session off if the new policy no longer allows them.
	Hold bool
	// ApprovalID is set by Authorize when an approver decided.
	ApprovalID string
}

// maxApprovalText is the longest command put to an approver, whole.
const maxApprovalText = 64 << 10

// Check asks the current policy about a command of the given classes. It
// records nothing: a decision reaches the record through Authorize.
func (s *Session) Check(classes ...string) policy.Decision {
	return s.srv.Policy().Decide(s.Subject, classes)
}

// Authorize decides cmds in order (each with the current policy unless
// its Decision is set), holds for approval those the decision says need
// one (each becomes allowed or denied), and stops at the first command
// not allowed: those after it are denied as not reached and not
// recorded, as a pipeline ends at an error. The decided commands are
// recorded, one event each, durably before Authorize returns ("no
// record, no forward"), except that commands all allowed under rules
// with record: async and no approval may be queued instead.
//
// An error means the record could not be written: every decision is then
// deny. Otherwise the caller reads each cmd.Decision.Action.
func (s *Session) Authorize(ctx context.Context, cmds ...*Command) error {
	n := s.decide(ctx, cmds)
	evs := make([]event.Event, n)
	async := true
	for i, c := range cmds[:n] {
		evs[i] = c.Event()
		async = async && c.Decision.Action == policy.Allow && c.Decision.AsyncRecord && c.ApprovalID == ""
	}
	if n == 0 {
		return nil
	}
	if async {
		s.RecordAsync(evs...)
	} else if err := s.Record(ctx, evs...); err != nil {
		s.Log.Error("decision not recorded; denying", "err", err)
		for _, c := range cmds {
			c.Decision.Action = policy.Deny
			c.Decision.Reason = "the decision could not be recorded"
		}
		return fmt.Errorf("record decision: %w", err)
	}
	s.hold(cmds[:n])
	return nil
}

// AuthorizeNow is Authorize for a caller that must not wait (an event
// loop serving other sessions): if every command is allowed without an
// approval and the record can be written without waiting, it records
// them and returns true. false with a nil error: nothing was recorded and
// the decisions are as they were; call Authorize where waiting is
// allowed.
func (s *Session) AuthorizeNow(cmds ...*Command) (bool, error) {
	for _, c := range cmds {
		if c.Decision.Action == "" {
			c.Decision = s.Check(c.Classes...)
		}
		if c.Decision.Action != policy.Allow {
			return false, nil
		}
	}
	evs := make([]event.Event, len(cmds))
	for i, c := range cmds {
		evs[i] = c.Event()
	}
	ok, err := s.RecordNow(evs...)
	if err != nil {
		for _, c := range cmds {
			c.Decision.Action = policy.Deny
			c.Decision.Reason = "the decision could not be recorded"
		}
		return false, fmt.Errorf("record decision: %w", err)
	}
	if ok {
		s.hold(cmds)
	}
	return ok, nil
}

// decide settles every command's decision up to the first not allowed,
// waiting for approvers where asked, and returns how many were decided.
func (s *Session) decide(ctx context.Context, cmds []*Command) int {
	for i, c := range cmds {
		if c.Decision.Action == "" {
			c.Decision = s.Check(c.Classes...)
		}
		if c.Decision.Action == policy.Approve {
			s.approve(ctx, c)
		}
		if c.Decision.Action != policy.Allow {
			for _, later := range cmds[i+1:] {
				later.Decision = policy.Decision{Action: policy.Deny, RuleID: c.Decision.RuleID,
					Reason: "not run: an earlier command in the same batch was refused"}
			}
			return i + 1
		}
	}
	return len(cmds)
}

// approve waits for approvers on c and settles its decision.
func (s *Session) approve(ctx context.Context, c *Command) {
	d := c.Decision
	if len(c.Text) > maxApprovalText {
		// An approver must see all of what they approve.
		d.Action = policy.Deny
		d.Reason = fmt.Sprintf("not approved: the command (%d bytes) is too long to show an approver (limit %d); split it", len(c.Text), maxApprovalText)
		c.Decision = d
		return
	}
	out, err := s.ask(ctx, d, c.Text, c.Params, c.Notify)
	c.ApprovalID = out.ID
	if err == nil && out.Approved {
		d.Action, d.Reason = policy.Allow, cmp.Or(out.Reason, "approved")
	} else {
		reason := out.Reason
		if reason == "" && err != nil {
			reason = err.Error()
		}
		d.Action, d.Reason = policy.Deny, "not approved: "+reason
	}
	c.Decision = d
}

// hold notes the classes of allowed commands that hold them open.
func (s *Session) hold(cmds []*Command) {
	for _, c := range cmds {
		if c.Hold && c.Decision.Action == policy.Allow {
			s.admit(c.Classes...)
		}
	}
}

// Event is the record of c's decision. It is the one place a decision
// becomes an event.
func (c *Command) Event() event.Event {
	ev := event.Event{Kind: cmp.Or(c.Kind, event.KindCommand), Time: time.Now(), Text: c.Text, Params: c.Params,
		Decision: string(c.Decision.Action), RuleID: c.Decision.RuleID, ApprovalID: c.ApprovalID}
	if c.Decision.Action != policy.Allow {
		ev.Error = c.Decision.Reason
	}
	return ev
}
