package policy

import (
	"context"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"time"
)

// KernelFacts is what the kernel attested about a connecting process at
// connect() time, plus what the daemon read from /proc at accept. cmd copies
// them from intercept.Origin; policy never talks to the kernel itself.
type KernelFacts struct {
	TargetID   uint32
	WorkloadID uint32
	OrigDst    netip.AddrPort
	Client     netip.AddrPort
	PID        int
	TID        int
	UID        uint32
	GID        uint32
	CgroupID   uint64
	// CgroupPath is relative to the cgroup2 mount; empty if unknown.
	CgroupPath string
	Comm       string
	// Exe is /proc/PID/exe, read at accept and checked against the start
	// time the kernel recorded; empty if the process was gone.
	Exe string
	// ProcessStart is the process's start time (wall clock); together with
	// PID it names the process.
	ProcessStart time.Time
	NetnsCookie  uint64
	SocketCookie uint64
}

// Subject is who is connecting to what: the workload and target a
// connection belongs to, with the kernel facts that identified it.
type Subject struct {
	Workload string
	Target   *Target
	KernelFacts
	// Claims are the verified claims of the OIDC token the workload
	// presented in the protocol (nil if none).
	Claims *Claims
}

// Authenticate verifies a token the subject presented and binds its claims,
// checking them against the workload's requirement. An empty token is fine
// for a workload that needs none.
func (c *Config) Authenticate(ctx context.Context, v *Verifier, s *Subject, token string) error {
	w, ok := c.WorkloadByName(s.Workload)
	if !ok {
		return fmt.Errorf("workload %q is not configured", s.Workload)
	}
	if token == "" {
		return w.CheckToken(nil)
	}
	if v == nil {
		return fmt.Errorf("token presented but no oidc issuers configured: %w", ErrUntrustedIssuer)
	}
	claims, err := v.Verify(ctx, token)
	if err != nil {
		return err
	}
	if err := w.CheckToken(claims); err != nil {
		return err
	}
	s.Claims = claims
	return nil
}

// WorkloadMismatchError says a process is in a workload's cgroup but fails
// its uid or executable restriction.
type WorkloadMismatchError struct {
	Workload string
	Why      string
}

func (e *WorkloadMismatchError) Error() string {
	return fmt.Sprintf("process does not match workload %s: %s", e.Workload, e.Why)
}

// UnknownTargetError says a redirected connection names a target the current
// config does not have (it was removed by a reload in between).
type UnknownTargetError struct{ ID uint32 }

func (e *UnknownTargetError) Error() string {
	return fmt.Sprintf("unknown target id %#x: not in the current config", e.ID)
}

// Subject resolves kernel facts into a subject under this config. The
// workload comes from the kernel's workload id, or failing that the deepest
// workload cgroup containing the process; a target that is not configured is
// an error, so a stale redirect is refused rather than guessed.
func (c *Config) Subject(f KernelFacts) (*Subject, error) {
	s := &Subject{KernelFacts: f}
	t, ok := c.Target(f.TargetID)
	if !ok {
		return s, &UnknownTargetError{ID: f.TargetID}
	}
	s.Target = t
	w, ok := c.Workload(f.WorkloadID)
	if !ok && f.CgroupPath != "" {
		w, ok = c.WorkloadByCgroup(f.CgroupPath)
	}
	if !ok {
		return s, fmt.Errorf("process %d is in no configured workload", f.PID)
	}
	if len(w.UIDs) > 0 && !slices.Contains(w.UIDs, f.UID) {
		return s, &WorkloadMismatchError{Workload: w.Name, Why: fmt.Sprintf("uid %d not in %v", f.UID, w.UIDs)}
	}
	if len(w.Exes) > 0 && !slices.ContainsFunc(w.Exes, func(p string) bool { m, _ := path.Match(p, f.Exe); return m && f.Exe != "" }) {
		return s, &WorkloadMismatchError{Workload: w.Name, Why: fmt.Sprintf("executable %q not in %v", f.Exe, w.Exes)}
	}
	s.Workload = w.Name
	return s, nil
}
