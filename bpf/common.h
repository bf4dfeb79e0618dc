// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
//
// Definitions shared by redirect.c and unix.c: the maps both read (pinned
// by name, so the two objects see the same maps) and the workload lookup.

#ifndef LOOPGATE_COMMON_H
#define LOOPGATE_COMMON_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAX_CGROUP_DEPTH 32

#define VERDICT_REFUSE 0
#define VERDICT_PASS 1

// workload_val.flags
#define WORKLOAD_DEFAULT_DENY 1

// workloads: workload cgroups and their outbound policy.
//   key   cgroup id (u64, the cgroup2 directory's inode number)
//   value workload_val {workload id, flags}
//   writer: daemon; reader: connect4/6 (walks the caller's ancestors and
//   takes the deepest match).
struct workload_val {
	__u32 workload_id;
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct workload_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lg_workloads SEC(".maps");

// config: where the daemon listens and who the daemon is.
//   key   u32 0
//   value config
//   writer: daemon before any program is attached; reader: every program.
//   A missing entry makes every redirect-eligible connect fail (fail closed).
struct config {
	__u8 listen4[4];
	__u8 listen6[16];
	__u16 port;
	__u16 has_listen6;
	__u64 daemon_cgroup_id;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lg_config SEC(".maps");

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&lg_config, &zero);
}

// find_workload returns the deepest workload cgroup that contains the caller.
static __always_inline struct workload_val *find_workload(void)
{
	struct workload_val *found = NULL;

	for (int level = 0; level < MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		if (id == 0)
			break;
		struct workload_val *w = bpf_map_lookup_elem(&lg_workloads, &id);
		if (w)
			found = w;
	}
	return found;
}

#endif
