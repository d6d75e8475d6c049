"""What a cloud node's arm looks like right now, collected for the controller to judge.

Installed beside meshlab-trial-agent by the trial_agent role (standard library only, Debian 12's
python3). It only collects, and records what it could not collect; every decision is made on the
controller by meshlab/testbeds/cloud (node_snapshot, arm_ready, arm_check, host_cpus), which
documents
the snapshot format. Collected:

- bpftool's JSON (Debian 12's bpftool 7.1.0): `cgroup show /sys/fs/cgroup` (what is attached to
  the root cgroup), `map show`, and `map dump id N` of the maps named on the command line;
- per measured pod, `iptables-legacy-save -c -t nat` and `iptables-nft-save -c -t nat` in its
  network namespace (istio-init wrote its rules with one of them);
- per task, /proc/<pid>/task/<tid>/stat (flags, utime+stime, last CPU), its Cpus_allowed_list and
  its process' cgroup (only for the window snapshots: meshlab.testbeds.cloud.host_cpus).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Run = Callable[[list[str]], tuple[int, str, str]]
NAME_LEN = 15  # the kernel keeps 15 characters of a BPF object's name
STAT_FIELDS = {"flags": 9, "utime": 14, "stime": 15, "processor": 39}  # proc(5), 1-based


def run_command(argv: list[str], timeout: float = 30) -> tuple[int, str, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return -1, "", str(err)
    return p.returncode, p.stdout, p.stderr


def _json(run: Run, argv: list[str], errors: list[str]) -> Any:
    rc, out, err = run(argv)
    if rc != 0:
        errors.append(f"{' '.join(argv)}: rc {rc}: {err.strip()[:200]}")
        return None
    try:
        return json.loads(out or "null")
    except ValueError as exc:
        errors.append(f"{' '.join(argv)}: not JSON ({exc})")
        return None


def bpf_state(run: Run, bpftool: str, cgroup2: str, map_names: Iterable[str]) -> dict[str, Any]:
    """What is attached to the root cgroup and the named maps' contents (bpftool's own JSON)."""
    errors: list[str] = []
    before = len(errors)
    shown = _json(run, [bpftool, "-j", "cgroup", "show", cgroup2], errors)
    if shown is None and len(errors) == before:
        shown = []  # bpftool prints nothing at all for a cgroup without programs
    maps = _json(run, [bpftool, "-j", "map", "show"], errors)
    dumps: dict[str, list[dict[str, Any]]] = {}
    wanted = {name[:NAME_LEN]: name for name in map_names}
    for row in maps if isinstance(maps, list) else []:
        name = wanted.get(str(row.get("name", ""))[:NAME_LEN])
        if name is None:
            continue
        entries = _json(run, [bpftool, "-j", "map", "dump", "id", str(row["id"])], errors)
        dumps.setdefault(name, []).append({"id": row["id"], "entries": entries or []})
    return {"cgroup_show": shown, "map_show": maps, "dumps": dumps, "errors": errors}


def netfilter(run: Run, pid: int) -> dict[str, Any]:
    """The nat table with counters in pid's network namespace, from both iptables backends."""
    out: dict[str, Any] = {"errors": []}
    for backend in ("legacy", "nft"):
        argv = [
            "nsenter",
            f"--net=/proc/{pid}/ns/net",
            "--",
            f"iptables-{backend}-save",
            "-c",
            "-t",
            "nat",
        ]
        rc, text, err = run(argv)
        if rc == 0:
            out[backend] = text
        else:
            out["errors"].append(f"iptables-{backend}-save: rc {rc}: {err.strip()[:200]}")
    return out


def _stat_row(text: str) -> tuple[str, list[str]]:
    """(comm, fields from 3 on): comm may hold spaces and parentheses, so split at the last ')'."""
    head, _, rest = text.rpartition(")")
    return head.partition("(")[2], rest.split()


def _field(rest: list[str], number: int) -> int:
    return int(rest[number - 3])


def _allowed(status: str) -> str:
    for line in status.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return ""


def _cgroup(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip()
    return ""


def tasks(proc: Path = Path("/proc")) -> dict[str, Any]:
    """Every task: [pid, tid, comm, flags, utime+stime ticks, last CPU, allowed CPUs, cgroup]."""
    rows = []
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cgroup = _cgroup((pid_dir / "cgroup").read_text())
            task_dirs = list((pid_dir / "task").iterdir())
        except OSError:
            continue  # the process ended meanwhile
        for task in task_dirs:
            try:
                comm, rest = _stat_row((task / "stat").read_text())
                allowed = _allowed((task / "status").read_text())
                f = {k: _field(rest, n) for k, n in STAT_FIELDS.items()}
            except (OSError, ValueError, IndexError):
                continue
            rows.append(
                [
                    int(pid_dir.name),
                    int(task.name),
                    comm,
                    f["flags"],
                    f["utime"] + f["stime"],
                    f["processor"],
                    allowed,
                    cgroup,
                ]
            )
    return {"clk_tck": os.sysconf("SC_CLK_TCK"), "rows": rows}


class _FileHandle(ctypes.Structure):
    _fields_ = [
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * 8),
    ]


def cgroup_id(path: str) -> int:
    """The cgroup v2 id BPF sees (bpf_get_current_cgroup_id), through name_to_handle_at as the
    kernel's bpf.h says; the directory's inode number (the same id) where that is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        handle, mount_id = _FileHandle(8, 0), ctypes.c_int(0)
        at_fdcwd = -100
        if (
            libc.name_to_handle_at(
                at_fdcwd, path.encode(), ctypes.byref(handle), ctypes.byref(mount_id), 0
            )
            == 0
        ):
            return int.from_bytes(bytes(handle.f_handle), "little")
    except (OSError, AttributeError):
        pass
    return Path(path).stat().st_ino


def pod_ip(run: Run, crictl: str, sandbox: str) -> str:
    rc, out, _ = run([crictl, "inspectp", "-o", "json", sandbox])
    if rc != 0:
        return ""
    try:
        return str(json.loads(out)["status"]["network"]["ip"])
    except (ValueError, KeyError, TypeError):
        return ""


def snapshot(
    host: str,
    containers: list[dict[str, Any]],
    run: Run,
    bpftool: str,
    map_names: Iterable[str],
    target: str = "",
    with_tasks: bool = False,
    cgroup2: str = "/sys/fs/cgroup",
    proc: Path = Path("/proc"),
) -> dict[str, Any]:
    """One node's state now (meshlab/testbeds/cloud/node_snapshot.py describes the format)."""
    t_begin = time.time()
    doc: dict[str, Any] = {
        "host": host,
        "t_begin": t_begin,
        "target": target,
        "containers": containers,
        "errors": [],
    }
    doc["bpf"] = bpf_state(run, bpftool, cgroup2, map_names)
    seen: dict[str, dict[str, Any]] = {}
    for c in containers:
        if c.get("pid") and c.get("pod") not in seen:
            seen[c["pod"]] = netfilter(run, int(c["pid"]))
    doc["netfilter"] = seen
    if with_tasks:
        doc["tasks"] = tasks(proc)
    doc["t_end"] = time.time()
    return doc
