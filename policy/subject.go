package policy

import (
	"fmt"
	"net/netip"
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
	if w, ok := c.Workload(f.WorkloadID); ok {
		s.Workload = w.Name
	} else if w, ok := c.WorkloadByCgroup(f.CgroupPath); ok && f.CgroupPath != "" {
		s.Workload = w.Name
	}
	return s, nil
}
