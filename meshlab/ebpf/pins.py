"""What the eBPF arm loads and where it pins it: the programs and maps (names, attach types,
which arm attaches what), loading the objects with bpftool, and reading back what is pinned
(programs, map entry counts, the counters, the registered pods)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from meshlab.ebpf import bpfsys, build, features, layouts
from meshlab.ebpf.bpfsys import BpfError
from meshlab.errors import MeshlabError

BPFFS_MOUNT = Path("/sys/fs/bpf")


MODES = ("ebpf", "ebpf-connect")


MAX_NODE = 255  # node ids of the testbed's node namespaces (ml_pod.node)


MAPS = (
    "ml_cookie_dst",
    "ml_pair_dst",
    "ml_sock_pairs",
    "ml_pod_ips",
    "ml_cgroup_pods",
    "ml_config",
    "ml_stats",
)


SOCKHASH = "ml_sock_pairs"


PROG_PREFIX = "ml_"


@dataclass(frozen=True)
class Prog:
    name: str
    obj: str  # object stem in bpf/build
    attach_type: int


PROGS: dict[str, Prog] = {
    p.name: p
    for p in (
        Prog("ml_connect4", "mb_connect", bpfsys.CGROUP_INET4_CONNECT),
        Prog("ml_getsockopt", "mb_getsockopt", bpfsys.CGROUP_GETSOCKOPT),
        Prog("ml_sockops", "mb_sockops", bpfsys.CGROUP_SOCK_OPS),
        Prog("ml_sockops_rec", "mb_sockops", bpfsys.CGROUP_SOCK_OPS),
        Prog("ml_redir", "mb_redir", bpfsys.SK_MSG_VERDICT),
    )
}


# What each arm attaches to every pod cgroup (ml_redir goes on the sockhash, ebpf only).
CGROUP_PROGS: dict[str, tuple[str, ...]] = {
    "ebpf": ("ml_connect4", "ml_getsockopt", "ml_sockops"),
    "ebpf-connect": ("ml_connect4", "ml_getsockopt", "ml_sockops_rec"),
}


CGROUP_ATTACH_TYPES = (
    bpfsys.CGROUP_INET4_CONNECT,
    bpfsys.CGROUP_GETSOCKOPT,
    bpfsys.CGROUP_SOCK_OPS,
)


@dataclass(frozen=True)
class Pins:
    """Where things are pinned under one pin root."""

    root: Path

    def prog(self, name: str) -> Path:
        return self.root / "progs" / PROGS[name].obj / name

    def map(self, name: str) -> Path:
        return self.root / "maps" / name


def cgroup_mode(names: set[str]) -> str:
    """The arm one cgroup is in, from the names of our programs attached to it."""
    for mode, progs in CGROUP_PROGS.items():
        if names == set(progs):
            return mode
    return "mixed" if names else "off"


def derive_mode(cgroups: Mapping[str, set[str]], verdict_attached: bool) -> str:
    """The arm the whole kernel state amounts to: off, ebpf, ebpf-connect, or mixed.

    "mixed" is either an inconsistency (a cgroup with half a set) or, legitimately, pods in
    different arms (duet); status() also reports the mode of each cgroup.
    """
    if not cgroups:
        return "mixed" if verdict_attached else "off"
    modes = {cgroup_mode(names) for names in cgroups.values()}
    if len(modes) != 1:
        return "mixed"
    mode = modes.pop()
    if mode not in MODES or verdict_attached != (mode == "ebpf"):
        return "mixed"
    return mode


def _mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


def _cgroup2_mounts() -> list[Path]:
    mounts = features.cgroup2_mounts(_mountinfo())
    if not mounts:
        raise MeshlabError("eBPF arm unavailable: missing cgroup v2 (no cgroup2 mount)")
    return mounts


def _ensure_bpffs(pin_root: Path) -> None:
    mounts = features.fs_mounts(_mountinfo(), "bpf")
    if any(pin_root.is_relative_to(m) for m in mounts):
        return
    if not pin_root.is_relative_to(BPFFS_MOUNT):
        raise MeshlabError(f"eBPF attach: pin root {pin_root} is not on a bpffs mount")
    result = subprocess.run(
        ["mount", "-t", "bpf", "bpf", str(BPFFS_MOUNT)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise MeshlabError(f"eBPF attach: cannot mount bpffs: {result.stderr.strip()}")


@contextmanager
def _lock(pin_root: Path) -> Iterator[None]:
    """One reconciler per pin root at a time (Ansible and a CLI call may overlap)."""
    digest = hashlib.sha256(str(pin_root).encode()).hexdigest()[:12]
    lock_dir = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/run")
    with (lock_dir / f"meshlab-ebpf-{digest}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _prog_name(prog_id: int) -> str | None:
    try:
        fd = bpfsys.prog_fd_by_id(prog_id)
    except BpfError:
        return None
    try:
        return bpfsys.prog_info(fd).name
    finally:
        os.close(fd)


def _pinned_progs(pins: Pins) -> dict[str, bpfsys.ProgInfo]:
    infos: dict[str, bpfsys.ProgInfo] = {}
    for name in PROGS:
        path = pins.prog(name)
        if path.exists():
            with bpfsys.pinned(path) as fd:
                infos[name] = bpfsys.prog_info(fd)
    return infos


def _load_wall_time(info: bpfsys.ProgInfo) -> float:
    # load_time is CLOCK_BOOTTIME; convert to wall clock to compare with file mtimes.
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - info.load_time_ns / 1e9
    return time.time() - age


def _complete_and_fresh(pins: Pins, infos: dict[str, bpfsys.ProgInfo], objects: dict) -> bool:
    if set(infos) != set(PROGS) or not all(pins.map(m).exists() for m in MAPS):
        return False
    loaded = min(_load_wall_time(i) for i in infos.values())
    return all(path.stat().st_mtime <= loaded for path in objects.values())


def _load(pins: Pins, objects: dict[str, Path]) -> None:
    (pins.root / "progs").mkdir(parents=True, exist_ok=True)
    first = True
    for stem in build.OBJECTS:
        argv = ["bpftool", "prog", "loadall", str(objects[stem]), str(pins.root / "progs" / stem)]
        if first:
            # The first object creates every map (all objects declare all of them).
            argv += ["pinmaps", str(pins.root / "maps")]
        else:
            for name in MAPS:
                argv += ["map", "name", name, "pinned", str(pins.map(name))]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise MeshlabError(features.explain_load_error(stem, result.stderr + result.stdout))
        first = False


def _map_counts(pins: Pins) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for name in MAPS:
        path = pins.map(name)
        if not path.exists():
            continue
        with bpfsys.pinned(path) as fd:
            info = bpfsys.map_info(fd)
            if info.type == bpfsys.MAP_TYPE_PERCPU_ARRAY:
                continue  # an array always has max_entries slots; see counters
            counts[name] = {
                "entries": len(bpfsys.map_keys(fd, info.key_size)),
                "max_entries": info.max_entries,
            }
    return counts


def _counters(pins: Pins) -> dict[str, int]:
    path = pins.map("ml_stats")
    if not path.exists():
        return {}
    ncpu = bpfsys.possible_cpus()
    out: dict[str, int] = {}
    with bpfsys.pinned(path) as fd:
        for slot, name in enumerate(layouts.STAT_NAMES):
            raw = bpfsys.map_lookup(fd, layouts.u32(slot), 8 * ncpu)
            out[name] = layouts.percpu_sum(raw) if raw else 0
    return out


def _registered(pins: Pins) -> dict[int, layouts.Pod]:
    """cgroup id -> the pod the loader registered for it (ml_cgroup_pods)."""
    path = pins.map("ml_cgroup_pods")
    if not path.exists():
        return {}
    out: dict[int, layouts.Pod] = {}
    with bpfsys.pinned(path) as fd:
        for raw_id in bpfsys.map_keys(fd, 8):
            value = bpfsys.map_lookup(fd, raw_id, layouts.Pod.SIZE)
            if value is not None:
                pod = layouts.Pod.decode(value)
                # node 0: registered by a loader from before nodes (4-byte values), node 1
                out[layouts.read_u64(raw_id)] = pod if pod.node else layouts.Pod(pod.ip)
    return out
