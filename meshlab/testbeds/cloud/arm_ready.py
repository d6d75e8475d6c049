"""Is the arm on every node what the next trials will call it? Decided before any trial runs.

playbooks/tasks/trial_cloud.yml asks this after an arm switch (and at a run's first step):

1. `rearm(snapshots)`: Merbridge 0.8.1 decides once per cgroup, at its first connect, whether the
   cgroup is "in the mesh" (a listener on 0.0.0.0:15001 in its netns) and never looks again
   (facts: merbridge in_mesh_decided_once). The merbridge role makes Merbridge Ready before it
   restarts the workload, so every new istio-proxy cgroup meets Merbridge's programs; but its
   first connect (pilot-agent to istiod, or its DNS lookup) comes before LDS brings the 15001
   listener, so Merbridge records "not in mesh" for the pod's life. The cache entry of a measured
   container that says "not in mesh" is therefore deleted, once the pod is Ready, so that its next
   connect decides again with the listener up. Nothing else of Merbridge's state is touched.
2. The agent's probe then sends requests from the k6 container through both sidecars, so every
   measured cgroup connects (and decides) and sockops learns the server Envoy's process_ip.
3. `verify(snapshots, dataplane)`: the refusal lines if the arm is not what it says, naming the
   node, pod, container and map entry. The trials do not start while there is one.

Pure but for `run()`, which reads the fetched snapshots: works on the agent's recorded snapshots
(meshlab.testbeds.cloud.node_snapshot).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meshlab.errors import MeshlabError, RefusedError
from meshlab.testbeds.cloud import upstream
from meshlab.testbeds.cloud.node_snapshot import NodeView, describe, read

# The cgroups whose connects Merbridge must treat as in the mesh: k6's own (app -> 15001) and
# both sidecars' (Envoy -> local pods). nginx never connects, so its cgroup is never decided.
MUST_BE_IN_MESH = ("k6", "client_sidecar", "server_sidecar")
NEEDED_MAPS = ("cgroup_info_map", "process_ip", "local_pod_ips", "pair_original_dst")


def views(snapshots: Sequence[Mapping[str, Any]]) -> list[NodeView]:
    return [read(s) for s in snapshots]


def _measured(nodes: Sequence[NodeView]) -> list[tuple[NodeView, dict[str, Any]]]:
    return [
        (node, c)
        for node in nodes
        for name, c in node.containers.items()
        if name in MUST_BE_IN_MESH
    ]


def rearm(snapshots: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per host, the cgroup_info_map entries to delete: measured containers Merbridge decided
    "not in mesh". Entries that say "in mesh", and every other cgroup's, stay."""
    plan: dict[str, list[dict[str, Any]]] = {}
    for node, c in _measured(views(snapshots)):
        info = (node.cgroup_info or {}).get(int(c.get("cgroup_id") or -1))
        if info is not None and info.is_in_mesh == 0:
            plan.setdefault(node.host, []).append(
                {
                    "key_hex": info.key_hex,
                    "cgroup_id": info.cgroup_id,
                    "component": c.get("component"),
                    "pod": c.get("pod"),
                    "container": c.get("container"),
                }
            )
    return plan


def _attachment_refusals(node: NodeView, dataplane: str) -> list[str]:
    if node.attachments is None:
        return [f"node {node.host}: could not list the programs attached to its root cgroup "
                f"({'; '.join(node.problems) or 'bpftool gave nothing'})"]  # fmt: skip
    ours = node.merbridge_attached()
    if dataplane == "iptables":
        lines = [
            f"node {node.host}: Merbridge's {a.name} (program id {a.prog_id}) is still attached "
            f"to the root cgroup as {a.attach_type} in the iptables arm: a Merbridge pod ended "
            "without its preStop `make -k clean`; detach it (`bpftool cgroup detach "
            f"/sys/fs/cgroup {a.attach_type} id {a.prog_id}`) or reboot the node"
            for a in ours
        ]
        lines += [
            f"node {node.host}: Merbridge's map {name} (ids {', '.join(map(str, ids))}) still "
            "exists in the iptables arm: something of Merbridge's is still alive on this node"
            for name, ids in sorted(node.maps.items())
        ]
        return lines
    have = {a.attach_type for a in ours}
    return [
        f"node {node.host}: Merbridge's {want['function']} is not attached to the root cgroup as "
        f"{want['attach']}: its `make load`/`make attach` did not finish (the merbridge pod's log "
        "says why); the ebpf arm would run without it"
        for want in upstream.value("merbridge", "cgroup_attachments")
        if want["attach"] not in have
    ]


def _in_mesh_refusals(node: NodeView, c: Mapping[str, Any]) -> list[str]:
    who = describe(c)
    if node.cgroup_info is None:
        return [f"node {node.host}: {who}: cgroup_info_map could not be read, so whether "
                "Merbridge treats it as in the mesh is unknown"]  # fmt: skip
    cgroup_id = int(c.get("cgroup_id") or -1)
    info = node.cgroup_info.get(cgroup_id)
    if info is None:
        return [
            f"node {node.host}: {who}: cgroup_info_map has no entry for its cgroup "
            f"(id {cgroup_id}, {c.get('cgroup', '?')}): it has not connected since Merbridge's "
            "maps were created, so Merbridge has not decided it is in the mesh; restart the "
            "workload under this arm (playbooks/cloud_arm.yml) and run again"
        ]
    if info.is_in_mesh != 1:
        return [
            f"node {node.host}: {who}: cgroup_info_map[{cgroup_id}] (key hex {info.key_hex}) "
            f"is_in_mesh={info.is_in_mesh} after the re-arm and the probe: Merbridge bypasses "
            "this cgroup's connects for the rest of the pod's life"
        ]
    return []


def _server_refusals(nodes: Sequence[NodeView]) -> list[str]:
    for node in nodes:
        server = node.containers.get("server_sidecar")
        if server is None:
            continue
        ip, who = str(server.get("pod_ip") or ""), describe(server)
        if not ip:
            return [f"node {node.host}: {who}: no pod IP recorded (crictl inspectp)"]
        lines = []
        if node.local_pod_ips is not None and ip not in node.local_pod_ips:
            lines.append(
                f"node {node.host}: {who}: its IP {ip} is not in local_pod_ips: Merbridge's "
                "controller has not registered the pod, so its sidecar's connects to it are not "
                "handled"
            )
        if node.process_ip is not None and ip not in node.process_ip.values():
            lines.append(
                f"node {node.host}: {who}: process_ip has no process with IP {ip}: sockops has not "
                "learned the server Envoy, whose next connect to nginx would be rewritten to 15006 "
                "(refused under STRICT mTLS)"
            )
        return lines
    return ["no node reported the server_sidecar container: cannot check the server's hop"]


def verify(
    snapshots: Sequence[Mapping[str, Any]], dataplane: str, probe: Mapping[str, Any] | None = None
) -> list[str]:
    """Refusal lines (empty: the arm is what it says on every node)."""
    nodes = views(snapshots)
    if not nodes:
        return ["no node snapshot: the arm could not be checked on any node"]
    lines = [line for node in nodes for line in _attachment_refusals(node, dataplane)]
    if dataplane != "ebpf":
        return lines
    for node in nodes:
        missing = [m for m in NEEDED_MAPS if m not in node.maps]
        if node.containers and missing:
            lines.append(f"node {node.host}: Merbridge's maps {', '.join(missing)} not found")
    found = {name for node in nodes for name in node.containers}
    lines += [
        f"no node reported the {name} container: its cgroup cannot be checked"
        for name in MUST_BE_IN_MESH
        if name not in found
    ]
    for node, c in _measured(nodes):
        lines += _in_mesh_refusals(node, c)
    lines += _server_refusals(nodes)
    if lines and probe is not None and not probe.get("ok"):
        lines.append(
            f"the probe through k6's sidecar got {probe.get('codes') or probe.get('error')!r}, "
            "not the 200s it needs to make every measured cgroup connect"
        )
    return lines


def _load(directory: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise MeshlabError(f"{path}: unreadable snapshot ({err})") from None
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


def run(
    snapshots: Path, dataplane: str, plan_rearm: bool = False, probe_dir: Path | None = None
) -> dict[str, Any]:
    """`meshlab engine arm-ready`: the re-arm plan, or what was verified; refusals raise."""
    docs = _load(snapshots)
    if plan_rearm:
        return {"rearm": rearm(docs)}
    probes = _load(probe_dir) if probe_dir else []
    lines = verify(docs, dataplane, probes[0] if probes else None)
    if lines:
        raise RefusedError(lines)
    return {"ok": True, "dataplane": dataplane, "nodes": sorted(str(d.get("host")) for d in docs)}
