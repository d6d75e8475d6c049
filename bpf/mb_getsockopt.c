// SPDX-License-Identifier: Apache-2.0
/*
 * cgroup/getsockopt: answer getsockopt(SOL_IP, SO_ORIGINAL_DST) for
 * connections whose destination connect4 rewrote, so Envoy's original_dst
 * listener filter works unchanged.
 *
 * This hook runs *after* the kernel's own handler and sees its result in
 * ctx->retval (Documentation/bpf/prog_cgroup_sockopt.rst). Without NAT the
 * kernel answers ENOENT (no conntrack entry) or ENOPROTOOPT (conntrack not
 * loaded); where iptables' PREROUTING REDIRECT 15006->15006 also touched the
 * flow it answers with the rewritten address. Our record is authoritative in
 * both cases, so it overrides the kernel whenever one exists.
 *
 * The accepted socket cannot see the connecting socket's cookie; it looks up
 * the 4-tuple written by sockops from the connecting side's point of view,
 * i.e. (peer ip:port -> my ip:port).
 */
#include "meshlab.h"
#include "maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/getsockopt")
int ml_getsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct sockaddr_in *sa;
	struct ml_origin *origin;
	struct ml_pair key = {};

	if (ctx->level != ML_SOL_IP || ctx->optname != ML_SO_ORIGINAL_DST) {
		/*
		 * Every getsockopt of every process in the pod cgroups passes
		 * here. For values larger than a page the program only sees the
		 * first page; kernels before 6.5 returned EFAULT unless the
		 * program set optlen to 0 ("use the kernel's value as is").
		 * iptables-legacy's IPT_SO_GET_ENTRIES is the classic victim.
		 */
		if (ctx->optlen > ML_PAGE_SIZE)
			ctx->optlen = 0;
		return 1;
	}
	if (!sk || sk->family != ML_AF_INET)
		return 1;

	key.sip = sk->dst_ip4;
	key.sport = bpf_ntohs(sk->dst_port);
	key.dip = sk->src_ip4;
	key.dport = (__u16)sk->src_port; /* host order already */

	origin = bpf_map_lookup_elem(&ml_pair_dst, &key);
	if (!origin) {
		ml_count(ML_STAT_ORIG_DST_MISS);
		return 1;
	}

	sa = ctx->optval;
	if ((void *)(sa + 1) > ctx->optval_end)
		return 1; /* caller's buffer too small: leave the kernel's answer */

	sa->sin_family = ML_AF_INET;
	sa->sin_port = bpf_htons(origin->port);
	sa->sin_addr.s_addr = origin->ip;
	__builtin_memset(sa->__pad, 0, sizeof(sa->__pad));
	ctx->optlen = sizeof(*sa);
	ctx->retval = 0;
	ml_count(ML_STAT_ORIG_DST_HIT);
	return 1;
}
