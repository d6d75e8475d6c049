"""Put pod pairs in a dataplane arm, idempotently: the one place an arm is applied, for
`testbed up` (roles/local_dataplane), `meshlab testbed dataplane` and every trial step.

Envoy and nginx keep running. The order keeps mesh traffic captured at every instant: into an
eBPF arm the programs attach before the iptables outbound capture goes; back to iptables the
capture returns before they detach. Nothing is done for pods already in the arm, on the node
they are registered on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from meshlab import ebpf
from meshlab.core.arms import needs_ebpf
from meshlab.errors import MeshlabError
from meshlab.testbeds.local import iptables
from meshlab.testbeds.local.state import ARMS, LocalState


@dataclass
class ArmChange:
    """What applying an arm did (printed as JSON by the role's command)."""

    arm: str
    pairs: list[int]
    attached: bool = False
    detached: bool = False
    capture_changed: list[str] = field(default_factory=list)  # pods whose rules changed
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return self.attached or self.detached or bool(self.capture_changed)

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "changed": self.changed}


def check_arm(arm: str) -> str:
    if arm not in ARMS:
        raise MeshlabError(f"dataplane {arm!r} is not an arm; expected one of {', '.join(ARMS)}")
    return arm


def apply(state: LocalState, arm: str, pairs: list[int] | None = None) -> ArmChange:
    """Put the pods of `pairs` (default: every pair) in `arm`; record it in `state`."""
    check_arm(arm)
    pairs = pairs or state.pairs()
    unknown = sorted(set(pairs) - set(state.pairs()))
    if unknown:
        raise MeshlabError(f"pod pair(s) {unknown} are not on the testbed (pairs {state.pairs()})")
    started = time.monotonic()
    change = ArmChange(arm, list(pairs))
    pods = [p for p in state.pods if p.pair in pairs]
    cgroups = {p.name: state.cgroup(p.name) for p in pods}
    pin_root = Path(state.bpf_pin_root)
    now = ebpf.status(pin_root)
    modes = {now["modes"].get(str(cg), "off") for cg in cgroups.values()}
    nodes_now = [now["nodes"].get(str(cgroups[p.name]), 0) for p in pods]
    if needs_ebpf(arm) and (modes != {arm} or nodes_now != [p.node for p in pods]):
        ebpf.attach(
            cgroups, {p.name: p.ip for p in pods}, arm,
            pod_nodes={p.name: p.node for p in pods}, pin_root=pin_root,
        )  # fmt: skip
        change.attached = True
    for p in pods:
        # only the meshed pods of this pod's node skip conntrack on their 15006 legs (docs/ebpf.md)
        result = iptables.apply_capture(state.netns_of(p.name), arm, state.mesh_ips(p.node))
        if result["changed"]:
            change.capture_changed.append(p.name)
    if not needs_ebpf(arm) and modes != {"off"}:
        ebpf.detach(pin_root, pod_cgroups=cgroups)
        change.detached = True
    for pair in pairs:
        state.dataplane[str(pair)] = arm
    change.seconds = round(time.monotonic() - started, 3)
    return change
