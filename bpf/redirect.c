//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
//
// loopgate's kernel half. Attached to every workload cgroup, these programs
// decide at connect() time whether a socket's destination is a protected
// target; if so they remember who connected (from the kernel, not from the
// process) and rewrite the destination to the daemon's listener. The daemon
// reads that record back when it accepts the redirected connection.
//
// Programs:
//   cgroup/connect4, cgroup/connect6  redirect TCP to targets, refuse every
//                                     other protocol to targets, enforce
//                                     default: deny (TCP and UDP allow
//                                     entries; any other protocol refused)
//   sockops (TCP_CONNECT_CB)          publish the socket's record under its
//                                     full tuple once the local port is bound
//   cgroup/sendmsg4, cgroup/sendmsg6  the same for unconnected UDP datagrams
//   cgroup/getpeername4, 6            report a redirected socket's original
//                                     destination, not the listener
//   cgroup/sock_create                refuse raw sockets everywhere, and ICMP
//                                     (ping) sockets in default-deny
//                                     workloads
// Unix sockets are unix.c's (a separate object: its hooks need kernel 6.7).
//
// Every program fails closed: if the config entry is missing, the connection
// is refused, never sent direct.
//
// Addresses are stored as 16 bytes, IPv4 as v4-mapped IPv6 (::ffff:a.b.c.d),
// so one key shape serves both families. Ports are host byte order in every
// map key and value.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "common.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOCK_RAW 3
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7

char __license[] SEC("license") = "Dual BSD/GPL";

// Minimal CO-RE view of the kernel's task_struct: only the fields read here.
// Relocated against the running kernel's BTF at load time.
struct task_struct {
	struct task_struct *group_leader;
	__u64 start_boottime;
} __attribute__((preserve_access_index));

// targets: which destinations are protected.
//   key   target_key {addr (16, v4-mapped for IPv4), port (host order)}
//   value target_val {target id, an index into the daemon's config}
//   writer: daemon (on start, reload and DNS refresh); reader: connect4/6,
//   sendmsg4/6.
struct target_key {
	__u8 addr[16];
	__u16 port;
	__u16 _pad;
};

struct target_val {
	__u32 target_id;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct target_key);
	__type(value, struct target_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lg_targets SEC(".maps");

// allowed: extra destinations a default-deny workload may reach directly.
//   key   allow_key {workload id, addr (16), port (host order, 0 = any),
//         proto (IPPROTO_TCP or IPPROTO_UDP)}
//   value u8 (unused, 1)
//   writer: daemon; reader: connect4/6, sendmsg4/6.
struct allow_key {
	__u32 workload_id;
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct allow_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lg_allowed SEC(".maps");

// record: the kernel's account of a redirected connect().
//   Written by connect4/6 into the socket's local storage (lg_pending), copied
//   by sockops into lg_flows, read (and deleted) by the daemon at accept.
struct record {
	__u8 orig_addr[16];
	__u16 orig_port;
	__u16 family;
	__u32 target_id;
	__u32 workload_id;
	__u32 tgid;
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u32 _pad;
	__u64 cgroup_id;
	__u64 netns_cookie;
	__u64 socket_cookie;
	// start_boottime of the thread-group leader, ns since boot (the clock
	// /proc/PID/stat field 22 counts in ticks): with tgid it names a process.
	__u64 start_boottime;
	// ktime is bpf_ktime_get_ns() (CLOCK_MONOTONIC) at connect.
	__u64 ktime;
	char comm[16];
};

// pending: the record, per socket, between connect() and TCP_CONNECT_CB.
//   Freed by the kernel with the socket.
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct record);
} lg_pending SEC(".maps");

// flows: records of connections on their way to the listener.
//   key   flow_key {client addr+port, listener addr+port, netns cookie}
//   value record
//   writer: sockops at TCP_CONNECT_CB; deleted by sockops when the connect
//   fails (SYN_SENT -> CLOSE) and by the daemon when it accepts the flow.
//   LRU so flows the daemon never accepted cannot fill it.
struct flow_key {
	__u8 client_addr[16];
	__u8 listen_addr[16];
	__u16 client_port;
	__u16 listen_port;
	__u32 _pad;
	__u64 netns_cookie;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct record);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lg_flows SEC(".maps");

// ctx_u32 reads one 32-bit context field. Context arrays (user_ip6,
// local_ip6, ...) only allow 4-byte loads, and clang 14 otherwise merges two
// adjacent loads into one 8-byte load the verifier rejects.
#define ctx_u32(field) (*(volatile __u32 *)&(field))

static __always_inline void set_v4mapped(__u8 *dst, __u32 ip4)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &ip4, 4);
}

static __always_inline int is_v4mapped(const __u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff);
}

static __always_inline int allowed(__u32 workload_id, struct target_key *dst, __u8 proto)
{
	struct allow_key k = {};

	k.workload_id = workload_id;
	k.proto = proto;
	__builtin_memcpy(k.addr, dst->addr, 16);
	k.port = dst->port;
	if (bpf_map_lookup_elem(&lg_allowed, &k))
		return 1;
	k.port = 0;
	return bpf_map_lookup_elem(&lg_allowed, &k) != NULL;
}

static __always_inline __u64 process_start(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, group_leader, start_boottime);
}

static __always_inline int fill_record(struct bpf_sock_addr *ctx, struct target_key *dst,
				       __u32 target_id, __u16 family)
{
	struct record *r = bpf_sk_storage_get(&lg_pending, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!r)
		return -1;

	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	struct workload_val *w = find_workload();

	__builtin_memcpy(r->orig_addr, dst->addr, 16);
	r->orig_port = dst->port;
	r->family = family;
	r->target_id = target_id;
	r->workload_id = w ? w->workload_id : 0xffffffff;
	r->tgid = pid_tgid >> 32;
	r->tid = (__u32)pid_tgid;
	r->uid = (__u32)uid_gid;
	r->gid = uid_gid >> 32;
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->netns_cookie = bpf_get_netns_cookie(ctx);
	r->socket_cookie = bpf_get_socket_cookie(ctx);
	r->start_boottime = process_start();
	r->ktime = bpf_ktime_get_ns();
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	return 0;
}

// allow_proto is the allow-list protocol of a socket: IPPROTO_TCP or
// IPPROTO_UDP, or 0 for anything else (SCTP, UDP-Lite, MPTCP, ping), which
// no allow entry names.
static __always_inline __u8 allow_proto(struct bpf_sock_addr *ctx)
{
	if (ctx->type == SOCK_STREAM && ctx->protocol == IPPROTO_TCP)
		return IPPROTO_TCP;
	if (ctx->type == SOCK_DGRAM && ctx->protocol == IPPROTO_UDP)
		return IPPROTO_UDP;
	return 0;
}

// outbound decides a destination that is not a target: a default-deny
// workload reaches only its allow list, by that entry's protocol.
static __always_inline int outbound(struct bpf_sock_addr *ctx, struct target_key *dst)
{
	struct workload_val *w = find_workload();
	if (!w || !(w->flags & WORKLOAD_DEFAULT_DENY))
		return VERDICT_PASS;
	__u8 proto = allow_proto(ctx);
	if (proto && allowed(w->workload_id, dst, proto))
		return VERDICT_PASS;
	return VERDICT_REFUSE;
}

// decide handles a connect to dst by any protocol. It returns VERDICT_PASS
// with *redirect set when the caller must rewrite the destination. Only TCP
// is redirected; any other protocol to a target is refused.
static __always_inline int decide(struct bpf_sock_addr *ctx, struct config *cfg,
				  struct target_key *dst, int is_listener, __u16 family,
				  int *redirect)
{
	*redirect = 0;
	if (bpf_get_current_cgroup_id() == cfg->daemon_cgroup_id)
		return VERDICT_PASS;

	struct target_val *t = bpf_map_lookup_elem(&lg_targets, dst);
	int tcp = allow_proto(ctx) == IPPROTO_TCP;

	if (t) {
		if (!tcp)
			return VERDICT_REFUSE;
		if (fill_record(ctx, dst, t->target_id, family) < 0)
			return VERDICT_REFUSE;
		*redirect = 1;
		return VERDICT_PASS;
	}
	// A direct connect to the listener is let through so the daemon can
	// refuse and record it; it carries no record, so it gains nothing.
	if (is_listener && tcp)
		return VERDICT_PASS;
	return outbound(ctx, dst);
}

SEC("cgroup/connect4")
int lg_connect4(struct bpf_sock_addr *ctx)
{
	struct config *cfg = get_config();
	if (!cfg)
		return VERDICT_REFUSE;

	struct target_key dst = {};
	__u32 ip4 = ctx->user_ip4;
	set_v4mapped(dst.addr, ip4);
	dst.port = bpf_ntohs((__u16)ctx->user_port);

	__u32 listen4;
	__builtin_memcpy(&listen4, cfg->listen4, 4);
	int is_listener = ip4 == listen4 && dst.port == cfg->port;

	int redirect;
	int verdict = decide(ctx, cfg, &dst, is_listener, AF_INET, &redirect);
	if (verdict == VERDICT_PASS && redirect) {
		ctx->user_ip4 = listen4;
		ctx->user_port = bpf_htons(cfg->port);
	}
	return verdict;
}

SEC("cgroup/connect6")
int lg_connect6(struct bpf_sock_addr *ctx)
{
	struct config *cfg = get_config();
	if (!cfg)
		return VERDICT_REFUSE;

	__u32 ip6[4];
	ip6[0] = ctx_u32(ctx->user_ip6[0]);
	ip6[1] = ctx_u32(ctx->user_ip6[1]);
	ip6[2] = ctx_u32(ctx->user_ip6[2]);
	ip6[3] = ctx_u32(ctx->user_ip6[3]);

	struct target_key dst = {};
	__builtin_memcpy(dst.addr, ip6, 16);
	dst.port = bpf_ntohs((__u16)ctx->user_port);

	int mapped = is_v4mapped(ip6);
	__u32 listen4;
	__builtin_memcpy(&listen4, cfg->listen4, 4);
	__u32 l6[4];
	__builtin_memcpy(l6, cfg->listen6, 16);

	int is_listener = 0;
	if (dst.port == cfg->port) {
		if (mapped)
			is_listener = ip6[3] == listen4;
		else
			is_listener = cfg->has_listen6 && ip6[0] == l6[0] && ip6[1] == l6[1] &&
				      ip6[2] == l6[2] && ip6[3] == l6[3];
	}

	int redirect;
	int verdict = decide(ctx, cfg, &dst, is_listener, AF_INET6, &redirect);
	if (verdict == VERDICT_PASS && redirect) {
		// A v4-mapped destination means a dual-stack socket: send it to
		// the IPv4 listener. Otherwise use the IPv6 listener; with none,
		// fall back to v4-mapped (fails on an IPV6_V6ONLY socket: closed).
		if (mapped || !cfg->has_listen6) {
			ctx->user_ip6[0] = 0;
			ctx->user_ip6[1] = 0;
			ctx->user_ip6[2] = bpf_htonl(0xffff);
			ctx->user_ip6[3] = listen4;
		} else {
			ctx->user_ip6[0] = l6[0];
			ctx->user_ip6[1] = l6[1];
			ctx->user_ip6[2] = l6[2];
			ctx->user_ip6[3] = l6[3];
		}
		ctx->user_port = bpf_htons(cfg->port);
	}
	return verdict;
}

// datagram decides an unconnected UDP sendmsg to dst (a connected socket
// was decided at connect): never to a target, and under default: deny only
// to the allow list.
static __always_inline int datagram(struct bpf_sock_addr *ctx, struct target_key *dst)
{
	struct config *cfg = get_config();
	if (!cfg)
		return VERDICT_REFUSE;
	if (bpf_get_current_cgroup_id() == cfg->daemon_cgroup_id)
		return VERDICT_PASS;
	if (bpf_map_lookup_elem(&lg_targets, dst))
		return VERDICT_REFUSE;
	return outbound(ctx, dst);
}

SEC("cgroup/sendmsg4")
int lg_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct target_key dst = {};
	set_v4mapped(dst.addr, ctx->user_ip4);
	dst.port = bpf_ntohs((__u16)ctx->user_port);
	return datagram(ctx, &dst);
}

SEC("cgroup/sendmsg6")
int lg_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct target_key dst = {};
	__u32 ip6[4];
	ip6[0] = ctx_u32(ctx->user_ip6[0]);
	ip6[1] = ctx_u32(ctx->user_ip6[1]);
	ip6[2] = ctx_u32(ctx->user_ip6[2]);
	ip6[3] = ctx_u32(ctx->user_ip6[3]);
	__builtin_memcpy(dst.addr, ip6, 16);
	dst.port = bpf_ntohs((__u16)ctx->user_port);
	return datagram(ctx, &dst);
}

// getpeername on a redirected socket names the destination the process
// dialled, not the listener: clients that log or re-dial their peer (pgx's
// CancelRequest dials conn.RemoteAddr()) then reach the target again, and
// through loopgate again. Only sockets with a record (lg_pending) change.
// These hooks cannot refuse: they always return 1.
SEC("cgroup/getpeername4")
int lg_getpeername4(struct bpf_sock_addr *ctx)
{
	struct record *r = bpf_sk_storage_get(&lg_pending, ctx->sk, 0, 0);
	if (!r || r->family != AF_INET)
		return 1;
	__u32 ip4;
	__builtin_memcpy(&ip4, r->orig_addr + 12, 4);
	ctx->user_ip4 = ip4;
	ctx->user_port = bpf_htons(r->orig_port);
	return 1;
}

SEC("cgroup/getpeername6")
int lg_getpeername6(struct bpf_sock_addr *ctx)
{
	struct record *r = bpf_sk_storage_get(&lg_pending, ctx->sk, 0, 0);
	if (!r || r->family != AF_INET6)
		return 1;
	__u32 ip6[4];
	__builtin_memcpy(ip6, r->orig_addr, 16);
	ctx->user_ip6[0] = ip6[0];
	ctx->user_ip6[1] = ip6[1];
	ctx->user_ip6[2] = ip6[2];
	ctx->user_ip6[3] = ip6[3];
	ctx->user_port = bpf_htons(r->orig_port);
	return 1;
}

// Raw IP sockets could hand-craft packets to a target around connect().
// (AF_PACKET sockets never reach this hook; they need CAP_NET_RAW, which
// `loopgate run --user` drops.)
//
// ICMP (ping) sockets send echo requests with sendmsg, which no cgroup hook
// sees: a default-deny workload may not create them.
SEC("cgroup/sock_create")
int lg_sock_create(struct bpf_sock *sk)
{
	if (sk->type == SOCK_RAW)
		return VERDICT_REFUSE;
	if (sk->protocol == IPPROTO_ICMP || sk->protocol == IPPROTO_ICMPV6) {
		struct workload_val *w = find_workload();
		if (w && (w->flags & WORKLOAD_DEFAULT_DENY))
			return VERDICT_REFUSE;
	}
	return VERDICT_PASS;
}

static __always_inline void flow_key_of(struct bpf_sock_ops *skops, struct flow_key *k)
{
	if (skops->family == AF_INET) {
		set_v4mapped(k->client_addr, skops->local_ip4);
		set_v4mapped(k->listen_addr, skops->remote_ip4);
	} else {
		__u32 a[4], b[4];
		a[0] = ctx_u32(skops->local_ip6[0]);
		a[1] = ctx_u32(skops->local_ip6[1]);
		a[2] = ctx_u32(skops->local_ip6[2]);
		a[3] = ctx_u32(skops->local_ip6[3]);
		b[0] = ctx_u32(skops->remote_ip6[0]);
		b[1] = ctx_u32(skops->remote_ip6[1]);
		b[2] = ctx_u32(skops->remote_ip6[2]);
		b[3] = ctx_u32(skops->remote_ip6[3]);
		__builtin_memcpy(k->client_addr, a, 16);
		__builtin_memcpy(k->listen_addr, b, 16);
	}
	k->client_port = (__u16)skops->local_port;
	k->listen_port = (__u16)bpf_ntohl(skops->remote_port);
}

SEC("sockops")
int lg_sockops(struct bpf_sock_ops *skops)
{
	struct flow_key k = {};

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB: {
		struct bpf_sock *sk = skops->sk;
		if (!sk)
			return 1;
		struct record *r = bpf_sk_storage_get(&lg_pending, sk, 0, 0);
		if (!r)
			return 1;
		flow_key_of(skops, &k);
		k.netns_cookie = r->netns_cookie;
		bpf_map_update_elem(&lg_flows, &k, r, BPF_ANY);
		bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	}
	case BPF_SOCK_OPS_STATE_CB:
		// A connect that never left SYN_SENT never reached the listener's
		// queue: drop its flow. Established flows stay until the daemon
		// accepts them, even if the client has closed by then.
		if (skops->args[0] == TCP_SYN_SENT && skops->args[1] == TCP_CLOSE) {
			struct bpf_sock *sk = skops->sk;
			if (!sk)
				return 1;
			struct record *r = bpf_sk_storage_get(&lg_pending, sk, 0, 0);
			if (!r)
				return 1;
			flow_key_of(skops, &k);
			k.netns_cookie = r->netns_cookie;
			bpf_map_delete_elem(&lg_flows, &k);
		}
		break;
	}
	return 1;
}
