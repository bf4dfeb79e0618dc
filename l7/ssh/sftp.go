package ssh

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/ssh/sftpwire"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// sftpFilter decides an sftp subsystem operation by operation, passively:
// the agent's packets are reassembled, each request that names a path
// (open, remove, rename, mkdir, setstat, ...) is decided by its class
// (file-read or file-write) and forwarded unchanged or answered here with
// PERMISSION_DENIED; requests on a handle ride on their open's decision.
// The target's replies are framed too, so a denial never lands inside one
// of them, and paired with their requests for the record. mu guards
// tracker and serializes writes to the agent.
type sftpFilter struct {
	c *channel

	mu      sync.Mutex
	tracker *sftpwire.Tracker
}

// sftpSubsystem decides whether an sftp subsystem may start: unless the
// rule denies both file classes, it does, and each operation is decided
// on its own.
func sftpSubsystem(s *l7.Session) policy.Decision {
	r, w := s.Check(ClassFileRead), s.Check(ClassFileWrite)
	if r.Action == policy.Deny && w.Action == policy.Deny {
		return r
	}
	d := r
	if r.Action == policy.Deny {
		d = w
	}
	d.Action, d.Reason = policy.Allow, "sftp: each operation is decided on its own"
	return d
}

// requests reads the agent's sftp packets until EOF and forwards or
// answers each.
func (f *sftpFilter) requests(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	dec := sftpwire.NewDecoder(0)
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, rerr := src.Read(buf)
		n += int64(m)
		dec.Feed(buf[:m])
		for {
			frame, err := dec.Next()
			if err != nil {
				return n, fmt.Errorf("sftp from agent: %w", err)
			}
			if frame == nil {
				break
			}
			if err := f.request(ctx, dst, frame); err != nil {
				return n, err
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = nil
			}
			return n, rerr
		}
	}
}

func (f *sftpFilter) request(ctx context.Context, dst io.Writer, frame []byte) error {
	q, err := sftpwire.ParseRequest(frame)
	if err != nil {
		return fmt.Errorf("sftp from agent: %w", err)
	}
	if q.Type != sftpwire.TypeInit && !q.OnHandle {
		if d, ok := f.decide(ctx, q); !ok {
			rec := f.tracker.Denied(q, d.Reason)
			f.record(rec)
			f.mu.Lock()
			_, err := f.c.down.Write(sftpwire.Status(q.ID, sftpwire.StatusPermissionDenied, "loopgate: "+d.Reason))
			f.mu.Unlock()
			return err
		}
	}
	f.mu.Lock()
	err = f.tracker.Request(q)
	f.mu.Unlock()
	if err != nil {
		return err
	}
	_, err = dst.Write(frame)
	return err
}

// decide decides a request that names a path. A metadata read the policy
// allows is not recorded (sftp clients stat and realpath constantly);
// everything else goes through Authorize.
func (f *sftpFilter) decide(ctx context.Context, q sftpwire.Request) (policy.Decision, bool) {
	s := f.c.s
	if q.Quiet {
		if d := s.Check(q.Class); d.Action == policy.Allow {
			return d, true
		}
	}
	text := "sftp " + q.Op
	if p := q.Paths(); len(p) > 0 {
		text += " " + strings.Join(p, " ")
	}
	params, _ := json.Marshal(struct {
		Op     string `json:"op"`
		Path   string `json:"path,omitempty"`
		Target string `json:"target,omitempty"`
		Flags  uint32 `json:"flags,omitempty"`
	}{q.Op, q.Path, q.Target, q.Flags})
	cmd := &l7.Command{Text: text, Params: string(params), Classes: []string{q.Class}}
	if err := s.Authorize(ctx, cmd); err != nil || cmd.Decision.Action != policy.Allow {
		return cmd.Decision, false
	}
	return cmd.Decision, true
}

// replies copies the target's sftp packets to the agent whole and records
// each operation as it finishes.
func (f *sftpFilter) replies(src io.Reader) (int64, error) {
	dec := sftpwire.NewDecoder(0)
	buf := make([]byte, 64<<10)
	var n int64
	defer func() {
		f.mu.Lock()
		left := f.tracker.Close()
		f.mu.Unlock()
		for _, rec := range left {
			f.record(rec)
		}
	}()
	for {
		m, rerr := src.Read(buf)
		dec.Feed(buf[:m])
		for {
			frame, err := dec.Next()
			if err != nil {
				return n, fmt.Errorf("sftp from target: %w", err)
			}
			if frame == nil {
				break
			}
			p, perr := sftpwire.ParseReply(frame)
			f.mu.Lock()
			var rec sftpwire.Record
			var done bool
			if perr == nil {
				rec, done, err = f.tracker.Reply(p)
			}
			_, werr := f.c.down.Write(frame)
			f.mu.Unlock()
			n += int64(len(frame))
			if werr != nil {
				return n, werr
			}
			if err != nil {
				return n, err
			}
			if done && !(rec.Quiet && rec.Status == sftpwire.StatusOK) {
				f.record(rec)
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = nil
			}
			return n, rerr
		}
	}
}

// record writes one finished operation.
func (f *sftpFilter) record(rec sftpwire.Record) {
	text := "sftp " + rec.Op + " " + rec.Path
	if rec.Target != "" {
		text += " " + rec.Target
	}
	js, _ := json.Marshal(struct {
		Op      string `json:"op"`
		Path    string `json:"path"`
		Target  string `json:"target,omitempty"`
		Class   string `json:"class"`
		Read    int64  `json:"bytes_read"`
		Written int64  `json:"bytes_written"`
		Status  string `json:"status"`
		Denied  bool   `json:"denied,omitempty"`
	}{rec.Op, rec.Path, rec.Target, rec.Class, rec.Read, rec.Written, rec.StatusText, rec.Denied})
	ev := event.Event{Kind: event.KindResult, Text: text, Params: string(js), Tag: rec.StatusText, Bytes: rec.Read + rec.Written}
	if rec.Status != sftpwire.StatusOK {
		ev.Error = rec.StatusText
	}
	f.c.s.RecordAsync(ev)
}
