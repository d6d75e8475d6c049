/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Maps shared by all meshlab programs. Every object file includes this header,
 * so every object declares every map; the loader creates them once (from the
 * first object) and makes the later objects reuse the pinned ones by name.
 * Names are kept under 16 bytes so the kernel's copy of the name is the full
 * name (bpftool map show / status output match this file).
 */
#ifndef MESHLAB_MAPS_H
#define MESHLAB_MAPS_H

#include "meshlab.h"

#define ML_CONN_ENTRIES 65535

/* socket cookie -> original destination. Written by connect4 before it
 * rewrites the address; consumed by sockops once the ephemeral port is known.
 * LRU: entries of connects that never establish age out on their own. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ML_CONN_ENTRIES);
	__type(key, __u64);
	__type(value, struct ml_origin);
} ml_cookie_dst SEC(".maps");

/* 4-tuple (connecting side's view) -> original destination. The getsockopt
 * hook on the accepting socket cannot see the connecting socket's cookie, but
 * it can rebuild this key from its own addresses. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ML_CONN_ENTRIES);
	__type(key, struct ml_pair);
	__type(value, struct ml_origin);
} ml_pair_dst SEC(".maps");

/* 4-tuple -> socket, the sk_msg redirect target. The value size is 8 so a
 * lookup from user space returns the socket cookie (status can dump it). The
 * kernel removes a socket from the map when it closes. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, ML_CONN_ENTRIES);
	__type(key, struct ml_pair);
	__type(value, __u64);
} ml_sock_pairs SEC(".maps");

/* Meshed pod IPs (filled by the loader) -> the node each runs on. Sidecar
 * traffic to one of these on the caller's own node goes straight to that pod's
 * inbound port (same-node bypass); Merbridge's local_pod_ips holds only the
 * node's own pods, this one map serves every testbed node. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);   /* pod IP, network order */
	__type(value, __u32); /* node id */
} ml_pod_ips SEC(".maps");

/* cgroup id of a pod cgroup -> that pod (filled by the loader). Lets connect4
 * know "which pod, on which node, am I in" without Merbridge's netns socket
 * probing. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct ml_pod);
} ml_cgroup_pods SEC(".maps");

/*
 * Run-time switches set by the loader. splice gates the stack bypass: while it
 * is 0, sockops inserts nothing and the verdict redirects nothing. The loader
 * clears it, waits for queued data to be read, and only then empties the
 * sockhash (removing a socket from a sockmap discards data still queued on its
 * ingress list), and sets it again only while the sockhash is empty (so no
 * connection ever goes from the TCP path back to the redirect path, which
 * could let later bytes overtake earlier ones at the reader).
 */
struct ml_config {
	__u32 splice;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ml_config);
} ml_config SEC(".maps");

static __always_inline bool ml_splice_enabled(void)
{
	__u32 zero = 0;
	/* Array lookups with a constant key are inlined by the verifier:
	 * a few instructions on the per-message path. */
	struct ml_config *cfg = bpf_map_lookup_elem(&ml_config, &zero);

	return cfg && cfg->splice;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ML_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ml_stats SEC(".maps");

static __always_inline void ml_count(enum ml_stat slot)
{
	__u32 key = slot;
	__u64 *v = bpf_map_lookup_elem(&ml_stats, &key);

	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

#endif /* MESHLAB_MAPS_H */
