// Package doctor says whether this host can run loopgate and what is weaker
// here: the kernel and its BTF, cgroup v2, bpffs, every eBPF hook loopgate
// attaches (tried for real on a scratch cgroup), the sysctls that widen
// what an agent can do, the config, the permissions of the store and its
// keys, the API socket and the clock.
//
// Run returns one Check per line; a Check with StatusFail is a blocker. It
// changes nothing on the host except a scratch cgroup it creates, attaches
// the programs to and removes again. cmd/loopgate's `doctor` prints the
// checks as a table or JSON.
package doctor

import (
	"context"
	"time"
)

// Status is a check's verdict.
type Status string

// The verdicts. Fail is a blocker: loopgate cannot run, or runs unsafely.
// Warn is a weaker protection than loopgate can give elsewhere. Skip means
// the check could not be made (it depends on one that failed).
const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
	StatusSkip Status = "skip"
)

// Check is one line of the report.
type Check struct {
	// Name is a short stable identifier ("kernel", "hook connect4").
	Name string `json:"name"`
	// Status is the verdict.
	Status Status `json:"status"`
	// Detail is what was found.
	Detail string `json:"detail"`
	// Fix says what to do about a warn or fail; empty for ok.
	Fix string `json:"fix,omitempty"`
}

// Options say what to check.
type Options struct {
	// ConfigPath is the config to validate and take the store, keys and
	// API socket from.
	ConfigPath string
	// Missing names hooks ("connect_unix") to report as absent from the
	// kernel, to see what doctor and the daemon say on a kernel without
	// them. Reported lines say the absence is simulated.
	Missing map[string]bool
	// Now is the clock (time.Now if nil).
	Now func() time.Time
}

// Run makes every check, in the order of the report.
func Run(ctx context.Context, opts Options) []Check {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var out []Check
	out = append(out, checkKernel(), checkBTF())
	cg := checkCgroup()
	out = append(out, cg.Check, checkBPFFS())
	cfg, cfgCheck := checkConfig(opts.ConfigPath)
	out = append(out, checkHooks(ctx, cg.mount, cfg, opts.Missing)...)
	out = append(out, checkTIOCSTI(), checkUserNS(), cfgCheck)
	out = append(out, checkStore(cfg)...)
	out = append(out, checkAPI(ctx, cfg), checkClock(opts.Now()))
	return out
}

// Blocked reports whether any check failed.
func Blocked(checks []Check) bool {
	for _, c := range checks {
		if c.Status == StatusFail {
			return true
		}
	}
	return false
}
