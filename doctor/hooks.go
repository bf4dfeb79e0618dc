package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/loopgate/loopgate/bpf"
	"github.com/loopgate/loopgate/intercept"
	"github.com/loopgate/loopgate/policy"
)

// hookName is a program's hook as the README names it: its section
// without "cgroup/" ("connect4", "sockops", "connect_unix").
func hookName(p *ebpf.ProgramSpec) string {
	return strings.TrimPrefix(p.SectionName, "cgroup/")
}

// checkHooks loads loopgate's own programs (the committed objects the
// daemon loads, through the verifier of this kernel) and attaches each to a
// scratch cgroup, then detaches them and removes the cgroup. Each hook is
// a line. The unix socket hooks (Linux 6.7) are a blocker only where the
// config has a default: deny workload, which they enforce.
func checkHooks(ctx context.Context, mount string, cfg *policy.Config, missing map[string]bool) []Check {
	redirect, err := bpf.LoadRedirect()
	if err != nil {
		return []Check{fail(Check{Name: "hooks"}, "read the bundled programs: "+err.Error(), "")}
	}
	unixSpec, err := bpf.LoadUnix()
	if err != nil {
		return []Check{fail(Check{Name: "hooks"}, "read the bundled programs: "+err.Error(), "")}
	}
	denyNeedsUnix := ""
	if cfg != nil {
		for _, w := range cfg.Workloads {
			if w.DefaultDeny {
				denyNeedsUnix = w.Name
				break
			}
		}
	}
	var out []Check
	if mount == "" {
		for _, s := range []*ebpf.CollectionSpec{redirect, unixSpec} {
			for _, p := range sortedPrograms(s) {
				out = append(out, skip(Check{Name: "hook " + hookName(p)}, "no cgroup v2 to attach to"))
			}
		}
		return out
	}
	scratch := filepath.Join(mount, fmt.Sprintf("loopgate.doctor-%d", os.Getpid()))
	if err := os.Mkdir(scratch, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return []Check{fail(Check{Name: "hooks"}, "create a scratch cgroup: "+err.Error(), "run loopgate doctor as root")}
	}
	defer unix.Rmdir(scratch)

	out = append(out, probeCollection(redirect, nil, scratch, missing, func(c Check, err error) Check {
		return fail(c, err.Error(), fmt.Sprintf("loopgate needs this hook: use Linux %d.%d or newer with CONFIG_CGROUP_BPF=y, and run doctor as root", minKernel[0], minKernel[1]))
	})...)
	unixErr := intercept.UnixHooks()
	out = append(out, probeCollection(unixSpec, unixErr, scratch, missing, func(c Check, err error) Check {
		fix := "Linux 6.7 or newer covers unix sockets; until then default: deny workloads can reach any unix socket"
		if denyNeedsUnix != "" {
			return fail(c, err.Error()+"; workload "+denyNeedsUnix+" is default: deny", fix)
		}
		return warn(c, err.Error()+"; no workload is default: deny, so nothing depends on it yet", fix)
	})...)
	return out
}

// probeCollection loads coll's programs and attaches each to the cgroup
// at dir, one line per program; absent (not nil) says the whole set is
// known missing. A failure becomes what bad makes of it.
func probeCollection(spec *ebpf.CollectionSpec, absent error, dir string, missing map[string]bool, bad func(Check, error) Check) []Check {
	progs := sortedPrograms(spec)
	var out []Check
	var coll *ebpf.Collection
	if absent == nil {
		// A probe: private maps, nothing pinned beside the daemon's.
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinNone
		}
		var err error
		coll, err = ebpf.NewCollection(spec)
		if err != nil {
			absent = fmt.Errorf("load: %w", verifierSummary(err))
		} else {
			defer coll.Close()
		}
	}
	for _, p := range progs {
		c := Check{Name: "hook " + hookName(p)}
		if missing[hookName(p)] {
			out = append(out, bad(c, fmt.Errorf("cgroup/%s not attachable (simulated by --simulate-missing)", hookName(p))))
			continue
		}
		if absent != nil {
			out = append(out, bad(c, absent))
			continue
		}
		var prog *ebpf.Program
		for name, ps := range spec.Programs {
			if ps == p {
				prog = coll.Programs[name]
			}
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: dir, Attach: p.AttachType, Program: prog})
		if err != nil {
			out = append(out, bad(c, fmt.Errorf("attach: %w", err)))
			continue
		}
		l.Close()
		out = append(out, ok_(c, "loaded and attached ("+p.AttachType.String()+")"))
	}
	return out
}

// sortedPrograms lists a spec's programs by section name.
func sortedPrograms(spec *ebpf.CollectionSpec) []*ebpf.ProgramSpec {
	var ps []*ebpf.ProgramSpec
	for _, p := range spec.Programs {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].SectionName < ps[j].SectionName })
	return ps
}

// verifierSummary keeps a verifier error to its last line: the log is
// thousands of lines long.
func verifierSummary(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) && len(ve.Log) > 0 {
		for i := len(ve.Log) - 1; i >= 0; i-- {
			if l := strings.TrimSpace(ve.Log[i]); l != "" && !strings.HasPrefix(l, "processed ") {
				return fmt.Errorf("%v: %s", ve.Cause, l)
			}
		}
	}
	return err
}
