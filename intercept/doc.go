// Package intercept is loopgate's kernel side: it finds the cgroup2 mount
// (from /proc/mounts, never assuming /sys/fs/cgroup), creates workload
// cgroups, loads the programs of package bpf, attaches them to each workload
// cgroup with bpf_link and pins links and maps under bpffs, keeps the
// kernel's target, workload and allow maps in step with the config, and
// accepts redirected connections, returning each with the Origin the kernel
// recorded for it.
//
// Lifecycle: Setup loads and attaches (replacing the programs of pinned links
// from an earlier daemon atomically, so enforcement has no gap); Sync updates
// maps; Close releases this process's handles but leaves the pins, so
// redirection stays in force and fails closed while no daemon listens.
// Teardown is the only way redirection ends.
//
// Traps: an Origin is only as good as the flow record the kernel wrote; a
// connection that reaches the listener without one is returned with
// ErrNoOrigin and must be refused. /proc facts (executable, start time) are
// read at accept and checked against the start time the kernel recorded, so a
// reused PID is never taken for the process that connected.
//
// This package parses no L7 protocol.
package intercept
