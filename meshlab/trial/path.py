"""Which path a trial's traffic took, hop by hop, and whether that is the arm it claims
(issue 21: a trial was labelled by what was asked, not by what happened).

The local testbed reads counters just before k6 starts and just after it exits (every
connection of a trial is made in between: k6 is a new process per trial, and the sidecars'
pools close idle connections after 1 s):

- nat counters in the pod namespaces: `ISTIO_REDIRECT`'s REDIRECT (k6 -> client sidecar) in the
  client pod, `ISTIO_IN_REDIRECT`'s (-> the server sidecar's 15006) in the server pod, and the
  `-s 127.0.0.6 -o lo -j RETURN` that lets the server sidecar reach nginx untouched. nat sees a
  connection's first packet only, so these count connections;
- the eBPF programs' counters (bpf/headers/meshlab.h): connect rewrites to 15001 and 15006,
  cross-node connects left alone, and the messages sk_msg spliced on each hop;
- which eBPF arm each pod's cgroup is in.

`judge` turns two such snapshots into trial.json's `path` and the reasons to reject the trial.
A duet step runs two arms at once and the eBPF counters are host-wide: there only the per-pod
evidence (nat counters, attached programs) decides. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshlab.core.arms import NO_MESH, needs_ebpf
from meshlab.record.format import HOPS, Carrier, Hop, PathEvidence

K6, INBOUND, DELIVERY = HOPS
# nat rules whose packet counters show a hop's iptables path (rule text as iptables-save -c
# prints it, after the counters), per pod role
NAT_RULES = {
    "outbound_redirect": ("client", "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"),
    "inbound_redirect": ("server", "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"),
    "inbound_delivery": ("server", "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN"),
}
EBPF_COUNTERS = (
    "out_redirect", "bypass", "cross_node", "msg_outbound", "msg_bypass", "msg_inbound",
)  # fmt: skip


def expected(dataplane: str, same_node: bool) -> dict[str, Carrier]:
    """What each hop should show in `dataplane`. Across nodes the eBPF bypass does not join
    the two sidecars, so the inbound hop stays iptables' (docs/ebpf.md)."""
    if dataplane == NO_MESH:
        return {K6: "none", INBOUND: "none", DELIVERY: "none"}
    if dataplane == "iptables":
        return {K6: "iptables-redirect", INBOUND: "iptables-redirect", DELIVERY: "none"}
    inbound: Carrier = "ebpf-connect" if same_node else "iptables-redirect"
    delivery: Carrier = "sockmap" if dataplane == "ebpf" else "none"
    return {K6: "ebpf-connect", INBOUND: inbound, DELIVERY: delivery}


def _delta(before: Mapping[str, int | None], after: Mapping[str, int | None], key: str) -> int:
    a, b = before.get(key), after.get(key)
    return 0 if a is None or b is None else max(0, b - a)


def _carrier(iptables: int, ebpf: int, ebpf_kind: Carrier) -> Carrier:
    if iptables and ebpf:
        return "mixed"
    if iptables:
        return "iptables-redirect"
    return ebpf_kind if ebpf else "none"


def judge(
    dataplane: str,
    same_node: bool,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    sidecar_requests: Mapping[str, int],
    requests: int,
    shared_counters: bool = False,
) -> tuple[PathEvidence, list[str]]:
    """`before`/`after`: {"counters": {name: int}, "programs": {pod: mode}} of the trial's pods
    (testbeds/local/paths.py). `shared_counters`: the eBPF counters also count another pair's
    trial (duet), so only per-pod evidence decides."""
    c0, c1 = before["counters"], after["counters"]
    d = {k: _delta(c0, c1, k) for k in (*NAT_RULES, *EBPF_COUNTERS)}
    ebpf = {k: (0 if shared_counters else d[k]) for k in EBPF_COUNTERS}
    want = expected(dataplane, same_node)
    hops = {
        K6: Hop(
            carrier=_carrier(d["outbound_redirect"], ebpf["out_redirect"], "ebpf-connect"),
            expected=want[K6],
            connections=d["outbound_redirect"] + ebpf["out_redirect"],
            messages=None if shared_counters else d["msg_outbound"],
        ),
        INBOUND: Hop(
            carrier=_carrier(d["inbound_redirect"], ebpf["bypass"], "ebpf-connect"),
            expected=want[INBOUND],
            connections=d["inbound_redirect"] + ebpf["bypass"],
            messages=None if shared_counters else d["msg_bypass"],
        ),
        DELIVERY: Hop(
            carrier="sockmap" if ebpf["msg_inbound"] else "none",
            expected=want[DELIVERY],
            connections=d["inbound_delivery"],
            messages=None if shared_counters else d["msg_inbound"],
        ),
    }
    if shared_counters:
        # the eBPF counters cannot say whose they are: an eBPF carrier is taken on trust from
        # the attached programs, an iptables one is still read from this pair's own pods
        for hop, h in hops.items():
            if h.carrier == "none" and want[hop] in ("ebpf-connect", "sockmap"):
                hops[hop] = h.model_copy(update={"carrier": "unknown"})
    evidence = PathEvidence(
        hops=hops,
        programs_start=dict(before["programs"]),
        programs_end=dict(after["programs"]),
        counters=d,
        sidecar_requests=dict(sidecar_requests),
    )
    return evidence, _reasons(dataplane, evidence, requests)


def _reasons(dataplane: str, ev: PathEvidence, requests: int) -> list[str]:
    mode = dataplane if needs_ebpf(dataplane) else "off"
    out = []
    for when, programs in (("start", ev.programs_start), ("end", ev.programs_end)):
        wrong = {pod: m for pod, m in sorted(programs.items()) if m != mode}
        if wrong:
            found = ", ".join(f"{pod} in {m}" for pod, m in wrong.items())
            out.append(
                f"arm integrity: a {dataplane} trial needs its pods' eBPF programs {mode} at "
                f"the trial's {when}; found {found}"
            )
    for name, hop in ev.hops.items():
        if hop.carrier not in (hop.expected, "unknown"):
            out.append(
                f"arm integrity: hop {name} was carried by {hop.carrier} "
                f"({hop.connections} connections, {hop.messages} messages); "
                f"the {dataplane} arm carries it by {hop.expected}"
            )
    logged = sum(ev.sidecar_requests.values())
    if dataplane == NO_MESH and logged:
        out.append(f"arm integrity: a no-mesh trial's sidecars logged {logged} requests")
    if dataplane != NO_MESH and requests and ev.sidecar_requests:
        quiet = [s for s, n in sorted(ev.sidecar_requests.items()) if n < 0.5 * requests]
        if quiet:
            out.append(
                f"arm integrity: the {', '.join(quiet)} sidecar logged fewer than half of "
                f"the {requests} requests k6 measured: traffic went around it"
            )
    return out
