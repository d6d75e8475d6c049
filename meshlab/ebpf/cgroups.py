"""The pod cgroups the eBPF arm attaches to: finding them, what is attached to each, and
reconciling one cgroup towards an arm (attach, replace the sockops program atomically with
BPF_F_REPLACE, detach)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

from meshlab.ebpf import bpfsys
from meshlab.ebpf.bpfsys import BpfError
from meshlab.ebpf.pins import (
    CGROUP_ATTACH_TYPES,
    CGROUP_PROGS,
    PROGS,
    Pins,
    _cgroup2_mounts,
)
from meshlab.errors import MeshlabError


def _check_pod_cgroup(path: Path) -> Path:
    """A pod cgroup must be an existing, non-root cgroup v2 directory."""
    resolved = path.resolve()
    if not resolved.is_dir():
        raise MeshlabError(f"eBPF attach: cgroup {path} does not exist")
    for mount in _cgroup2_mounts():
        if resolved == mount:
            raise MeshlabError(f"eBPF attach: refusing to attach to the root cgroup {path}")
        if resolved.is_relative_to(mount):
            return resolved
    raise MeshlabError(f"eBPF attach: {path} is not on a cgroup v2 mount")


def _cgroups() -> Iterator[Path]:
    """Every cgroup v2 directory on the host (deduplicated across bind mounts)."""
    seen: set[int] = set()
    for mount in _cgroup2_mounts():
        for dirpath, _dirs, _files in os.walk(mount):
            ino = Path(dirpath).stat().st_ino
            if ino not in seen:
                seen.add(ino)
                yield Path(dirpath)


def _cgroup_attachments(cgroup: Path) -> list[tuple[int, int]]:
    """(attach type, prog id) of the programs attached directly to one cgroup."""
    found: list[tuple[int, int]] = []
    try:
        with bpfsys.opened_dir(cgroup) as fd:
            for attach_type in CGROUP_ATTACH_TYPES:
                found += [(attach_type, pid) for pid in bpfsys.prog_query(fd, attach_type)]
    except FileNotFoundError:
        pass  # cgroup removed while we walked
    return found


def _detach_id(cgroup: Path, prog_id: int, attach_type: int) -> None:
    try:
        prog_fd = bpfsys.prog_fd_by_id(prog_id)
    except BpfError as err:
        if err.errno == errno.ENOENT:
            return
        raise
    try:
        with bpfsys.opened_dir(cgroup) as cg_fd:
            bpfsys.prog_detach(cg_fd, prog_fd, attach_type)
    except BpfError as err:
        if err.errno != errno.ENOENT:
            raise
    finally:
        os.close(prog_fd)


def _cgroup_id(cgroup: Path) -> int:
    # A cgroup v2 directory's inode number is its cgroup id (what the BPF helpers return).
    return cgroup.stat().st_ino


def _attached_cgroups(infos: dict[str, bpfsys.ProgInfo]) -> dict[Path, set[str]]:
    """Every cgroup carrying one of our (pinned) programs -> their names."""
    by_id = {info.id: name for name, info in infos.items()}
    found: dict[Path, set[str]] = {}
    for cgroup in _cgroups():
        names = {by_id[pid] for _t, pid in _cgroup_attachments(cgroup) if pid in by_id}
        if names:
            found[cgroup] = names
    return found


def _reconcile_cgroup(cgroup: Path, pins: Pins, infos: dict[str, bpfsys.ProgInfo], mode: str):
    want = CGROUP_PROGS[mode]
    with bpfsys.opened_dir(cgroup) as cg_fd:
        for name in want:
            prog = PROGS[name]
            attached = bpfsys.prog_query(cg_fd, prog.attach_type)
            if infos[name].id in attached:
                continue
            # The other arm's program of the same type (ml_sockops <-> ml_sockops_rec):
            # replace it in place, so the cgroup is never without one.
            rivals = [
                other
                for other, p in PROGS.items()
                if p.attach_type == prog.attach_type
                and other != name
                and infos[other].id in attached
            ]
            with bpfsys.pinned(pins.prog(name)) as prog_fd:
                if rivals:
                    with bpfsys.pinned(pins.prog(rivals[0])) as old_fd:
                        bpfsys.prog_attach(
                            cg_fd,
                            prog_fd,
                            prog.attach_type,
                            bpfsys.F_ALLOW_MULTI | bpfsys.F_REPLACE,
                            old_fd,
                        )
                else:
                    bpfsys.prog_attach(cg_fd, prog_fd, prog.attach_type, bpfsys.F_ALLOW_MULTI)
        # Anything else of ours on this cgroup (a duplicate rival) goes.
        for name, prog in PROGS.items():
            if name in want or prog.attach_type not in CGROUP_ATTACH_TYPES:
                continue
            if infos[name].id in bpfsys.prog_query(cg_fd, prog.attach_type):
                with bpfsys.pinned(pins.prog(name)) as prog_fd:
                    bpfsys.prog_detach(cg_fd, prog_fd, prog.attach_type)


def _detach_cgroup(
    cgroup: Path, pins: Pins, infos: dict[str, bpfsys.ProgInfo], attach_type: int
) -> None:
    with bpfsys.opened_dir(cgroup) as cg_fd:
        for name, prog in PROGS.items():
            if prog.attach_type != attach_type or name not in infos:
                continue
            if infos[name].id in bpfsys.prog_query(cg_fd, prog.attach_type):
                with bpfsys.pinned(pins.prog(name)) as prog_fd:
                    bpfsys.prog_detach(cg_fd, prog_fd, prog.attach_type)
