//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
//
// Unix-socket half of the boundary: a default-deny workload reaches only the
// unix socket paths on its allow list. Without it a deny workload could
// reach, say, PostgreSQL's socket directory directly (`psql -h
// /run/postgresql`), which on a host with `local ... trust` is superuser.
//
// Programs (kernel 6.7+, so a separate object that the daemon loads only
// where the kernel has these attach types; it says so when it cannot):
//   cgroup/connect_unix   connect() of stream, seqpacket and datagram sockets
//   cgroup/sendmsg_unix   sendto()/sendmsg() with an address on datagram
//                         sockets
//
// The path is compared as the process gave it, byte for byte: a relative
// path, a symlink or another spelling of an allowed socket is refused (fail
// closed). An allowed path must therefore live in a directory the workload
// cannot write, or the workload could put its own symlink there.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "common.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#define UNIX_PATH_BYTES 128 // sun_path is 108; a power of two bounds reads

// Minimal CO-RE view of the context a sock_addr program runs with (struct
// bpf_sock_addr_kern): the address the process passed and its length.
struct bpf_sock_addr_kern {
	void *uaddr;
	__u32 uaddrlen;
} __attribute__((preserve_access_index));

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

// allowed_unix: unix socket addresses a default-deny workload may reach.
//   key   unix_allow_key {workload id, len, path}
//         a pathname socket has len 0 and path NUL-padded after its first
//         NUL; an abstract socket has path[0] == 0 and len the bytes of its
//         name including that leading NUL.
//   value u8 (unused, 1)
//   writer: daemon; reader: connect_unix, sendmsg_unix.
struct unix_allow_key {
	__u32 workload_id;
	__u32 len;
	__u8 path[UNIX_PATH_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct unix_allow_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lg_allowed_unix SEC(".maps");

// unix_decide refuses a unix address unless the caller is outside every
// default-deny workload, or the address is on its workload's allow list.
static __always_inline int unix_decide(struct bpf_sock_addr *ctx)
{
	struct config *cfg = get_config();
	if (!cfg)
		return VERDICT_REFUSE;
	if (bpf_get_current_cgroup_id() == cfg->daemon_cgroup_id)
		return VERDICT_PASS;
	struct workload_val *w = find_workload();
	if (!w || !(w->flags & WORKLOAD_DEFAULT_DENY))
		return VERDICT_PASS;

	struct bpf_sock_addr_kern *sa = bpf_cast_to_kern_ctx(ctx);
	__u32 len = sa->uaddrlen;
	void *uaddr = sa->uaddr;
	// sun_family (2 bytes), then at least one byte of name.
	if (len <= 2 || len > 2 + 108)
		return VERDICT_REFUSE;
	__u32 n = (len - 2) & (UNIX_PATH_BYTES - 1);

	struct unix_allow_key k = {};
	k.workload_id = w->workload_id;
	if (bpf_probe_read_kernel(k.path, n, uaddr + 2) < 0)
		return VERDICT_REFUSE;
	if (k.path[0] == 0) {
		k.len = n; // abstract: the name is exactly its bytes
	} else {
		// A pathname ends at its first NUL, whatever length was passed.
		int end = 0;
#pragma clang loop unroll(full)
		for (int i = 0; i < UNIX_PATH_BYTES; i++) {
			if (end)
				k.path[i] = 0;
			else if (k.path[i] == 0)
				end = 1;
		}
	}
	if (bpf_map_lookup_elem(&lg_allowed_unix, &k))
		return VERDICT_PASS;
	return VERDICT_REFUSE;
}

SEC("cgroup/connect_unix")
int lg_connect_unix(struct bpf_sock_addr *ctx)
{
	return unix_decide(ctx);
}

SEC("cgroup/sendmsg_unix")
int lg_sendmsg_unix(struct bpf_sock_addr *ctx)
{
	return unix_decide(ctx);
}
