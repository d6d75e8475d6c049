// SPDX-License-Identifier: Apache-2.0
/*
 * sockops: runs for TCP sockets of the pod cgroups on state events. We only
 * use the two "established" callbacks, which the kernel always invokes (no
 * bpf_sock_ops_cb_flags_set needed).
 *
 * Ordering that makes the design work: the connecting side's
 * ACTIVE_ESTABLISHED_CB runs while it processes the SYN-ACK, before it sends
 * the final ACK; the accepting side's PASSIVE_ESTABLISHED_CB runs when that
 * ACK arrives and the child socket is created. So by the time the accepting
 * side is established (and long before Envoy can call getsockopt on it) the
 * 4-tuple record exists.
 *
 * Two programs, one per arm:
 *   ml_sockops_rec  (ebpf-connect) only moves cookie -> 4-tuple, which the
 *                   getsockopt hook needs: connect4 cannot key by 4-tuple itself
 *                   because the ephemeral port is chosen after it ran.
 *   ml_sockops      (ebpf) also inserts both ends of every mesh connection into
 *                   the sockhash so ml_redir can splice their writes.
 */
#include "meshlab.h"
#include "maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Key of this socket: (local -> remote). */
static __always_inline void ml_sockops_key(struct bpf_sock_ops *skops, struct ml_pair *key)
{
	key->sip = skops->local_ip4;
	key->dip = skops->remote_ip4;
	key->sport = (__u16)skops->local_port; /* host order */
	/* remote_port holds the big-endian port in its upper 16 bits on
	 * little-endian hosts (the kernel shifts it there), so ntohl yields the
	 * host-order port on either endianness. */
	key->dport = (__u16)bpf_ntohl(skops->remote_port);
}

/* Connecting side: if connect4 rewrote this socket, publish its origin under
 * the 4-tuple. Returns true if it did. */
static __always_inline bool ml_record_pair(struct bpf_sock_ops *skops, struct ml_pair *key)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct ml_origin *origin = bpf_map_lookup_elem(&ml_cookie_dst, &cookie);

	if (!origin)
		return false;
	bpf_map_update_elem(&ml_pair_dst, key, origin, BPF_ANY);
	bpf_map_delete_elem(&ml_cookie_dst, &cookie);
	ml_count(ML_STAT_PAIR_RECORDED);
	return true;
}

static __always_inline void ml_sockhash_add(struct bpf_sock_ops *skops, struct ml_pair *key)
{
	/* While the loader is draining the sockhash, new connections stay on
	 * the TCP path for their whole life (see ml_config in maps.h). */
	if (!ml_splice_enabled())
		return;
	if (bpf_sock_hash_update(skops, &ml_sock_pairs, key, BPF_ANY))
		ml_count(ML_STAT_SOCKHASH_FAIL);
	else
		ml_count(ML_STAT_SOCKHASH_ADD);
}

SEC("sockops")
int ml_sockops_rec(struct bpf_sock_ops *skops)
{
	struct ml_pair key = {};

	if (skops->family != ML_AF_INET || skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	ml_sockops_key(skops, &key);
	ml_record_pair(skops, &key);
	return 1;
}

SEC("sockops")
int ml_sockops(struct bpf_sock_ops *skops)
{
	struct ml_pair key = {};
	struct ml_pair peer;

	if (skops->family != ML_AF_INET)
		return 1;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		ml_sockops_key(skops, &key);
		/* A redirected connection (app->sidecar, sidecar->peer sidecar),
		 * or the sidecar's inbound delivery to its app, which Envoy
		 * sources from 127.0.0.6 and connect4 leaves alone. */
		if (ml_record_pair(skops, &key) || key.sip == ML_ENVOY_INBOUND_SRC)
			ml_sockhash_add(skops, &key);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		ml_sockops_key(skops, &key);
		/* Accepting side: only if the connecting side is ours (its record
		 * exists under the connecting side's view of the tuple), or it is
		 * the app end of an inbound delivery. Plaintext from outside the
		 * mesh that iptables redirected to 15006 is left on the normal
		 * path: its peer is not in the map, so a psock would be pure
		 * overhead. */
		peer.sip = key.dip;
		peer.dip = key.sip;
		peer.sport = key.dport;
		peer.dport = key.sport;
		if (key.dip == ML_ENVOY_INBOUND_SRC || bpf_map_lookup_elem(&ml_pair_dst, &peer))
			ml_sockhash_add(skops, &key);
		break;
	}
	return 1;
}
