// SPDX-License-Identifier: Apache-2.0
/*
 * cgroup/connect4: the connect-time half of the redirection (Merbridge's
 * mb_connect.c design, Istio sidecar mode).
 *
 *   app (uid != 1337)  -> any non-loopback ip:port  ==>  127.0.0.1:15001,
 *                         source bound to the pod IP
 *   sidecar (uid 1337) -> meshed pod IP on its own node ==> same IP, port 15006
 *                         (same-node bypass: the peer's inbound listener is
 *                         reached without any NAT at the destination); to a
 *                         pod on another node it is untouched, and that
 *                         node's pod captures it (iptables PREROUTING)
 *
 * In both cases the original destination is stored under the socket cookie;
 * sockops moves it to the 4-tuple map once the connection is established, and
 * the getsockopt hook hands it to Envoy as SO_ORIGINAL_DST.
 *
 * The program runs before the kernel validates/uses the address, in the
 * context of the connecting task, so uid/gid and the cgroup are the caller's.
 */
#include "meshlab.h"
#include "maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Ports that are never captured: Envoy's own listeners, HBONE, telemetry and
 * health (Istio's -d list plus 15000/15001/15006, as Merbridge's defaults). */
static __always_inline bool ml_port_excluded(__u16 port)
{
	switch (port) {
	case 15000: /* admin */
	case 15001: /* outbound */
	case 15006: /* inbound */
	case 15008: /* HBONE */
	case 15020: /* merged telemetry */
	case 15021: /* health */
	case 15090: /* Prometheus stats */
		return true;
	}
	return false;
}

/*
 * The pod of the calling task: the loader maps each pod's cgroup id to its IP
 * and node, and the caller may sit in a child cgroup of it
 * (meshlab/<pod>/sidecar), so walk the caller's ancestors from the top.
 * { 0, 0 } if none is a pod cgroup.
 */
static __always_inline struct ml_pod ml_current_pod(void)
{
	struct ml_pod none = { 0, 0 };

	for (int level = 1; level <= ML_MAX_CGROUP_LEVEL; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		struct ml_pod *pod;

		if (!id) /* deeper than the caller's own cgroup */
			break;
		pod = bpf_map_lookup_elem(&ml_cgroup_pods, &id);
		if (pod)
			return *pod;
	}
	return none;
}

static __always_inline void ml_record(struct bpf_sock_addr *ctx, __u32 ip, __u16 port,
				      __u16 flags)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct ml_origin origin = { .ip = ip, .port = port, .flags = flags };

	bpf_map_update_elem(&ml_cookie_dst, &cookie, &origin, BPF_ANY);
}

static __always_inline int ml_sidecar_connect(struct bpf_sock_addr *ctx, __u32 dst_ip,
					      __u16 dst_port, struct ml_pod caller)
{
	struct bpf_sock *sk = ctx->sk;
	__u32 pod_ip = caller.ip;
	__u32 *dst_node = bpf_map_lookup_elem(&ml_pod_ips, &dst_ip);

	/* Not a meshed pod: leave it to normal routing. */
	if (!dst_node)
		return 1;
	/* A meshed pod on another node (or a caller we cannot place): the plain
	 * path, as Merbridge, whose local_pod_ips only holds its node's pods. The
	 * packets cross both nodes and the destination pod's capture. */
	if (!caller.node || *dst_node != caller.node) {
		ml_count(ML_STAT_CROSS_NODE);
		return 1;
	}
	/* Inbound delivery to our own app (Istio binds 127.0.0.6 for it; checking
	 * the pod IP as well covers a sidecar that does not bind). Rewriting this
	 * to 15006 would loop the request back into our own inbound listener. */
	if (dst_ip == pod_ip)
		return 1;
	if (sk && sk->src_ip4 == ML_ENVOY_INBOUND_SRC)
		return 1;

	ml_record(ctx, dst_ip, dst_port, ML_ORIGIN_BYPASS);
	ctx->user_port = bpf_htons(ML_INBOUND_PORT);
	ml_count(ML_STAT_BYPASS);
	return 1;
}

static __always_inline int ml_app_connect(struct bpf_sock_addr *ctx, __u32 dst_ip,
					  __u16 dst_port, __u32 pod_ip)
{
	/* app -> its own pod IP stays local, like Istio's "-o lo ! --uid-owner
	 * 1337 -j RETURN". */
	if (pod_ip && dst_ip == pod_ip)
		return 1;

	ml_record(ctx, dst_ip, dst_port, ML_ORIGIN_OUTBOUND);

	/*
	 * Bind the source to the pod IP (what iptables REDIRECT leaves as the
	 * source too). Without it every pod's app->sidecar connection would be
	 * 127.0.0.1:eph -> 127.0.0.1:15001, and since the 4-tuple maps are global
	 * across network namespaces two pods could collide. Port 0 lets the
	 * kernel pick the ephemeral port at connect time
	 * (IP_BIND_ADDRESS_NO_PORT semantics). Fails harmlessly if the app
	 * bound the socket itself.
	 */
	if (pod_ip) {
		struct sockaddr_in sa = {
			.sin_family = ML_AF_INET,
			.sin_addr.s_addr = pod_ip,
		};

		if (bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa)))
			ml_count(ML_STAT_BIND_FAIL);
	} else {
		ml_count(ML_STAT_POD_UNKNOWN);
	}

	ctx->user_ip4 = ML_LOCALHOST;
	ctx->user_port = bpf_htons(ML_OUTBOUND_PORT);
	ml_count(ML_STAT_OUT_REDIRECT);
	return 1;
}

SEC("cgroup/connect4")
int ml_connect4(struct bpf_sock_addr *ctx)
{
	__u32 dst_ip = ctx->user_ip4;
	__u16 dst_port = bpf_ntohs((__u16)ctx->user_port);
	__u64 uid_gid;
	struct ml_pod pod;

	if (ctx->type != ML_SOCK_STREAM || ctx->protocol != IPPROTO_TCP)
		return 1;
	/* Loopback (127/8) is never captured: app->localhost, Envoy admin, and
	 * the 127.0.0.1:15001 address this program itself produces. */
	if ((bpf_ntohl(dst_ip) >> 24) == 127)
		return 1;
	if (ml_port_excluded(dst_port))
		return 1;

	pod = ml_current_pod();
	uid_gid = bpf_get_current_uid_gid();
	/* Istio exempts both the proxy uid and gid (istio-iptables -u/-g). */
	if ((__u32)uid_gid == ML_SIDECAR_UID || (__u32)(uid_gid >> 32) == ML_SIDECAR_UID)
		return ml_sidecar_connect(ctx, dst_ip, dst_port, pod);
	return ml_app_connect(ctx, dst_ip, dst_port, pod.ip);
}
