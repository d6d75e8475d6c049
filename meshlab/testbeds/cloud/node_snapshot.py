"""One node's snapshot, as the trial agent records it, read into what the arm checks need.

The agent (roles/trial_agent/files/meshlab-trial-agent.py, `snapshot` and `sample`) writes, per
node and moment, a JSON object:

    {"host", "t_begin", "t_end", "target": "IP:PORT" (k6's target, when known),
     "containers": [{"component", "pod", "container", "cgroup", "cgroup_id", "pid", "pod_ip",
                     "cpus"}],
     "bpf": {"cgroup_show": [...] | null, "map_show": [...] | null,
             "dumps": {"<map>": [{"id": N, "entries": [...]}]}, "errors": [...]},
     "netfilter": {"<pod>": {"legacy": "<iptables-save -c -t nat>", "nft": "...", "errors": []}},
     "tasks": {...} (window snapshots only; meshlab.testbeds.cloud.host_cpus reads them),
     "errors": [...]}

`bpf.cgroup_show` etc. are bpftool's own JSON (meshlab/testbeds/cloud/facts/bpftool-7.1.0.yml), null
when bpftool could not run. Reading never raises on a broken snapshot: what cannot be read is
listed in `problems`, and a check that needs it says "unknown". Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshlab.testbeds.cloud import merbridge_maps as mm
from meshlab.testbeds.cloud import netfilter


@dataclass
class NodeView:
    host: str
    t_begin: float | None
    t_end: float | None
    target: str
    containers: dict[str, dict[str, Any]]  # component -> container record
    attachments: list[mm.Attachment] | None  # None: bpftool could not list them
    maps: dict[str, list[int]]
    cgroup_info: dict[int, mm.CgroupInfo] | None
    process_ip: dict[int, str] | None
    local_pod_ips: set[str] | None
    pairs: dict[mm.Pair, mm.Origin] | None
    counters: dict[str, netfilter.Counters | None]  # pod -> Istio chain counters
    problems: list[str] = field(default_factory=list)

    def merbridge_attached(self) -> list[mm.Attachment]:
        return [a for a in self.attachments or [] if a.merbridge]


def _one_dump(bpf: Mapping[str, Any], name: str, host: str, problems: list[str]) -> list | None:
    dumps = (bpf.get("dumps") or {}).get(name)
    if not dumps:
        return None
    if len(dumps) > 1:
        ids = ", ".join(str(d.get("id")) for d in dumps)
        problems.append(
            f"{host}: {len(dumps)} maps named {name} (ids {ids}): two Merbridge instances' maps "
            "are alive on this node, so which one its programs use is unknown"
        )
        return None
    return list(dumps[0].get("entries") or [])


def _decode(decoder: Any, entries: list | None, host: str, name: str, problems: list[str]) -> Any:
    if entries is None:
        return None
    try:
        return decoder(entries)
    except mm.DumpError as err:
        problems.append(f"{host}: {name} dump unreadable: {err}")
        return None


def read(snapshot: Mapping[str, Any]) -> NodeView:
    """A snapshot dict -> NodeView (problems collected, never raised)."""
    host = str(snapshot.get("host") or "?")
    problems = [f"{host}: {e}" for e in snapshot.get("errors") or []]
    bpf = snapshot.get("bpf") or {}
    problems += [f"{host}: {e}" for e in bpf.get("errors") or []]
    attachments = None
    if isinstance(bpf.get("cgroup_show"), list):
        try:
            attachments = mm.attachments(bpf["cgroup_show"])
        except (KeyError, TypeError, ValueError) as err:
            problems.append(f"{host}: bpftool cgroup show output unreadable ({err})")
    maps = mm.find_maps(bpf["map_show"]) if isinstance(bpf.get("map_show"), list) else {}

    def dump(name: str, decoder: Any) -> Any:
        return _decode(decoder, _one_dump(bpf, name, host, problems), host, name, problems)

    counters: dict[str, netfilter.Counters | None] = {}
    for pod, tables in (snapshot.get("netfilter") or {}).items():
        chosen = netfilter.best({k: v for k, v in tables.items() if k in ("legacy", "nft")})
        counters[pod] = chosen[1] if chosen else None
        if chosen is None:
            errors = "; ".join(tables.get("errors") or []) or "no ISTIO chains in either table"
            problems.append(f"{host}: pod {pod}: nat counters unreadable ({errors})")
    containers = {
        str(c.get("component")): dict(c)
        for c in snapshot.get("containers") or []
        if isinstance(c, Mapping)
    }
    return NodeView(
        host=host,
        t_begin=snapshot.get("t_begin"),
        t_end=snapshot.get("t_end"),
        target=str(snapshot.get("target") or ""),
        containers=containers,
        attachments=attachments,
        maps=maps,
        cgroup_info=dump("cgroup_info_map", mm.cgroup_info),
        process_ip=dump("process_ip", mm.process_ip),
        local_pod_ips=dump("local_pod_ips", mm.local_pod_ips),
        pairs=dump("pair_original_dst", mm.pair_original_dst),
        counters=counters,
        problems=problems,
    )


def describe(container: Mapping[str, Any]) -> str:
    """'pod meshlab/k6-abc container istio-proxy (client_sidecar)' for messages."""
    return (
        f"pod {container.get('namespace', 'meshlab')}/{container.get('pod', '?')} container "
        f"{container.get('container', '?')} ({container.get('component', '?')})"
    )
