package intercept

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf/btf"
)

// UnixHooks reports whether this kernel has the cgroup unix socket hooks
// (cgroup/connect_unix and cgroup/sendmsg_unix, Linux 6.7), or why not. It
// asks the kernel's BTF for the attach types, so a backport counts and a
// version number is not trusted. The answer is cached.
var UnixHooks = sync.OnceValue(func() error {
	return kernelEnum("bpf_attach_type", "BPF_CGROUP_UNIX_CONNECT", "BPF_CGROUP_UNIX_SENDMSG")
})

// ErrNoUnixHooks marks a kernel without the unix socket hooks: unix sockets
// are then not covered by default: deny.
var ErrNoUnixHooks = errors.New("kernel lacks cgroup/connect_unix and cgroup/sendmsg_unix (Linux 6.7+): unix sockets are not covered")

// kernelEnum checks that the kernel's BTF has every named value of enum.
func kernelEnum(enum string, values ...string) error {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("%w: read kernel BTF: %v", ErrNoUnixHooks, err)
	}
	var e *btf.Enum
	if err := spec.TypeByName(enum, &e); err != nil {
		return fmt.Errorf("%w: %v", ErrNoUnixHooks, err)
	}
	have := map[string]bool{}
	for _, v := range e.Values {
		have[v.Name] = true
	}
	for _, v := range values {
		if !have[v] {
			return fmt.Errorf("%w (no %s)", ErrNoUnixHooks, v)
		}
	}
	return nil
}
