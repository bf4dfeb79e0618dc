package ssh

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// directTCPIP is RFC 4254 §7.2's channel-open payload.
type directTCPIP struct {
	Host     string
	Port     uint32
	OrigHost string
	OrigPort uint32
}

// directTCPIP decides and bridges a local forward (ssh -L, ProxyJump):
// class forward, opened upstream first.
func (b *bridge) directTCPIP(ctx context.Context, nc ssh.NewChannel) {
	var p directTCPIP
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil {
		nc.Reject(ssh.ConnectionFailed, "loopgate: bad direct-tcpip request")
		return
	}
	dst := net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port)))
	cmd := &l7.Command{Text: "direct-tcpip " + dst, Classes: []string{ClassForward}, Hold: true,
		Params: fmt.Sprintf(`{"host":%q,"port":%d}`, p.Host, p.Port)}
	// A rule's command patterns may name destinations: "direct-tcpip
	// db1:5432" (or a glob) decides before the class.
	cmd.Decision = b.s.Policy().DecideCommand(b.s.Subject, forwardLine(dst))
	if err := b.s.Authorize(ctx, cmd); err != nil || cmd.Decision.Action != policy.Allow {
		reason := cmd.Decision.Reason
		if err != nil {
			reason = "the forward could not be recorded"
		}
		nc.Reject(ssh.Prohibited, "loopgate: "+reason)
		return
	}
	up, upReqs, err := b.up.client.OpenChannel("direct-tcpip", nc.ExtraData())
	if err != nil {
		b.s.RecordAsync(event.Event{Kind: event.KindResult, Text: cmd.Text, Error: err.Error()})
		rejectLike(nc, err)
		return
	}
	down, downReqs, err := nc.Accept()
	if err != nil {
		up.Close()
		return
	}
	b.track(down, up)
	start := time.Now()
	var in, out atomic.Int64
	var reqs, copies sync.WaitGroup
	reqs.Go(func() { ssh.DiscardRequests(upReqs) })
	reqs.Go(func() { ssh.DiscardRequests(downReqs) })
	copies.Go(func() { n, _ := io.Copy(up, down); in.Add(n); up.CloseWrite() })
	n, _ := io.Copy(down, up)
	out.Add(n)
	down.CloseWrite()
	copies.Wait()
	down.Close()
	up.Close()
	reqs.Wait()
	b.s.RecordAsync(event.Event{Kind: event.KindResult, Text: cmd.Text, Duration: time.Since(start), Bytes: in.Load() + out.Load(),
		Params: fmt.Sprintf(`{"bytes_up":%d,"bytes_down":%d}`, in.Load(), out.Load())})
}

// forwardLine is a forward as command patterns see it: the command
// "direct-tcpip HOST:PORT" of class forward.
func forwardLine(dst string) policy.CommandLine {
	argv := []string{"direct-tcpip", dst}
	return policy.CommandLine{Classes: []string{ClassForward}, Commands: []policy.LineCommand{
		{Argv: argv, Exec: argv, Classes: []string{ClassForward}, Plain: true}}}
}

// forwardPatterns reports whether the rule deciding s names forwards in
// allow or approve command patterns.
func forwardPatterns(s *l7.Session) bool {
	cfg := s.Policy()
	d := s.Check(ClassForward)
	for _, r := range cfg.Rules {
		if r.ID != d.RuleID || r.Commands == nil {
			continue
		}
		for _, p := range append(slices.Clone(r.Commands.Allow), r.Commands.Approve...) {
			if strings.HasPrefix(p, "direct-tcpip") {
				return true
			}
		}
	}
	return false
}
