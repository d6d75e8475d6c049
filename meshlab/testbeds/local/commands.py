"""`meshlab testbed ...`: drive the testbed playbooks, switch arms, read the testbed's state."""

from __future__ import annotations

import subprocess
from typing import Any

from meshlab import ansible
from meshlab.core.arms import needs_ebpf
from meshlab.core.flood import parse_flood
from meshlab.core.placement import PLACEMENTS
from meshlab.errors import MeshlabError
from meshlab.testbeds.local import dataplane as arms
from meshlab.testbeds.local import lease
from meshlab.testbeds.local import state as tb_state


def _arm(dataplane: str) -> str:
    if dataplane not in tb_state.ARMS:
        raise MeshlabError(
            f"--dataplane: {dataplane!r} is not an arm; expected one of {', '.join(tb_state.ARMS)}"
        )
    if needs_ebpf(dataplane):
        # Fails in one line naming the missing kernel or toolchain feature, before anything
        # changes: the testbed stays in the arm it is in.
        from meshlab.ebpf import features

        features.require(build=True)
    return dataplane


def _placement(placement: str) -> str:
    if placement not in PLACEMENTS:
        raise MeshlabError(
            f"--placement: {placement!r} is not a placement; "
            f"expected one of {', '.join(PLACEMENTS)}"
        )
    return placement


def up(
    dataplane: str = "iptables", flood: str = "off", duet: bool = False,
    placement: str = "same-node",
) -> ansible.PlaybookRun:  # fmt: skip
    tb_state.require_root()
    arm = _arm(dataplane)
    spec = str(parse_flood(flood))
    where = _placement(placement)
    with lease.holding("meshlab testbed up"):
        return ansible.run_playbook(
            "playbooks/local_up.yml",
            {
                "meshlab_local_dataplane": arm,
                "meshlab_local_flood": spec,
                "meshlab_local_duet": duet,
                "meshlab_local_placement": where,
            },
            title="testbed up",
        )


def _layout_of(recorded: tb_state.LocalState | None) -> dict[str, Any]:
    """The variables that shape the topology, as the running testbed has them (a command
    that only changes the arm or flood must not move pods or drop pair 2)."""
    return {
        "meshlab_local_duet": recorded.duet if recorded else False,
        "meshlab_local_placement": recorded.placement if recorded else "same-node",
    }


def _layout_of_recorded() -> dict[str, Any]:
    try:
        return _layout_of(tb_state.load())
    except MeshlabError:
        return _layout_of(None)


def set_dataplane(dataplane: str, pairs: list[int] | None = None) -> arms.ArmChange:
    """The arm applied in this process (the same code every trial step runs)."""
    tb_state.require_root()
    arm = _arm(dataplane)
    with lease.holding(f"meshlab testbed dataplane {arm}"):
        current = tb_state.load()
        change = arms.apply(current, arm, pairs)
        tb_state.save(current)
    return change


def set_flood(flood: str) -> ansible.PlaybookRun:
    tb_state.require_root()
    current = tb_state.load()
    spec = str(parse_flood(flood, field="flood"))
    with lease.holding(f"meshlab testbed flood {spec}"):
        return ansible.run_playbook(
            "playbooks/local_flood.yml",
            {"meshlab_local_flood": spec, **_layout_of(current)},
            title=f"flood {spec}",
        )


def down() -> ansible.PlaybookRun:
    tb_state.require_root()
    with lease.holding("meshlab testbed down"):
        return ansible.run_playbook(
            "playbooks/local_down.yml",
            _layout_of_recorded(),
            title="testbed down",
        )


def exec_in_pod(pod: str, argv: list[str]) -> int:
    """Run a command as the pod's app: its namespace and app cgroup (so the eBPF arm applies)."""
    tb_state.require_root()
    if not argv:
        raise MeshlabError("exec: no command given; usage: meshlab testbed exec POD -- CMD...")
    current = tb_state.load()
    record = current.pod(pod)
    netns = current.netns_of(pod)
    if record is None:  # a node namespace has no sidecar, cgroup or pinning
        return subprocess.call(["nsenter", f"--net=/run/netns/{netns}", "--", *argv])
    # A client pod's app is the load generator, pinned with k6; a server pod's app is nginx.
    component = "k6" if record.role == "client" else "app"  # testbed layout keys
    cpus = current.cpus[str(record.pair)][component]
    cgroup = str(current.cgroup(pod, "app"))
    return subprocess.call([current.podexec(), netns, cgroup, cpus, "-", *argv])
