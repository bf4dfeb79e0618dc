// Package intercept is loopgate's kernel side: it finds the cgroup2 mount
// (from /proc/mounts, never assuming /sys/fs/cgroup), creates workload
// cgroups, loads the programs of package bpf, attaches them to each workload
// cgroup with bpf_link and pins links and maps under bpffs, keeps the
// kernel's target, workload and allow maps in step with the config, and
// accepts redirected connections, returning each with the Origin the kernel
// recorded for it.
//
// Lifecycle: Open loads the programs (unix.c's only where the kernel has
// the unix hooks: UnixHooks, UnixCovered) and clears flow records an
// earlier daemon left; Apply attaches (replacing the programs of pinned
// links from an earlier daemon atomically, so enforcement has no gap) and
// updates maps; Close releases this process's handles but leaves the pins,
// so redirection stays in force and fails closed while no daemon listens.
// Teardown is the only way redirection ends.
//
// Traps: an Origin is only as good as the flow record the kernel wrote; a
// connection that reaches the listener without one, or whose client socket
// is not the socket the record was written for (sockdiag.go: tuple plus
// socket cookie, checked by the kernel), is returned with ErrNoOrigin and
// must be refused. /proc facts (executable, start time) are read at accept
// and checked against the start time the kernel recorded, so a reused PID
// is never taken for the process that connected.
//
// This package parses no L7 protocol.
package intercept
