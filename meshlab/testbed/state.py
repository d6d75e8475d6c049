"""Read the testbed's recorded state (testbed.json, written by the Ansible roles) and probe
what is live: namespaces, processes, rule counts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from meshlab import paths
from meshlab.errors import MeshlabError
from meshlab.testbed.iptables import save_line_count

ARMS = ("iptables", "ebpf", "ebpf-connect")


def require_root() -> None:
    if os.geteuid() != 0:
        raise MeshlabError(
            "the local testbed needs root (network namespaces, iptables, cgroups, eBPF); "
            "run meshlab as root or with sudo"
        )


def load(path: Path = paths.TESTBED_STATE) -> dict[str, Any]:
    """The recorded state; a clear error when the testbed is not up."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MeshlabError(
            f"the local testbed is not up ({path} is missing); run: meshlab testbed up"
        ) from None
    except json.JSONDecodeError as err:
        raise MeshlabError(f"{path}: not valid JSON ({err}); run: meshlab testbed up") from None


def nodes(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The node namespaces (id, netns, gateway, link_ip); one node for a testbed recorded
    before there were two."""
    return state.get("nodes") or [
        {"id": 1, "netns": state["node_netns"], "gateway": state["gateway"], "link_ip": None}
    ]


def node_names(state: dict[str, Any]) -> list[str]:
    """`node` (node 1, as before there were two), `node2`, ...: what `exec` accepts."""
    return ["node" if n["id"] == 1 else f"node{n['id']}" for n in nodes(state)]


def node_netns(state: dict[str, Any]) -> list[str]:
    return [n["netns"] for n in nodes(state)]


def netns_of(state: dict[str, Any], pod: str) -> str:
    if pod in node_names(state):
        return nodes(state)[node_names(state).index(pod)]["netns"]
    return f"{state['prefix']}-{pod}"


def pod_names(state: dict[str, Any]) -> list[str]:
    return [p["name"] for p in state["pods"]]


def check_pod(state: dict[str, Any], pod: str) -> dict[str, Any] | None:
    """The pod's record (None for a node); an error naming the valid pods otherwise."""
    if pod in node_names(state):
        return None
    for p in state["pods"]:
        if p["name"] == pod:
            return p
    valid = ", ".join([*node_names(state), *pod_names(state)])
    raise MeshlabError(f"unknown pod {pod!r}; expected one of: {valid}")


def netns_pids(netns: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(x) for x in proc.stdout.split()] if proc.returncode == 0 else []


def existing_netns(prefix: str) -> list[str]:
    proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"{prefix}-")]


def server_url(state: dict[str, Any], pair: int = 1) -> str:
    svc = next(s for s in state["services"] if s["pair"] == pair)
    port = "" if svc["port"] == 80 else f":{svc['port']}"
    return f"http://{svc['vip']}{port}/get"


def status(state: dict[str, Any]) -> dict[str, Any]:
    """The `meshlab testbed status --json` document."""
    live = set(existing_netns(state["prefix"]))
    by_id = {n["id"]: n for n in nodes(state)}
    pods = {}
    for p in state["pods"]:
        netns = netns_of(state, p["name"])
        pods[p["name"]] = {
            "netns": netns,
            "ip": p["ip"],
            "role": p["role"],
            "pair": p["pair"],
            "node": by_id[p.get("node", 1)]["netns"],
            "up": netns in live,
            "pids": netns_pids(netns) if netns in live else [],
            "cgroup": f"{state['cgroup_root']}/{p['name']}",
        }
    flood = state.get("flood", {})
    spec = flood.get("spec", "off")
    pods_n, services_n = (0, 0) if spec == "off" else map(int, spec.split("x"))
    node_up = state["node_netns"] in live
    node_docs = {
        n["netns"]: {
            "id": n["id"],
            "up": n["netns"] in live,
            "gateway": n["gateway"],
            "link_ip": n["link_ip"],
            "pods": [p["name"] for p in state["pods"] if p.get("node", 1) == n["id"]],
            "rules": save_line_count(n["netns"]) if n["netns"] in live else None,
        }
        for n in nodes(state)
    }
    dataplane = {str(k): v for k, v in state.get("dataplane", {}).items()}
    arms = sorted(set(dataplane.values()))
    doc: dict[str, Any] = {
        "dataplane": arms[0] if len(arms) == 1 else dataplane,
        "dataplane_by_pair": dataplane,
        "flood": {
            "spec": spec,
            "pods": pods_n,
            "services": services_n,
            "rules": node_docs[state["node_netns"]]["rules"],  # node 1's
        },
        "pods": pods,
        "placement": state.get("placement", "same-node"),
        "node": {"netns": state["node_netns"], "up": node_up, "gateway": state["gateway"]},
        "nodes": node_docs,
        "server_url": server_url(state),
        "duet": state.get("duet", False),
    }
    from meshlab.ebpf import status as ebpf_status

    doc["ebpf"] = ebpf_status(Path(state["bpf_pin_root"]))  # programs, map counts, modes
    return doc
