"""The local testbed's path evidence for one pod pair, read just before k6 starts and just
after it exits (meshlab/trial/path.py judges two of them): the nat counters of the rules that
carry each hop in the iptables arm, the eBPF programs' counters, and which eBPF arm each pod's
cgroup is in. Two `iptables-save -c -t nat` and one map read: about 30 ms, outside the window."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from meshlab import ebpf
from meshlab.errors import MeshlabError
from meshlab.testbeds.local.state import LocalState
from meshlab.trial.path import EBPF_COUNTERS, NAT_RULES

_COUNTED = re.compile(r"^\[(\d+):(\d+)\] (.*)$")


def nat_counters(netns: str) -> dict[str, int]:
    """rule text -> packets, from `iptables-save -c -t nat` in a namespace."""
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, "iptables-save", "-c", "-t", "nat"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise MeshlabError(f"iptables-save -c -t nat in {netns} failed: {proc.stderr.strip()}")
    out = {}
    for line in proc.stdout.splitlines():
        m = _COUNTED.match(line)
        if m:
            out[m.group(3)] = int(m.group(1))
    return out


def snapshot(state: LocalState, pair: int) -> dict[str, Any]:
    """{"counters": {name: int | None}, "programs": {pod: mode}} for one pod pair. A rule the
    arm does not have counts None (the judge reads a missing rule as no change)."""
    pods = state.pair(pair)
    nat = {role: nat_counters(state.netns_of(p.name)) for role, p in pods.items()}
    counters: dict[str, int | None] = {
        name: nat[role].get(rule) for name, (role, rule) in NAT_RULES.items()
    }
    status = ebpf.status(Path(state.bpf_pin_root))
    for name in EBPF_COUNTERS:
        counters[name] = status.get("counters", {}).get(name)
    modes = status.get("modes", {})
    programs = {p.name: modes.get(str(state.cgroup(p.name)), "off") for p in pods.values()}
    return {"counters": counters, "programs": programs}
