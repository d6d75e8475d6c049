"""A trial's gates: the load was what was asked, the host was quiet, and every figure agrees
with an independent one. Each failed gate is one human sentence in `rejection_reasons`."""

from __future__ import annotations

from typing import Any

from meshlab.core.cpuwindow import CpuAccount
from meshlab.record.spec import Gates

# what a failed gate means, where its name alone does not say
WHY = {
    "unattributed_cpu_percent": " (the node's CPUs were busy outside the testbed: another "
    "process ran during the window)",
}


def _components(cpu: dict[str, dict[str, Any]]) -> float:
    """CPU-seconds of every sampled cgroup (not the node's own total)."""
    return sum(float(f["cpu_seconds"]) for name, f in cpu.items() if name != "node_total")


def components_over_node_percent(
    cpu: dict[str, dict[str, Any]], node_busy: float | None
) -> float | None:
    """How far the cgroups' CPU exceeds the node's busy time, in % of it (negative: the
    kernel and everything outside the sampled cgroups). Two ns-precise sources that must
    agree: a component can never use more CPU than the node's CPUs were busy."""
    if not node_busy:
        return None
    return round(100.0 * (_components(cpu) - node_busy) / node_busy, 3)


def unattributed_percent(
    cpu: dict[str, dict[str, Any]], node_busy: float | None, seconds: float
) -> float | None:
    """The node's busy time outside every sampled cgroup, in % of one CPU over the window. On
    the local testbed every process of the system under test is in a sampled cgroup, and what
    is left held at 6-9 % of a CPU whatever the rate or arm (kernel threads and the host's own
    daemons); a neighbour that ran during the window adds to it."""
    if not node_busy or seconds <= 0:
        return None
    return round(100.0 * max(0.0, node_busy - _components(cpu)) / seconds, 3)


def accounting_percent(accounts: dict[str, dict[str, CpuAccount]]) -> float | None:
    """The worst CPU's accounting error, in % of elapsed: idle + iowait + steal plus the
    independent task time must not exceed the elapsed time (busy never negative, and never
    below what tasks ran). Without a task-time source only the first part is checked."""
    worst = None
    for cpus in accounts.values():
        for a in cpus.values():
            accounted = a.idle + a.iowait + a.steal + (a.task or 0.0)
            error = 100.0 * (accounted - a.elapsed) / a.elapsed if a.elapsed > 0 else 0.0
            worst = error if worst is None else max(worst, error)
    return None if worst is None else round(worst, 3)


def housekeeping_percent(
    cpu: dict[str, dict[str, Any]], seconds: float, names: tuple[str, ...]
) -> float | None:
    """CPU of the harness and monitoring cgroups over the window, in % of one CPU (None when
    none was sampled: the cloud nodes keep their agents off the measured CPUs instead)."""
    found = [float(cpu[n]["cpu_seconds"]) for n in names if n in cpu]
    if not found or seconds <= 0:
        return None if not found else 0.0
    return round(100.0 * sum(found) / seconds, 3)


def evaluate_gates(
    *,
    gates: Gates,
    rate: int,
    achieved: float,
    dropped: int,
    failed: int,
    steal: dict[str, float],
    lag: dict[str, Any] | None,
    components_over_node: float | None,
    accounting: float | None,
    housekeeping: float | None,
    unattributed: float | None,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Gate values, limits and verdicts; one human sentence per failed gate. A gate whose
    value could not be computed fails (a figure nothing cross-checks is not trusted).
    `housekeeping` None: a testbed whose harness is not sampled (the cloud's nodes run kubelet,
    containerd and the agent outside the components), where neither it nor the unattributed
    CPU is gated."""
    rate_error = round(100.0 * abs(achieved - rate) / rate, 3)
    table = {
        "dropped_iterations": (dropped, 0),
        "achieved_rate_error": (rate_error, gates.rate_tolerance_percent),
        "failed_requests": (failed, 0),
        "steal_mean_percent": (steal["mean_percent"], gates.steal_mean_percent),
        "steal_max_percent": (steal["max_percent"], gates.steal_max_percent),
        "schedule_lag_p99_ms": (lag and lag["p99_ms"], gates.schedule_lag_p99_ms),
        "schedule_lag_max_ms": (lag and lag["max_ms"], gates.schedule_lag_max_ms),
        "components_over_node_percent": (components_over_node, gates.components_over_node_percent),
        "cpu_accounting_percent": (accounting, gates.cpu_accounting_percent),
        "housekeeping_cpu_percent": (housekeeping, gates.housekeeping_cpu_percent),
        "unattributed_cpu_percent": (unattributed, gates.unattributed_cpu_percent),
    }  # fmt: skip
    if housekeeping is None:  # not measured on this testbed
        del table["housekeeping_cpu_percent"], table["unattributed_cpu_percent"]
    out, reasons = {}, []
    for name, (value, limit) in table.items():
        passed = value is not None and value <= limit
        out[name] = {"value": value, "limit": limit, "pass": passed}
        if not passed:
            reasons.append(
                f"{name} {value} exceeds {limit}{WHY.get(name, '')}"
                if value is not None
                else f"{name}: no value"
            )
    return out, reasons
