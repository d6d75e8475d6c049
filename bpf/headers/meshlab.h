/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared constants, map key/value layouts and helpers of meshlab's eBPF arm.
 *
 * Byte order convention for everything stored in maps (the Python loader in
 * meshlab/ebpf/keys.py encodes the same layouts, keep them in sync):
 *   - IPv4 addresses: network byte order, exactly as the kernel exposes them in
 *     bpf_sock_addr.user_ip4 / bpf_sock_ops.local_ip4 / bpf_sock.src_ip4;
 *   - ports: host byte order (the kernel hands them out in three different
 *     encodings depending on the context struct; we normalise once, here).
 */
#ifndef MESHLAB_H
#define MESHLAB_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* vmlinux.h carries types and enums but no preprocessor constants. */
#define ML_AF_INET 2
#define ML_SOCK_STREAM 1
#define ML_SOL_IP 0
#define ML_SO_ORIGINAL_DST 80 /* linux/netfilter_ipv4.h */
#define ML_PAGE_SIZE 4096

/* Istio sidecar contract (research notes section 1.3). */
#define ML_SIDECAR_UID 1337
#define ML_OUTBOUND_PORT 15001 /* Envoy virtualOutbound */
#define ML_INBOUND_PORT 15006  /* Envoy virtualInbound */

/* 127.0.0.1 and 127.0.0.6 in network byte order. Envoy binds 127.0.0.6 as the
 * source of its inbound passthrough (sidecar -> own app) connections. */
#define ML_LOCALHOST bpf_htonl(0x7f000001)
#define ML_ENVOY_INBOUND_SRC bpf_htonl(0x7f000006)

/* Cgroup levels walked to find the pod cgroup of the caller (root is 0). */
#define ML_MAX_CGROUP_LEVEL 8

/* Original destination of a redirected connection. */
struct ml_origin {
	__u32 ip;    /* network order */
	__u16 port;  /* host order */
	__u16 flags; /* ML_ORIGIN_* */
};

#define ML_ORIGIN_OUTBOUND 1 /* app -> 127.0.0.1:15001 */
#define ML_ORIGIN_BYPASS 2   /* sidecar -> peer pod IP:15006 */

/* A TCP connection as seen from the socket whose key it is:
 * s* = that socket's local end, d* = its remote end. The peer socket's key is
 * the same four values swapped, which is what sk_msg looks up. */
struct ml_pair {
	__u32 sip;
	__u32 dip;
	__u16 sport;
	__u16 dport;
};

/* A pod as the loader registers it: its IP (network order) and the id of the
 * node it runs on (1, 2, ...). One kernel hosts every testbed node, so "on this
 * host" means "on the caller's node". */
struct ml_pod {
	__u32 ip;
	__u32 node;
};

/* Counter slots of the ml_stats per-CPU array (status reports the sums). */
enum ml_stat {
	ML_STAT_OUT_REDIRECT = 0, /* app connect rewritten to 127.0.0.1:15001 */
	ML_STAT_BYPASS,           /* sidecar connect rewritten to podIP:15006 */
	ML_STAT_POD_UNKNOWN,      /* caller's cgroup not mapped to a pod IP */
	ML_STAT_BIND_FAIL,        /* bpf_bind to the pod IP failed */
	ML_STAT_ORIG_DST_HIT,     /* SO_ORIGINAL_DST answered from our map */
	ML_STAT_ORIG_DST_MISS,    /* SO_ORIGINAL_DST asked, nothing recorded */
	ML_STAT_PAIR_RECORDED,    /* sockops copied an origin to the 4-tuple map */
	ML_STAT_SOCKHASH_ADD,     /* socket inserted into the sockhash */
	ML_STAT_SOCKHASH_FAIL,    /* bpf_sock_hash_update failed */
	ML_STAT_CROSS_NODE,       /* sidecar connect to a meshed pod on another node: untouched */
	/* Messages sk_msg spliced, per hop (the path evidence every trial records): */
	ML_STAT_MSG_OUTBOUND,     /* app <-> its sidecar's 15001 */
	ML_STAT_MSG_BYPASS,       /* sidecar <-> peer sidecar's 15006 */
	ML_STAT_MSG_INBOUND,      /* sidecar (127.0.0.6) <-> its app */
	ML_STAT_MAX,
};

#endif /* MESHLAB_H */
