"""Which processes ran on a trial's exclusive CPUs during its window, and whether to reject it.

The static CPU manager gives k6, nginx and both sidecars exclusive CPUs, but it confines pod
cgroups only: the kubernetes role also confines systemd's slices to the reserved CPUs
(AllowedCPUs=, roles/kubernetes). This checks that it held, per trial: every node's trial agent
lists every task at the window's start and end (`tasks` in its snapshots: per-task utime+stime,
the CPU it last ran on and the CPUs it may run on, /proc/<pid>/task/<tid>/stat and status,
meshlab/testbeds/cloud/facts/manpages-5.13.yml) and this module compares them.

A task outside the measured containers' cgroups that used CPU during the window is an intruder if
it was last seen on, or is allowed to run on, one of the node's exclusive CPUs. Kernel threads
(PF_KTHREAD, as systemd recognises them: facts systemd-252.yml) are listed but not gated: per-CPU
ones (ksoftirqd/N, kworker/N:M) serve the measured tasks themselves and cannot be moved off.
Tasks that started and ended inside the window are invisible to two snapshots (documented).
Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshlab.testbeds.cloud import upstream

CGROUP_MOUNT = "/sys/fs/cgroup"
ROW = ("pid", "tid", "comm", "flags", "ticks", "processor", "allowed", "cgroup")


def parse_cpulist(text: str) -> set[int]:
    """Kernel list format ("0", "1-3,6") -> CPU numbers; "" -> empty."""
    cpus: set[int] = set()
    for part in str(text).replace(" ", ",").split(","):
        if part:
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def cpulist(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def _rel(cgroup: str) -> str:
    """A container's cgroup directory as /proc/<pid>/cgroup names it (relative to the mount)."""
    return cgroup.split(CGROUP_MOUNT, 1)[-1] or "/"


def _rows(snapshot: Mapping[str, Any] | None) -> tuple[dict[int, dict[str, Any]], int]:
    tasks = (snapshot or {}).get("tasks") or {}
    rows = {}
    for raw in tasks.get("rows") or []:
        if isinstance(raw, Sequence) and len(raw) == len(ROW):
            row = dict(zip(ROW, raw, strict=True))
            rows[int(row["tid"])] = row
    return rows, int(tasks.get("clk_tck") or 100)


def _kernel_thread(row: Mapping[str, Any]) -> bool:
    return bool(int(row["flags"]) & upstream.value("systemd", "kernel_thread_flag"))


def node(
    start: Mapping[str, Any] | None,
    end: Mapping[str, Any] | None,
    containers: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """One node: its exclusive CPUs (the measured containers' cpusets there), the intruders and
    the kernel threads that ran there during the window."""
    exclusive: set[int] = set()
    measured = []
    for c in containers:
        exclusive |= parse_cpulist(str(c.get("cpus") or ""))
        if c.get("cgroup"):
            measured.append(_rel(str(c["cgroup"])))
    before, _ = _rows(start)
    after, clk_tck = _rows(end)
    out: dict[str, Any] = {"exclusive_cpus": cpulist(exclusive), "intruders": [], "kernel": []}
    if not after:
        out["error"] = "no task list at the window's end"
        return out
    for tid, row in after.items():
        used = int(row["ticks"]) - int(before[tid]["ticks"]) if tid in before else int(row["ticks"])
        if used <= 0 or any(
            row["cgroup"] == m or row["cgroup"].startswith(m + "/") for m in measured
        ):
            continue
        last, allowed = int(row["processor"]), parse_cpulist(str(row["allowed"]))
        if last not in exclusive and not allowed & exclusive:
            continue
        entry = {
            "pid": int(row["pid"]),
            "tid": tid,
            "comm": row["comm"],
            "cgroup": row["cgroup"],
            "cpu_seconds": round(used / clk_tck, 3),
            "last_cpu": last,
            "allowed": cpulist(allowed),
            "new": tid not in before,
        }
        out["kernel" if _kernel_thread(row) else "intruders"].append(entry)
    for key in ("intruders", "kernel"):
        out[key].sort(key=lambda e: -e["cpu_seconds"])
    return out


def judge(windows: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Per node that ran a measured container (as its own snapshots list them): the record, and
    one reason per intruder."""
    record: dict[str, Any] = {}
    reasons = []
    for host, w in sorted(windows.items()):
        containers = (w.get("end") or w.get("start") or {}).get("containers") or []
        if not containers:
            continue
        record[host] = node(w.get("start"), w.get("end"), containers)
        if "error" in record[host]:
            reasons.append(
                f"exclusive CPUs: {host}: {record[host]['error']}, so whether anything else "
                "ran on the measured CPUs is unknown"
            )
        for i in record[host]["intruders"]:
            reasons.append(
                f"exclusive CPUs: {host}: {i['comm']} (pid {i['pid']}, {i['cgroup']}) used "
                f"{i['cpu_seconds']} CPU-s during the window and was last on CPU {i['last_cpu']}"
                f" (allowed {i['allowed']}); the measured CPUs are {record[host]['exclusive_cpus']}"
            )
    return record, reasons
