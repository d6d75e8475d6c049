// SPDX-License-Identifier: Apache-2.0
/*
 * sk_msg verdict, attached to the ml_sock_pairs sockhash: runs on every
 * sendmsg()/write() of a socket in that map and moves the data straight onto
 * the receive queue of the peer socket (BPF_F_INGRESS), skipping TCP
 * segmentation, loopback/veth transmit, netfilter and the receive path. The
 * sockhash is global, so this also works across the pods' network namespaces.
 *
 * Hot path: the inlined splice-switch check, one hash lookup per message and,
 * for a message that was spliced, one per-CPU counter of its hop (which hop is
 * told by the sidecar port on either end): every trial records how many
 * messages of each hop took this path (meshlab/trial/path.py).
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
	if (bpf_msg_redirect_hash(msg, &ml_sock_pairs, &peer, BPF_F_INGRESS) == SK_PASS) {
		if (peer.sport == ML_OUTBOUND_PORT || peer.dport == ML_OUTBOUND_PORT)
			ml_count(ML_STAT_MSG_OUTBOUND);
		else if (peer.sport == ML_INBOUND_PORT || peer.dport == ML_INBOUND_PORT)
			ml_count(ML_STAT_MSG_BYPASS);
		else
			ml_count(ML_STAT_MSG_INBOUND);
	}
	return SK_PASS;
}
