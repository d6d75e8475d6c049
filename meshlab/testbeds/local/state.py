"""The local testbed's recorded state (testbed.json), typed, and probes of what is live:
namespaces, processes, rule counts.

The testbed roles write it through `meshlab testbed record-state` (hidden): the topology of the
play merged into what was recorded, validated here, written atomically. The CLI and the trial
loop read it here; a missing or stale file says to run `meshlab testbed up`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from meshlab.core import atomic
from meshlab.core.arms import DATAPLANES
from meshlab.errors import MeshlabError
from meshlab.record.spec import validate_named
from meshlab.testbeds.local.iptables import save_line_count
from meshlab.testbeds.local.topology import topology

ARMS = DATAPLANES
# The components of a pod pair whose CPU every trial measures, by the cgroup they run in.
COMPONENT_CGROUPS = {
    "client_sidecar": ("client", "sidecar"),
    "server_sidecar": ("server", "sidecar"),
    "app": ("server", "app"),
    "k6": ("client", "app"),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pod(_Model):
    name: str
    role: Literal["client", "server"]
    pair: int
    ip: str
    peer: str
    node: int = 1


class Service(_Model):
    name: str
    pair: int
    vip: str
    port: int
    endpoint: str
    target_port: int


class Node(_Model):
    id: int
    netns: str
    gateway: str
    link_ip: str | None = None


class FloodState(_Model):
    spec: str = "off"
    save_lines: int | None = None


class LocalState(_Model):
    """testbed.json: the topology the roles built, the arm of each pod pair, the flood."""

    schema_version: Literal[1] = 1
    prefix: str
    run_dir: str
    cgroup_root: str
    bpf_pin_root: str
    node_netns: str
    nodes: list[Node]
    placement: Literal["same-node", "cross-node"] = "same-node"
    gateway: str
    duet: bool = False
    cpus: dict[str, dict[str, str]]  # pair -> component -> CPU list
    envoy_bin: str
    k6_bin: str
    pods: list[Pod]
    services: list[Service]
    dataplane: dict[str, str] = {}  # pair -> arm
    flood: FloodState = FloodState()

    # ---- names and places ---------------------------------------------------------------

    def node_names(self) -> list[str]:
        """`node` (node 1, as before there were two), `node2`, ...: what `exec` accepts."""
        return ["node" if n.id == 1 else f"node{n.id}" for n in self.nodes]

    def node_netns_list(self) -> list[str]:
        return [n.netns for n in self.nodes]

    def netns_of(self, pod: str) -> str:
        if pod in self.node_names():
            return self.nodes[self.node_names().index(pod)].netns
        return f"{self.prefix}-{pod}"

    def pod(self, name: str) -> Pod | None:
        """The pod's record (None for a node); an error naming the valid pods otherwise."""
        if name in self.node_names():
            return None
        for p in self.pods:
            if p.name == name:
                return p
        valid = ", ".join([*self.node_names(), *(p.name for p in self.pods)])
        raise MeshlabError(f"unknown pod {name!r}; expected one of: {valid}")

    def pair(self, pair: int) -> dict[str, Pod]:
        """role -> pod of one pod pair."""
        return {p.role: p for p in self.pods if p.pair == pair}

    def pairs(self) -> list[int]:
        return sorted({p.pair for p in self.pods})

    def cgroup(self, pod: str, part: str = "") -> Path:
        return Path(self.cgroup_root, pod, part) if part else Path(self.cgroup_root, pod)

    def components(self, pair: int) -> dict[str, Path]:
        """component -> its cgroup, for the pods of `pair`."""
        pods = self.pair(pair)
        return {
            c: self.cgroup(pods[role].name, part) for c, (role, part) in COMPONENT_CGROUPS.items()
        }

    def access_log(self, pod: str, direction: str) -> Path:
        return Path(self.run_dir, pod, "access", f"{direction}.log")

    def server_url(self, pair: int = 1) -> str:
        svc = next(s for s in self.services if s.pair == pair)
        port = "" if svc.port == 80 else f":{svc.port}"
        return f"http://{svc.vip}{port}/get"

    def podexec(self) -> str:
        return f"{self.run_dir}/bin/podexec"

    def mesh_ips(self, node: int) -> list[str]:
        """The meshed pods' IPs on one node (the eBPF arms' same-node bypass, raw rules)."""
        return [p.ip for p in self.pods if p.node == node]


def require_root() -> None:
    if os.geteuid() != 0:
        raise MeshlabError(
            "the local testbed needs root (network namespaces, iptables, cgroups, eBPF); "
            "run meshlab as root or with sudo"
        )


def load(path: Path | None = None) -> LocalState:
    """The recorded state; a clear error when the testbed is not up."""
    path = path or topology().state_file
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise MeshlabError(
            f"the local testbed is not up ({path} is missing); run: meshlab testbed up"
        ) from None
    except json.JSONDecodeError as err:
        raise MeshlabError(f"{path}: not valid JSON ({err}); run: meshlab testbed up") from None
    try:
        return validate_named(LocalState, doc, str(path))
    except MeshlabError as err:
        raise MeshlabError(f"{err} (written by another meshlab? run: meshlab testbed up)") from None


def save(state: LocalState, path: Path | None = None) -> None:
    atomic.write_text(path or topology().state_file, state.model_dump_json(indent=2) + "\n")


def record(layout: dict[str, Any], update: dict[str, Any], path: Path | None = None) -> bool:
    """What the testbed roles write: the play's layout over what was recorded, then the
    update (arm, flood), validated before it replaces the file. True when it changed."""
    path = path or topology().state_file
    try:
        previous = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        previous = {}
    state = validate_named(LocalState, _merge(_merge(previous, layout), update), "testbed state")
    if state.model_dump(mode="json") == previous:
        return False
    save(state, path)
    return True


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def netns_pids(netns: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(x) for x in proc.stdout.split()] if proc.returncode == 0 else []


def existing_netns(prefix: str) -> list[str]:
    proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    return [n for n in names if n.startswith(f"{prefix}-")]


def status(state: LocalState) -> dict[str, Any]:
    """The `meshlab testbed status --json` document."""
    live = set(existing_netns(state.prefix))
    by_id = {n.id: n for n in state.nodes}
    pods = {}
    for p in state.pods:
        netns = state.netns_of(p.name)
        pods[p.name] = {
            "netns": netns,
            "ip": p.ip,
            "role": p.role,
            "pair": p.pair,
            "node": by_id[p.node].netns,
            "up": netns in live,
            "pids": netns_pids(netns) if netns in live else [],
            "cgroup": str(state.cgroup(p.name)),
        }
    spec = state.flood.spec
    pods_n, services_n = (0, 0) if spec == "off" else map(int, spec.split("x"))
    node_docs = {
        n.netns: {
            "id": n.id,
            "up": n.netns in live,
            "gateway": n.gateway,
            "link_ip": n.link_ip,
            "pods": [p.name for p in state.pods if p.node == n.id],
            "rules": save_line_count(n.netns) if n.netns in live else None,
        }
        for n in state.nodes
    }
    arms = sorted(set(state.dataplane.values()))
    doc: dict[str, Any] = {
        "dataplane": arms[0] if len(arms) == 1 else dict(state.dataplane),
        "dataplane_by_pair": dict(state.dataplane),
        "flood": {
            "spec": spec,
            "pods": pods_n,
            "services": services_n,
            "rules": node_docs[state.node_netns]["rules"],  # node 1's
        },
        "pods": pods,
        "placement": state.placement,
        "node": {
            "netns": state.node_netns,
            "up": state.node_netns in live,
            "gateway": state.gateway,
        },
        "nodes": node_docs,
        "server_url": state.server_url(),
        "duet": state.duet,
    }
    from meshlab.ebpf import status as ebpf_status

    doc["ebpf"] = ebpf_status(Path(state.bpf_pin_root))  # programs, map counts, modes
    return doc
