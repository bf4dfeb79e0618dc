package ssh

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/ssh/sftpwire"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// channel bridges one session channel: the agent's (down) and the
// target's (up). Requests from the agent are handled one at a time, in
// order, in the goroutine that runs serve; the agent's stdin does not flow
// until its exec, shell or subsystem has been answered (gate). mu guards
// exit and started.
type channel struct {
	b        *bridge
	s        *l7.Session
	down, up ssh.Channel

	gate     chan struct{} // closed: stdin may flow (the program's reply is relayed)
	gateOnce sync.Once
	done     chan struct{} // closed: the agent's requests ended
	pumps    sync.WaitGroup

	// Set by the request goroutine before the gate opens; read after.
	kind  string // exec, shell, subsystem
	text  string
	pty   *ptyReq
	masks []string
	cast  castRecorder
	sftp  *sftpFilter // the sftp subsystem's, once allowed
	// transfer: the program moves files over stdin/stdout (scp -t/-f,
	// rsync --server): its stdout is not masked, which would corrupt it.
	transfer bool
	// scpIn and scpOut follow a legacy scp exec for the record.
	scpIn, scpOut *scpWatch
	denied        bool
	started       time.Time

	in, out, errOut atomic.Int64

	mu   sync.Mutex
	exit string // "exit 7", "signal TERM"; "" unknown
	// outDone and exitSent say the target's output has ended and its exit
	// has been forwarded: the agent's EOF waits for both (or the close).
	outDone, exitSent bool
	eofOnce           sync.Once
}

// eofReady notes that the output ended (exit false) or the exit status
// went out (exit true), and sends the agent EOF once both have. x/crypto
// hands the target's EOF and its exit-status to different goroutines;
// an EOF overtaking the exit status lets the agent close first (it has
// sent its own EOF), and the exit status is lost (OpenSSH's
// ControlMaster then exits 255).
func (c *channel) eofReady(exit bool) {
	c.mu.Lock()
	if exit {
		c.exitSent = true
	} else {
		c.outDone = true
	}
	both := c.exitSent && c.outDone
	c.mu.Unlock()
	if both {
		c.sendEOF()
	}
}

func (c *channel) sendEOF() { c.eofOnce.Do(func() { c.down.CloseWrite() }) }

// ptyReq is RFC 4254 §6.2's pty-req payload.
type ptyReq struct {
	Term               string
	Cols, Rows, Wp, Hp uint32
	Modes              string
}

// windowChange is RFC 4254 §6.7's payload.
type windowChange struct{ Cols, Rows, Wp, Hp uint32 }

type exitStatus struct{ Status uint32 }

type exitSignal struct {
	Signal     string
	CoreDumped bool
	Error      string
	Lang       string
}

// session bridges a "session" channel. The target's channel is opened
// first, so its refusal reaches the agent with its reason.
func (b *bridge) session(ctx context.Context, nc ssh.NewChannel) {
	up, upReqs, err := b.up.client.OpenChannel("session", nc.ExtraData())
	if err != nil {
		rejectLike(nc, err)
		return
	}
	down, downReqs, err := nc.Accept()
	if err != nil {
		up.Close()
		return
	}
	b.track(down, up)
	c := &channel{b: b, s: b.s, down: down, up: up, gate: make(chan struct{}), done: make(chan struct{})}
	var wg sync.WaitGroup
	// The agent's extended data is drained so its window never pins
	// (go#80333); clients do not send any.
	wg.Go(b.safe(func() { io.Copy(io.Discard, down.Stderr()) }))
	wg.Go(b.safe(func() { c.stdin(ctx) }))
	wg.Go(b.safe(func() { c.upstreamRequests(upReqs) }))
	c.agentRequests(ctx, downReqs)
	close(c.done)
	up.Close()
	wg.Wait()
}

// agentRequests handles the agent's channel requests strictly in order:
// each is forwarded, and its reply relayed, before the next is read.
func (c *channel) agentRequests(ctx context.Context, reqs <-chan *ssh.Request) {
	// A reader notices the agent closing the channel while a request
	// waits (for approvers): the wait then ends, and the program never
	// runs for nobody. Requests keep their order through queue.
	queue := make(chan *ssh.Request, 16)
	gone := make(chan struct{})
	var reader sync.WaitGroup
	reader.Go(func() {
		defer close(queue)
		for r := range reqs {
			queue <- r
		}
		close(gone)
	})
	defer reader.Wait()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := make(chan struct{})
	defer close(stop)
	reader.Go(func() {
		select {
		case <-gone:
			cancel(l7.ErrClientGone)
		case <-stop:
		}
	})
	for r := range queue {
		switch r.Type {
		case "exec", "shell", "subsystem":
			if c.kind != "" || c.denied {
				r.Reply(false, nil) // one program per channel (RFC 4254 §6.5)
				continue
			}
			c.program(ctx, r)
		case "pty-req":
			var p ptyReq
			if err := ssh.Unmarshal(r.Payload, &p); err != nil {
				r.Reply(false, nil)
				continue
			}
			if c.forward(r) {
				c.pty = &p
			}
		case "window-change":
			var w windowChange
			if ssh.Unmarshal(r.Payload, &w) == nil {
				if c.pty != nil {
					c.pty.Cols, c.pty.Rows = w.Cols, w.Rows
				}
				if c.cast != nil {
					c.cast.Resize(int(w.Cols), int(w.Rows))
				}
			}
			c.forward(r)
		case "env":
			var e struct{ Name, Value string }
			if ssh.Unmarshal(r.Payload, &e) != nil || riskyEnv(e.Name) {
				// The command's parse cannot see what these change.
				c.s.RecordAsync(event.Event{Kind: event.KindDecision, Text: "env " + e.Name, Decision: string(policy.Deny),
					Error: "environment variable refused: it changes what commands run"})
				r.Reply(false, nil)
				continue
			}
			c.forward(r)
		case "signal", "break", "xon-xoff", "eow@openssh.com":
			c.forward(r)
		case "keepalive@openssh.com":
			r.Reply(false, nil) // answered here, never forwarded
		default:
			// auth-agent-req@openssh.com, x11-req and anything unknown.
			if r.Type == "auth-agent-req@openssh.com" || r.Type == "x11-req" {
				c.s.RecordAsync(event.Event{Kind: event.KindDecision, Text: r.Type, Decision: string(policy.Deny), Error: "forwarding refused"})
			}
			r.Reply(false, nil)
		}
	}
}

// riskyEnv reports whether an env request would change what a decided
// command runs (sshd's AcceptEnv is the target's say; this is loopgate's).
func riskyEnv(name string) bool {
	switch name {
	case "PATH", "ENV", "BASH_ENV", "PROMPT_COMMAND", "SHELLOPTS", "BASHOPTS", "IFS", "PS4", "CDPATH", "GLOBIGNORE":
		return true
	}
	return strings.HasPrefix(name, "LD_") || strings.HasPrefix(name, "BASH_FUNC_") || strings.ContainsAny(name, "=%() ")
}

// forward passes a request upstream and relays the reply.
func (c *channel) forward(r *ssh.Request) bool {
	ok, err := c.up.SendRequest(r.Type, r.WantReply, r.Payload)
	if err != nil {
		ok = false
	}
	r.Reply(ok, nil)
	return ok || !r.WantReply
}

// program decides an exec, shell or subsystem request and, if allowed,
// forwards it; the reply stays held while approvers decide.
func (c *channel) program(ctx context.Context, r *ssh.Request) {
	cmd := &l7.Command{Notify: func(req policy.Request) {
		fmt.Fprintf(c.down.Stderr(), "loopgate: waiting for approval %s (%s)%s", req.ID, req.Class, c.newline())
	}}
	switch r.Type {
	case "exec":
		var p struct{ Command string }
		if err := ssh.Unmarshal(r.Payload, &p); err != nil {
			r.Reply(false, nil)
			return
		}
		pr := classify(p.Command)
		cmd.Text, cmd.Params, cmd.Classes = p.Command, pr.JSON(), pr.Classes
		c.transfer = slices.Contains(pr.Classes, ClassFileRead) || slices.Contains(pr.Classes, ClassFileWrite)
		c.scpIn, c.scpOut = scpWatches(c.s, pr)
		// Command patterns first (deny wins), then classes.
		cmd.Decision = c.s.Policy().DecideCommand(c.s.Subject, pr.res.Line())
		if c.pty != nil && pr.res.Pager() {
			// On a terminal, systemctl and friends page through less,
			// which runs a shell on "!sh": the exec is a shell too.
			cmd.Classes = append(slices.Clone(cmd.Classes), ClassShell)
			if d := c.s.Check(ClassShell); stricter(d.Action, cmd.Decision.Action) {
				d.Reason += " (it pages through less on a terminal, which can run a shell; use --no-pager)"
				cmd.Decision = d
			}
		}
	case "shell":
		cmd.Text, cmd.Classes, cmd.Hold = "shell", []string{ClassShell}, true
		if c.pty != nil {
			cmd.Params = fmt.Sprintf(`{"pty":true,"term":%q}`, c.pty.Term)
		}
	case "subsystem":
		var p struct{ Name string }
		if err := ssh.Unmarshal(r.Payload, &p); err != nil {
			r.Reply(false, nil)
			return
		}
		cmd.Text = "subsystem " + p.Name
		switch p.Name {
		case "sftp":
			cmd.Classes = []string{ClassFileRead, ClassFileWrite}
			cmd.Decision = sftpSubsystem(c.s)
		default:
			cmd.Classes = []string{ClassUnknown}
			cmd.Decision = policy.Decision{Action: policy.Deny, Reason: fmt.Sprintf("subsystem %q is not supported", p.Name)}
		}
	}
	if err := c.s.Authorize(ctx, cmd); err != nil || cmd.Decision.Action != policy.Allow {
		c.deny(r, cmd)
		return
	}
	c.kind, c.text, c.masks, c.started = r.Type, cmd.Text, cmd.Decision.Masks, time.Now()
	if cmd.Text == "subsystem sftp" {
		c.sftp = &sftpFilter{c: c, tracker: sftpwire.NewTracker()}
	} else if c.pty != nil {
		c.cast = c.b.newCast(c.pty, cmd.Text)
	}
	// Output pumps count before the target can answer: its channel may
	// close the moment the program ends.
	c.startOutput()
	ok, err := c.up.SendRequest(r.Type, r.WantReply, r.Payload)
	r.Reply(ok && err == nil, nil)
	c.open()
}

// open lets stdin flow and the target's requests through, once the
// program's reply is relayed.
func (c *channel) open() { c.gateOnce.Do(func() { close(c.gate) }) }

// deny answers a refused program the legible way: success, the reason on
// stderr, exit status 126, and the channel closed.
func (c *channel) deny(r *ssh.Request, cmd *l7.Command) {
	c.denied = true
	r.Reply(true, nil)
	reason := cmd.Decision.Reason
	if reason == "" {
		reason = "denied"
	}
	fmt.Fprintf(c.down.Stderr(), "loopgate: %s%s", reason, c.newline())
	c.down.SendRequest("exit-status", false, ssh.Marshal(exitStatus{126}))
	c.down.CloseWrite()
	c.down.Close()
	c.up.Close()
}

// newline ends a line loopgate writes to the agent: a terminal (pty)
// needs the carriage return.
func (c *channel) newline() string {
	if c.pty != nil {
		return "\r\n"
	}
	return "\n"
}

// startOutput starts copying the target's stdout and stderr to the agent,
// each through its own masker; when both end the agent gets EOF.
func (c *channel) startOutput() {
	var outs sync.WaitGroup
	c.pumps.Add(1)
	// Nothing the program writes reaches the agent before the reply to
	// its exec (OpenSSH's ControlMaster loses the session's exit status
	// when data and EOF overtake that reply).
	wait := func() bool {
		select {
		case <-c.gate:
			return true
		case <-c.done:
			return false
		}
	}
	outs.Go(c.b.safe(func() {
		if !wait() {
			return
		}
		if c.sftp != nil {
			n, err := c.sftp.replies(c.up)
			c.out.Add(n)
			if err != nil {
				c.s.Log.Warn("sftp channel ended", "err", err)
				c.down.Close()
				c.up.Close()
			}
			return
		}
		var obs io.Writer
		if c.scpOut != nil {
			obs = c.scpOut
		}
		n, _ := c.copyOut(c.down, c.up, !c.transfer, obs)
		c.out.Add(n)
	}))
	outs.Go(c.b.safe(func() {
		if !wait() {
			return
		}
		n, _ := c.copyOut(c.down.Stderr(), c.up.Stderr(), true, nil)
		c.errOut.Add(n)
	}))
	go c.b.safe(func() {
		defer c.pumps.Done()
		outs.Wait()
		c.eofReady(false)
	})()
}

// stdin copies the agent's input upstream once the gate opens, then
// passes on its EOF.
func (c *channel) stdin(ctx context.Context) {
	select {
	case <-c.gate:
	case <-c.done:
		return
	}
	if c.sftp != nil {
		n, err := c.sftp.requests(ctx, c.up, c.down)
		c.in.Add(n)
		if err != nil {
			// A malformed or oversized packet, or too much in flight:
			// the channel cannot be followed any more.
			c.s.Log.Warn("sftp channel ended", "err", err)
			c.s.RecordAsync(event.Event{Kind: event.KindNote, Text: "sftp channel ended", Error: err.Error()})
			c.down.Close()
			c.up.Close()
			return
		}
		c.up.CloseWrite()
		return
	}
	var dst io.Writer = c.up
	if c.scpIn != nil {
		dst = io.MultiWriter(c.up, c.scpIn)
	}
	n, _ := io.Copy(dst, c.down)
	c.in.Add(n)
	c.up.CloseWrite()
}

// upstreamRequests relays the target's requests (exit-status,
// exit-signal, eow@openssh.com) until its channel closes, then closes the
// agent's after the output is through: exit status before close, never
// made up.
func (c *channel) upstreamRequests(reqs <-chan *ssh.Request) {
	for r := range reqs {
		if r.Type == "keepalive@openssh.com" {
			r.Reply(false, nil)
			continue
		}
		// Nothing of the program (its exit status) reaches the agent
		// before the reply to its exec: a fast program's exit-status
		// arrives while that reply is still on its way.
		select {
		case <-c.gate:
		case <-c.done:
		}
		switch r.Type {
		case "exit-status":
			var e exitStatus
			if ssh.Unmarshal(r.Payload, &e) == nil {
				c.setExit(fmt.Sprintf("exit %d", e.Status))
			}
		case "exit-signal":
			var e exitSignal
			if ssh.Unmarshal(r.Payload, &e) == nil {
				c.setExit("signal " + e.Signal)
			}
		}
		ok, err := c.down.SendRequest(r.Type, r.WantReply, r.Payload)
		r.Reply(ok && err == nil, nil)
		if r.Type == "exit-status" || r.Type == "exit-signal" {
			c.eofReady(true)
		}
	}
	c.pumps.Wait()
	c.sendEOF()
	c.down.Close()
	c.finish()
}

func (c *channel) setExit(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exit = s
}

// finish records how the program ended.
func (c *channel) finish() {
	if c.cast != nil {
		c.cast.Close()
	}
	if c.kind == "" {
		return
	}
	c.mu.Lock()
	exit := c.exit
	c.mu.Unlock()
	res := struct {
		Exit   string `json:"exit"`
		Stdin  int64  `json:"stdin_bytes"`
		Stdout int64  `json:"stdout_bytes"`
		Stderr int64  `json:"stderr_bytes"`
	}{exit, c.in.Load(), c.out.Load(), c.errOut.Load()}
	if exit == "" {
		res.Exit = "unknown" // the target closed without saying
	}
	js, _ := json.Marshal(res)
	c.s.RecordAsync(event.Event{Kind: event.KindResult, Text: c.text, Params: string(js), Tag: res.Exit,
		Duration: time.Since(c.started), Bytes: res.Stdin + res.Stdout + res.Stderr})
}

// rejectLike refuses an agent's channel the way the target refused ours.
func rejectLike(nc ssh.NewChannel, err error) {
	if oe, ok := err.(*ssh.OpenChannelError); ok {
		nc.Reject(oe.Reason, oe.Message)
		return
	}
	nc.Reject(ssh.ConnectionFailed, "loopgate: target refused the channel")
}

// stricter reports whether action a is stricter than b (deny, then
// approve, then allow).
func stricter(a, b policy.Action) bool {
	rank := func(x policy.Action) int {
		return slices.Index([]policy.Action{policy.Allow, policy.Approve, policy.Deny}, x)
	}
	return rank(a) > rank(b)
}
