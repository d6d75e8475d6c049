"""Which path each hop of a cloud trial took, from the nodes' snapshots at the window's edges.

Every node's trial agent snapshots, before k6's warm-up and after k6 ended (`sample`), what is
attached to the root cgroup, Merbridge's maps and the measured pods' nat counters
(meshlab.testbeds.cloud.node_snapshot). `judge()` turns the two snapshots per node into

- a per-hop evidence dict (written as path-evidence.json in the trial directory): for each of
  k6->client_sidecar, client_sidecar->server_sidecar, server_sidecar->app the carrier the
  counters show (iptables-redirect, ebpf-connect, sockmap, none or unknown), the one the arm
  expects, and the counters it was read from;
- rejection reasons, one sentence each, which the judge honours like any other rejection.

What each arm changes on the cloud (docs/cluster.md): iptables: istio-init's REDIRECT carries
k6->client sidecar (ISTIO_REDIRECT in k6's netns) and the inbound hop (ISTIO_IN_REDIRECT in the
server's netns); Envoy reaches nginx from 127.0.0.6 untouched (ISTIO_OUTPUT's RETURN). ebpf:
Merbridge's connect4 sends k6 to 127.128.x.x:15001 (a new pair_original_dst entry per
connection, no ISTIO_REDIRECT), sockops/sk_msg splice the server sidecar to nginx (pairs toward
the server pod's IP from 127.0.0.6); the cross-node inbound hop stays iptables' (non-CNI mode);
on one node connect4 sends the client sidecar straight to the server's 15006. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshlab.testbeds.cloud import merbridge_maps as mm
from meshlab.testbeds.cloud import upstream
from meshlab.testbeds.cloud.arm_ready import MUST_BE_IN_MESH
from meshlab.testbeds.cloud.node_snapshot import NodeView, describe, read

HOPS = ("k6->client_sidecar", "client_sidecar->server_sidecar", "server_sidecar->app")
CARRIERS = ("iptables-redirect", "ebpf-connect", "sockmap", "none", "unknown")
SCHEMA = 1


def expected(dataplane: str, same_node: bool) -> dict[str, str]:
    if dataplane == "ebpf":
        inbound = "ebpf-connect" if same_node else "iptables-redirect"
        return dict(zip(HOPS, ("ebpf-connect", inbound, "sockmap"), strict=True))
    return dict(zip(HOPS, ("iptables-redirect", "iptables-redirect", "none"), strict=True))


def _counter(source: str, start: int | None, end: int | None) -> dict[str, Any]:
    delta = None if start is None or end is None else end - start
    return {"source": source, "start": start, "end": end, "delta": delta}


def _nat(view: NodeView | None, pod: str, field: str) -> int | None:
    counters = view.counters.get(pod) if view else None
    return getattr(counters, field) if counters else None


def _pairs(view: NodeView | None, keep: Any) -> set[mm.Pair] | None:
    if view is None or view.pairs is None:
        return None
    return {p for p, o in view.pairs.items() if keep(p, o)}


def _count(pairs: set[mm.Pair] | None) -> int | None:
    return None if pairs is None else len(pairs)


class _Trial:
    """The two views per node and the measured containers, with the lookups the hops share."""

    def __init__(self, windows: Mapping[str, Mapping[str, Any]], dataplane: str) -> None:
        self.dataplane = dataplane
        self.views = {
            host: (
                read(w["start"]) if w.get("start") else None,
                read(w["end"]) if w.get("end") else None,
            )
            for host, w in windows.items()
        }
        self.containers: dict[str, dict[str, Any]] = {}
        for host, (start, end) in self.views.items():
            for view in (end, start):
                for name, c in (view.containers if view else {}).items():
                    self.containers.setdefault(name, {**c, "host": host})
        self.target = next(
            (v.target for s, e in self.views.values() for v in (e, s) if v and v.target), ""
        )

    def at(self, component: str) -> tuple[str, NodeView | None, NodeView | None]:
        host = str(self.containers.get(component, {}).get("host", ""))
        start, end = self.views.get(host, (None, None))
        return host, start, end

    def pod(self, component: str) -> str:
        return str(self.containers.get(component, {}).get("pod", ""))


def _k6_hop(t: _Trial) -> dict[str, Any]:
    host, start, end = t.at("k6")
    pod = t.pod("k6")
    ip, _, port = t.target.partition(":")
    outbound = upstream.value("merbridge", "legacy_outbound_rewrite")["port"]

    def redirected(p: mm.Pair, o: mm.Origin) -> bool:
        return (
            p.dport == outbound and mm.in_rewrite_range(p.dip) and (o.ip, str(o.port)) == (ip, port)
        )

    before, after = _pairs(start, redirected), _pairs(end, redirected)
    new = None if before is None or after is None else len(after - before)
    nat = _counter(
        f"ISTIO_REDIRECT packets in pod {pod}'s netns",
        _nat(start, pod, "outbound"),
        _nat(end, pod, "outbound"),
    )
    pairs = _counter(
        f"pair_original_dst entries {ip}:{port} -> 127.128.0.0/12:{outbound}",
        _count(before),
        _count(after),
    )
    by_nat, by_bpf = nat["delta"], new
    carrier = "unknown"
    if by_nat is not None and by_bpf is not None:
        if by_nat > 0 and by_bpf == 0:
            carrier = "iptables-redirect"
        elif by_bpf > 0 and by_nat == 0:
            carrier = "ebpf-connect"
    elif by_nat is not None and by_bpf is None and by_nat > 0 and not _merbridge_on(start, end):
        carrier = "iptables-redirect"  # no Merbridge maps at all: nothing else could carry it
    return {"node": host, "carrier": carrier, "counters": [nat, {**pairs, "delta": new}]}


def _merbridge_on(*views: NodeView | None) -> bool:
    return any(v is not None and (v.merbridge_attached() or v.maps) for v in views)


def _inbound_hop(t: _Trial, same_node: bool) -> dict[str, Any]:
    host, start, end = t.at("server_sidecar")
    server = t.containers.get("server_sidecar", {})
    ip, pod = str(server.get("pod_ip", "")), t.pod("server_sidecar")
    inbound = upstream.value("merbridge", "inbound_port")
    nat = _counter(
        f"ISTIO_IN_REDIRECT packets in pod {pod}'s netns",
        _nat(start, pod, "inbound"),
        _nat(end, pod, "inbound"),
    )
    counters = [nat]
    carrier = "unknown"
    if same_node:

        def rewritten(p: mm.Pair, o: mm.Origin) -> bool:
            return p.dip == ip and p.dport == inbound and o.ip == ip

        pairs = _counter(
            f"pair_original_dst entries -> {ip}:{inbound}",
            _count(_pairs(start, rewritten)),
            _count(_pairs(end, rewritten)),
        )
        counters.append(pairs)
        if pairs["end"]:
            carrier = "ebpf-connect"
    # Pooled sidecar-to-sidecar connections may predate the window (made since the arm's restart):
    # the cumulative count says which mechanism carried them.
    if carrier == "unknown" and (nat["end"] or 0) > 0:
        carrier = "iptables-redirect"
    return {"node": host, "carrier": carrier, "counters": counters}


def _app_hop(t: _Trial) -> dict[str, Any]:
    host, start, end = t.at("server_sidecar")
    server = t.containers.get("server_sidecar", {})
    ip, pod = str(server.get("pod_ip", "")), t.pod("server_sidecar")
    port = t.target.partition(":")[2]
    source = upstream.value("merbridge", "inbound_passthrough_source")

    def spliced(p: mm.Pair, o: mm.Origin) -> bool:
        return p.sip == source and p.dip == ip and str(p.dport) == port

    pairs = _counter(
        f"pair_original_dst entries {source} -> {ip}:{port}",
        _count(_pairs(start, spliced)),
        _count(_pairs(end, spliced)),
    )
    plain = _counter(
        f"ISTIO_OUTPUT -s {source} RETURN packets in pod {pod}'s netns",
        _nat(start, pod, "passthrough"),
        _nat(end, pod, "passthrough"),
    )
    carrier = "unknown"
    if pairs["end"]:
        carrier = "sockmap"
    elif (plain["end"] or 0) > 0 and (pairs["end"] == 0 or not _merbridge_on(start, end)):
        carrier = "none"
    return {"node": host, "carrier": carrier, "counters": [pairs, plain]}


def _programs(t: _Trial) -> tuple[dict[str, Any], list[str]]:
    """Merbridge's programs on every node at both edges, and what the arm forbids or needs."""
    record, reasons = {}, []
    wanted = {a["attach"] for a in upstream.value("merbridge", "cgroup_attachments")}
    measured_hosts = {str(c.get("host")) for c in t.containers.values()}
    for host, (start, end) in sorted(t.views.items()):
        edges = {"start": start, "end": end}
        record[host] = {
            edge: None
            if v is None or v.attachments is None
            else [
                {"attach": a.attach_type, "id": a.prog_id, "name": a.name}
                for a in v.merbridge_attached()
            ]
            for edge, v in edges.items()
        }
        for edge, view in edges.items():
            if view is None or view.attachments is None:
                reasons.append(
                    f"arm check: no record of what was attached to {host}'s root "
                    f"cgroup at the window's {edge}"
                )
                continue
            ours = view.merbridge_attached()
            if t.dataplane == "iptables" and ours:
                names = ", ".join(f"{a.attach_type} {a.name} (id {a.prog_id})" for a in ours)
                reasons.append(
                    f"arm check: Merbridge's {names} attached to {host}'s root cgroup "
                    f"at the window's {edge} of an iptables trial"
                )
            if t.dataplane == "ebpf" and host in measured_hosts:
                missing = sorted(wanted - {a.attach_type for a in ours})
                if missing:
                    reasons.append(
                        f"arm check: Merbridge's {', '.join(missing)} not attached to "
                        f"{host}'s root cgroup at the window's {edge} of an ebpf "
                        "trial"
                    )
        ids = [
            {a.attach_type: a.prog_id for a in v.merbridge_attached()}
            for v in (start, end)
            if v is not None and v.attachments is not None
        ]
        if t.dataplane == "ebpf" and len(ids) == 2 and ids[0] and ids[0] != ids[1]:
            reasons.append(
                f"arm check: Merbridge's programs on {host} were replaced during the "
                f"window (ids {ids[0]} -> {ids[1]}): Merbridge restarted mid-trial"
            )
    return record, reasons


def _in_mesh(t: _Trial) -> tuple[dict[str, Any], list[str]]:
    record, reasons = {}, []
    for name in MUST_BE_IN_MESH:
        host, start, end = t.at(name)
        c = t.containers.get(name)
        if c is None:
            continue
        cid = int(c.get("cgroup_id") or -1)
        state = {}
        for edge, view in (("start", start), ("end", end)):
            info = (
                (view.cgroup_info or {}).get(cid) if view and view.cgroup_info is not None else None
            )
            state[edge] = None if info is None else info.is_in_mesh
        record[name] = state
        if t.dataplane == "ebpf" and state["end"] != 1:
            reasons.append(
                f"arm check: {describe(c)} on {host} is not in Merbridge's mesh at the "
                f"window's end (cgroup_info_map[{cid}] is_in_mesh={state['end']})"
            )
    return record, reasons


def judge(
    windows: Mapping[str, Mapping[str, Any]],
    dataplane: str,
    window: tuple[float, float] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """`windows`: host -> {"start": snapshot, "end": snapshot}; `window`: (the measured window's
    planned start, k6's end) that the snapshots must bracket. -> (evidence, reasons)."""
    if not windows:
        reason = "arm check: no node snapshots were fetched, so the path the trial took is unknown"
        return {"schema": SCHEMA, "dataplane": dataplane, "hops": {}}, [reason]
    t = _Trial(windows, dataplane)
    k6_host = t.containers.get("k6", {}).get("host")
    same_node = bool(k6_host) and k6_host == t.containers.get("server_sidecar", {}).get("host")
    want = expected(dataplane, same_node)
    hops = {
        HOPS[0]: _k6_hop(t),
        HOPS[1]: _inbound_hop(t, same_node),
        HOPS[2]: _app_hop(t),
    }
    reasons = []
    for hop, ev in hops.items():
        ev["expected"] = want[hop]
        if ev["carrier"] != want[hop]:
            read_from = "; ".join(
                f"{c['source']}: {c['start']} -> {c['end']}" for c in ev["counters"]
            )
            reasons.append(
                f"arm check: hop {hop} was carried by {ev['carrier']}, not "
                f"{want[hop]} as the {dataplane} arm needs ({read_from})"
            )
    k6_nat = hops[HOPS[0]]["counters"][0]["delta"]
    if dataplane == "ebpf" and k6_nat:
        reasons.append(
            f"arm check: ISTIO_REDIRECT in pod {t.pod('k6')}'s netns counted {k6_nat} "
            "connections during an ebpf trial: k6's traffic went through iptables"
        )
    programs, more = _programs(t)
    in_mesh, more2 = _in_mesh(t)
    reasons += more + more2
    reasons += _bracket(t, window)
    problems = sorted({p for s, e in t.views.values() for v in (s, e) if v for p in v.problems})
    evidence = {
        "schema": SCHEMA,
        "dataplane": dataplane,
        "placement": "same-node" if same_node else "cross-node",
        "target": t.target,
        "hops": hops,
        "merbridge_programs": programs,
        "in_mesh": in_mesh,
        "snapshots": {
            h: {e: [v.t_begin, v.t_end] if v else None for e, v in (("start", s), ("end", n))}
            for h, (s, n) in t.views.items()
        },
        "problems": problems,
    }
    return evidence, reasons


def _bracket(t: _Trial, window: tuple[float, float] | None) -> list[str]:
    if window is None:
        return []
    reasons = []
    for host, (start, end) in sorted(t.views.items()):
        if start is not None and start.t_end is not None and start.t_end > window[0]:
            reasons.append(
                f"arm check: {host}'s first snapshot ended {start.t_end - window[0]:.1f}"
                " s into the measured window (it must precede it)"
            )
        if end is not None and end.t_begin is not None and end.t_begin < window[1]:
            reasons.append(
                f"arm check: {host}'s last snapshot began {window[1] - end.t_begin:.1f}"
                " s before k6 ended (it must follow it)"
            )
    return reasons
