"""iptables rule sets of the testbed, rendered as `iptables-restore` input in iptables-save's
canonical form (so that "is it already applied?" is a plain text comparison).

* Istio's REDIRECT-mode capture (istio-iptables defaults: -p 15001 -z 15006 -u 1337 -m REDIRECT
  -i '*' -b '*' -d 15090,15021,15020), one copy per pod namespace.
* kube-proxy's iptables-mode chains (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-*) for the real
  services plus a P x S flood, in the node namespace.
Sources: docs/architecture.md and ../shared/research/dataplane_internals.md §1.2, §4.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meshlab.core.flood import Flood
from meshlab.testbeds.local.topology import topology

TOPOLOGY = topology()
ENVOY_UID = TOPOLOGY.envoy_uid
OUTBOUND_PORT = TOPOLOGY.outbound_port
INBOUND_PORT = TOPOLOGY.inbound_port
HBONE_PORT = TOPOLOGY.hbone_port
INBOUND_EXCLUDED_PORTS = TOPOLOGY.inbound_excluded_ports
MASQ_MARK = "0x4000"  # kube-proxy's own constant
CLUSTER_CIDR = TOPOLOGY.cluster_cidr
# kube-proxy drops per-endpoint comments above this many endpoints ("large cluster mode").
LARGE_CLUSTER_ENDPOINTS = 1000

ARMS_WITH_OUTBOUND_CAPTURE = frozenset({"iptables"})


def _table(name: str, builtin: Sequence[str], chains: Iterable[str], rules: Iterable[str]) -> str:
    lines = [f"*{name}"]
    lines += [f":{c} ACCEPT [0:0]" for c in builtin]
    lines += [f":{c} - [0:0]" for c in chains]
    lines += list(rules)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


NAT_BUILTIN = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")
FILTER_BUILTIN = ("INPUT", "FORWARD", "OUTPUT")


def istio_capture(arm: str) -> str:
    """The pod namespace's nat table for an arm.

    `no-mesh`: none (the floor). `iptables`: Istio's full REDIRECT capture. eBPF arms keep only
    the inbound capture (PREROUTING -> ISTIO_INBOUND) so traffic from outside the mesh is still
    forced through the inbound sidecar and STRICT mTLS holds; outbound redirection is done by
    the cgroup programs.
    """
    if arm == "no-mesh":
        # the floor: nothing captured, so k6 reaches nginx straight through kube-proxy's DNAT
        return _table("nat", NAT_BUILTIN, (), ())
    uid = ENVOY_UID
    rules = ["-A PREROUTING -p tcp -j ISTIO_INBOUND"]
    if arm in ARMS_WITH_OUTBOUND_CAPTURE:
        rules.append("-A OUTPUT -j ISTIO_OUTPUT")
    rules.append(f"-A ISTIO_INBOUND -p tcp -m tcp --dport {HBONE_PORT} -j RETURN")
    rules += [
        f"-A ISTIO_INBOUND -p tcp -m tcp --dport {p} -j RETURN" for p in INBOUND_EXCLUDED_PORTS
    ]
    rules.append("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
    rules.append(f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}")
    # Envoy's inbound passthrough binds 127.0.0.6: never re-capture it.
    rules.append("-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN")
    for owner in (f"--uid-owner {uid}", f"--gid-owner {uid}"):
        # Envoy -> its own pod via a VIP goes through the inbound sidecar; other Envoy traffic
        # is never re-captured (no loops); app -> app on lo is left alone.
        rules.append(
            f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport {HBONE_PORT} "
            f"-m owner {owner} -j ISTIO_IN_REDIRECT"
        )
        rules.append(f"-A ISTIO_OUTPUT -o lo -m owner ! {owner} -j RETURN")
        rules.append(f"-A ISTIO_OUTPUT -m owner {owner} -j RETURN")
    rules.append("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN")
    rules.append("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
    rules.append(f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}")
    chains = ("ISTIO_INBOUND", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT", "ISTIO_REDIRECT")
    return _table("nat", NAT_BUILTIN, chains, rules)


# --- kube-proxy ------------------------------------------------------------------------------


def _kube_hash(*parts: str) -> str:
    """kube-proxy's chain suffix: first 16 chars of base32(sha256(concatenated parts))."""
    digest = hashlib.sha256("".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


@dataclass(frozen=True)
class Service:
    """A ClusterIP service with one TCP port and its endpoints (IPs; all on `target_port`)."""

    namespace: str
    name: str
    vip: str
    port: int
    target_port: int
    endpoints: tuple[str, ...]

    @property
    def port_name(self) -> str:
        return f"{self.namespace}/{self.name}:http"


def flood_services(flood: Flood) -> list[Service]:
    """S services, each selecting all P flood pods (the thesis' Cluster-Flooder shape), at the
    topology's flood addresses."""
    pods = tuple(TOPOLOGY.flood_pod_ips(flood.pods))
    vips = TOPOLOGY.flood_vips(flood.services)
    return [Service("flood", f"svc-{j:05d}", vip, 80, 8080, pods) for j, vip in enumerate(vips)]


def kube_proxy_nat(services: Sequence[Service]) -> str:
    """kube-proxy's nat table for ClusterIP services (iptables mode, Cluster traffic policy)."""
    total_endpoints = sum(len(s.endpoints) for s in services)
    endpoint_comments = total_endpoints <= LARGE_CLUSTER_ENDPOINTS
    chains = ["KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-SERVICES"]
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        f"-A KUBE-MARK-MASQ -j MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --set-xmark {MASQ_MARK}/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    ]
    svc_rules: list[str] = []
    sep_rules: list[str] = []
    for svc in services:
        if not svc.endpoints:
            continue
        svc_chain = "KUBE-SVC-" + _kube_hash(svc.port_name, "tcp")
        chains.append(svc_chain)
        comment = f'-m comment --comment "{svc.port_name} cluster IP"'
        rules.append(
            f"-A KUBE-SERVICES -d {svc.vip}/32 -p tcp {comment} -m tcp --dport {svc.port} "
            f"-j {svc_chain}"
        )
        svc_rules.append(
            f"-A {svc_chain} ! -s {CLUSTER_CIDR} -d {svc.vip}/32 -p tcp {comment} -m tcp "
            f"--dport {svc.port} -j KUBE-MARK-MASQ"
        )
        n = len(svc.endpoints)
        for i, ep in enumerate(svc.endpoints):
            target = f"{ep}:{svc.target_port}"
            sep_chain = "KUBE-SEP-" + _kube_hash(svc.port_name, "tcp", target)
            chains.append(sep_chain)
            ep_comment = (
                f'-m comment --comment "{svc.port_name} -> {target}" ' if endpoint_comments else ""
            )
            probability = (
                f"-m statistic --mode random --probability {1 / (n - i):.10f} " if i < n - 1 else ""
            )
            svc_rules.append(f"-A {svc_chain} {ep_comment}{probability}-j {sep_chain}")
            sep_comment = f'-m comment --comment "{svc.port_name}" ' if endpoint_comments else ""
            sep_rules.append(f"-A {sep_chain} -s {ep}/32 {sep_comment}-j KUBE-MARK-MASQ")
            sep_rules.append(
                f"-A {sep_chain} -p tcp {sep_comment}-m tcp -j DNAT --to-destination {target}"
            )
    rules.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be '
        'the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS'
    )
    return _table("nat", NAT_BUILTIN, chains, rules + svc_rules + sep_rules)


def kube_proxy_filter() -> str:
    """kube-proxy's filter chains; they do not grow with services that have endpoints."""
    chains = (
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SERVICES",
    )
    new = "-m conntrack --ctstate NEW"
    firewall = '-m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL'
    rules = [
        f"-A INPUT {new} {firewall}",
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        f'-A INPUT {new} -m comment --comment "kubernetes externally-visible service portals" '
        "-j KUBE-EXTERNAL-SERVICES",
        f"-A FORWARD {new} {firewall}",
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        f'-A FORWARD {new} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        f'-A FORWARD {new} -m comment --comment "kubernetes externally-visible service portals" '
        "-j KUBE-EXTERNAL-SERVICES",
        f"-A OUTPUT {new} {firewall}",
        f'-A OUTPUT {new} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
        f"-m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    return _table("filter", FILTER_BUILTIN, chains, rules)
