// SPDX-License-Identifier: Apache-2.0
/*
 * sk_msg verdict, attached to the ml_sock_pairs sockhash: runs on every
 * sendmsg()/write() of a socket in that map and moves the data straight onto
 * the receive queue of the peer socket (BPF_F_INGRESS), skipping TCP
 * segmentation, loopback/veth transmit, netfilter and the receive path. The
 * sockhash is global, so this also works across the pods' network namespaces.
 *
 * Hot path: the inlined splice-switch check and one hash lookup per message,
 * nothing else (no counters).
 */
#include "meshlab.h"
#include "maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("sk_msg")
int ml_redir(struct sk_msg_md *msg)
{
	/* The peer's key is ours reversed: its local end is our remote end. */
	struct ml_pair peer = {
		.sip = msg->remote_ip4,
		.dip = msg->local_ip4,
		.sport = (__u16)bpf_ntohl(msg->remote_port), /* see mb_sockops.c */
		.dport = (__u16)msg->local_port,
	};

	if (msg->family != ML_AF_INET || !ml_splice_enabled())
		return SK_PASS;
	/*
	 * On a miss the helper returns SK_DROP without setting a redirect target;
	 * returning SK_PASS regardless makes the kernel fall back to the normal
	 * TCP path for that message instead of dropping it (e.g. the peer closed
	 * or was removed from the map by a mode switch).
	 */
	bpf_msg_redirect_hash(msg, &ml_sock_pairs, &peer, BPF_F_INGRESS);
	return SK_PASS;
}
