"""Load, attach, switch and remove meshlab's eBPF arm (the Merbridge-equivalent redirection).

State lives in the kernel only: programs and maps pinned under a bpffs folder (the pin root,
`/sys/fs/bpf/meshlab` for the testbed), programs attached to the pod cgroups with
BPF_F_ALLOW_MULTI. Every call reconciles that state towards what was asked, so each one is
idempotent and a crashed run is repaired by the next call:

- attach(..., mode): loads the objects if they are not pinned (or older than the build),
  fills the pod maps, attaches the mode's programs to each pod cgroup and removes ours from
  any other cgroup. ebpf <-> ebpf-connect swaps the sockops program with BPF_F_REPLACE
  (atomic per cgroup) and keeps connect4/getsockopt attached throughout, so the switch never
  leaves a pod uncaptured and no workload restarts.
- detach(): removes our programs from every cgroup, the sk_msg verdict from the sockhash,
  and unpins everything under the pin root.
- status(): what is attached where, map entry counts, counters, and the derived mode.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
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
# How long readers get to consume data already redirected onto their ingress lists before the
# sockhash is emptied (the kernel discards what is still queued when a socket leaves it).
DRAIN_SECONDS = 0.25


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


# --- pure decisions --------------------------------------------------------------------------


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


def validate_request(
    pod_cgroups: Mapping[str, Path],
    pod_ips: Mapping[str, str],
    mode: str,
    pod_nodes: Mapping[str, int] | None = None,
) -> None:
    if mode not in MODES:
        raise MeshlabError(f"eBPF mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not pod_cgroups:
        raise MeshlabError("eBPF attach: no pod cgroups given")
    for pod in pod_cgroups:
        if pod not in pod_ips:
            raise MeshlabError(f"eBPF attach: pod {pod!r} has a cgroup but no IP")
    for pod, ip in pod_ips.items():
        try:
            layouts.ip4(ip)
        except ValueError as err:
            raise MeshlabError(f"eBPF attach: pod {pod!r}: {err}") from err
    for pod, node in (pod_nodes or {}).items():
        if pod not in pod_cgroups:
            raise MeshlabError(f"eBPF attach: pod {pod!r} has a node but no cgroup")
        if not 1 <= node <= MAX_NODE:
            raise MeshlabError(f"eBPF attach: pod {pod!r}: node must be 1..{MAX_NODE}, got {node}")


# --- host plumbing ---------------------------------------------------------------------------


def _mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


def _cgroup2_mounts() -> list[Path]:
    mounts = features.cgroup2_mounts(_mountinfo())
    if not mounts:
        raise MeshlabError("eBPF arm unavailable: missing cgroup v2 (no cgroup2 mount)")
    return mounts


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


def _prog_name(prog_id: int) -> str | None:
    try:
        fd = bpfsys.prog_fd_by_id(prog_id)
    except BpfError:
        return None
    try:
        return bpfsys.prog_info(fd).name
    finally:
        os.close(fd)


# --- load / unpin ----------------------------------------------------------------------------


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


# Removal order: stop redirecting new connections first, keep answering SO_ORIGINAL_DST for
# connections already redirected until last (a sidecar may not have accepted them yet).
_DETACH_ORDER = (bpfsys.CGROUP_INET4_CONNECT, bpfsys.CGROUP_SOCK_OPS, bpfsys.CGROUP_GETSOCKOPT)
# Grace between the first and the last step when there is no splice drain to wait for anyway.
GRACE_SECONDS = 0.1


def _teardown(pins: Pins, cgroup_root: Path | None = None) -> dict:
    """Detach our programs everywhere, then unpin. Idempotent; returns what it removed."""
    removed: dict = {"cgroups": {}, "msg_verdict": False, "unpinned": False}
    try:
        ours = {info.id: name for name, info in _pinned_progs(pins).items()}
    except BpfError:
        ours = {}
    scope = cgroup_root.resolve() if cgroup_root else None
    doomed: list[tuple[Path, int, int, str]] = []
    for cgroup in _cgroups():
        for attach_type, prog_id in _cgroup_attachments(cgroup):
            name = ours.get(prog_id)
            if name is None and scope is not None and cgroup.is_relative_to(scope):
                # Pins lost (e.g. bpffs unmounted): recognise ours by name, but only
                # inside the caller's own cgroup subtree.
                candidate = _prog_name(prog_id)
                if candidate and candidate.startswith(PROG_PREFIX):
                    name = candidate
            if name is not None:
                doomed.append((cgroup, attach_type, prog_id, name))
    for step, attach_type in enumerate(_DETACH_ORDER):
        for cgroup, a_type, prog_id, name in doomed:
            if a_type != attach_type:
                continue
            _detach_id(cgroup, prog_id, a_type)
            removed["cgroups"].setdefault(str(cgroup), []).append(
                {"program": name, "attach_type": bpfsys.ATTACH_TYPE_NAMES[a_type]}
            )
        if step == 0:
            with suppress(BpfError):
                # Before the sockhash is freed with its pins (which would drop queued data).
                drained = _unsplice(pins) if _splice_on_safe(pins) else 0
                if not drained and doomed:
                    time.sleep(GRACE_SECONDS)
    removed["msg_verdict"] = _detach_verdict(pins)
    if pins.root.exists():
        shutil.rmtree(pins.root)  # bpffs supports unlink/rmdir: this unpins
        removed["unpinned"] = True
    return removed


def _splice_on_safe(pins: Pins) -> bool:
    return pins.map("ml_config").exists() and _splice_on(pins)


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


# --- sockhash verdict ------------------------------------------------------------------------


def _verdict_attached(pins: Pins) -> bool:
    if not (pins.map(SOCKHASH).exists() and pins.prog("ml_redir").exists()):
        return False
    with bpfsys.pinned(pins.map(SOCKHASH)) as map_fd, bpfsys.pinned(pins.prog("ml_redir")) as pfd:
        try:
            return bpfsys.prog_info(pfd).id in bpfsys.prog_query(map_fd, bpfsys.SK_MSG_VERDICT)
        except BpfError as err:
            if err.errno != errno.EINVAL:
                raise
            # Kernels before 6.0 cannot query a sockmap's programs. Report "not attached":
            # attaching again is harmless, and the verdict goes with the map on teardown.
            return False


def _attach_verdict(pins: Pins) -> None:
    if _verdict_attached(pins):
        return
    with bpfsys.pinned(pins.map(SOCKHASH)) as map_fd, bpfsys.pinned(pins.prog("ml_redir")) as pfd:
        bpfsys.prog_attach(map_fd, pfd, bpfsys.SK_MSG_VERDICT)


def _detach_verdict(pins: Pins) -> bool:
    try:
        if not _verdict_attached(pins):
            return False
        with (
            bpfsys.pinned(pins.map(SOCKHASH)) as map_fd,
            bpfsys.pinned(pins.prog("ml_redir")) as pfd,
        ):
            bpfsys.prog_detach(map_fd, pfd, bpfsys.SK_MSG_VERDICT)
    except BpfError as err:
        if err.errno == errno.ENOENT:
            return False
        raise
    return True


def _flush_sockhash(pins: Pins) -> int:
    with bpfsys.pinned(pins.map(SOCKHASH)) as fd:
        return sum(bpfsys.map_delete(fd, k) for k in bpfsys.map_keys(fd, layouts.Pair.SIZE))


def _splice_on(pins: Pins) -> bool:
    with bpfsys.pinned(pins.map("ml_config")) as fd:
        raw = bpfsys.map_lookup(fd, layouts.u32(0), 4)
    return bool(raw) and raw != b"\0" * 4


def _set_splice(pins: Pins, on: bool) -> None:
    with bpfsys.pinned(pins.map("ml_config")) as fd:
        bpfsys.map_update(fd, layouts.u32(0), layouts.u32(1 if on else 0))


def _unsplice(pins: Pins) -> int:
    """Take every connection off the stack bypass without losing or reordering a byte.

    1. splice off: the verdict stops redirecting (writes take the TCP path, which the
       reader consumes after what is already on its ingress list) and sockops stops
       inserting; 2. wait for readers to drain their ingress lists; 3. empty the sockhash.
    Returns the number of sockets removed.
    """
    if not (pins.map("ml_config").exists() and pins.map(SOCKHASH).exists()):
        return 0
    was_on = _splice_on(pins)
    _set_splice(pins, False)
    if was_on:
        time.sleep(DRAIN_SECONDS)
    return _flush_sockhash(pins)


def _enable_splice(pins: Pins) -> None:
    """Splice on, but only over an empty sockhash: a connection that ever used the TCP path
    while in the map must never start redirecting (later bytes could overtake earlier ones)."""
    if _splice_on(pins):
        return
    _flush_sockhash(pins)  # sockets that could only have been inserted before a drain
    _set_splice(pins, True)


# --- maps ------------------------------------------------------------------------------------


def _cgroup_id(cgroup: Path) -> int:
    # A cgroup v2 directory's inode number is its cgroup id (what the BPF helpers return).
    return cgroup.stat().st_ino


def _register_pods(
    pins: Pins, cgroups: Mapping[str, Path], pods: Mapping[str, layouts.Pod]
) -> None:
    with bpfsys.pinned(pins.map("ml_cgroup_pods")) as fd:
        for pod, cgroup in cgroups.items():
            bpfsys.map_update(fd, layouts.u64(_cgroup_id(cgroup)), pods[pod].encode())


def _unregister_cgroups(pins: Pins, cgroup_ids: set[int]) -> None:
    with bpfsys.pinned(pins.map("ml_cgroup_pods")) as fd:
        for cid in cgroup_ids:
            bpfsys.map_delete(fd, layouts.u64(cid))


def _sockhash_entries(pins: Pins) -> int:
    with bpfsys.pinned(pins.map(SOCKHASH)) as fd:
        return len(bpfsys.map_keys(fd, layouts.Pair.SIZE))


def _sync_pod_ips(pins: Pins, attached_ids: set[int]) -> None:
    """ml_cgroup_pods keeps only cgroups that still carry our programs, and ml_pod_ips (the
    bypass targets, each with its node) is exactly their pods: a pod is a bypass target only
    while its getsockopt hook can answer for connections arriving on 15006."""
    with bpfsys.pinned(pins.map("ml_cgroup_pods")) as fd:
        live: dict[bytes, int] = {}
        for raw_id in bpfsys.map_keys(fd, 8):
            if layouts.read_u64(raw_id) not in attached_ids:
                bpfsys.map_delete(fd, raw_id)
                continue
            value = bpfsys.map_lookup(fd, raw_id, layouts.Pod.SIZE)
            if value is not None:
                pod = layouts.Pod.decode(value)
                live[layouts.ip4(pod.ip)] = pod.node
    with bpfsys.pinned(pins.map("ml_pod_ips")) as fd:
        for raw_ip in bpfsys.map_keys(fd, 4):
            if raw_ip not in live:
                bpfsys.map_delete(fd, raw_ip)
        for raw_ip, node in live.items():
            bpfsys.map_update(fd, raw_ip, layouts.u32(node))


def _attached_cgroups(infos: dict[str, bpfsys.ProgInfo]) -> dict[Path, set[str]]:
    """Every cgroup carrying one of our (pinned) programs -> their names."""
    by_id = {info.id: name for name, info in infos.items()}
    found: dict[Path, set[str]] = {}
    for cgroup in _cgroups():
        names = {by_id[pid] for _t, pid in _cgroup_attachments(cgroup) if pid in by_id}
        if names:
            found[cgroup] = names
    return found


# --- cgroup reconciliation -------------------------------------------------------------------


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


def _settle(pins: Pins, infos: dict[str, bpfsys.ProgInfo]) -> dict[Path, set[str]]:
    """After any change: prune the pod maps, drop the verdict if no cgroup is in `ebpf`."""
    attached = _attached_cgroups(infos)
    _sync_pod_ips(pins, {_cgroup_id(cg) for cg in attached})
    if any("ml_sockops" in names for names in attached.values()):
        _attach_verdict(pins)
        _enable_splice(pins)
    else:
        _unsplice(pins)
        _detach_verdict(pins)
    return attached


def _ensure_loaded(pins: Pins, objects: dict[str, Path]) -> dict[str, bpfsys.ProgInfo]:
    """Load and pin the objects unless a complete, fresh set is pinned already.

    After a rebuild the old programs are replaced: the cgroups they were attached to are
    re-attached in the same arm with the new programs (duet pairs keep their arms).
    """
    infos = _pinned_progs(pins)
    if _complete_and_fresh(pins, infos, objects):
        return infos
    previous: dict[Path, str] = {}
    pods: dict[int, layouts.Pod] = {}
    if infos:
        previous = {cg: cgroup_mode(n) for cg, n in _attached_cgroups(infos).items()}
        pods = _registered(pins)
    _teardown(pins)
    _load(pins, objects)
    infos = _pinned_progs(pins)
    for cgroup, mode in previous.items():
        cid = _cgroup_id(cgroup)
        if mode in MODES and cid in pods:
            _register_pods(pins, {str(cid): cgroup}, {str(cid): pods[cid]})
            if mode == "ebpf":
                _attach_verdict(pins)
            _reconcile_cgroup(cgroup, pins, infos, mode)
    return infos


# --- public API ------------------------------------------------------------------------------


def attach(
    pod_cgroups: Mapping[str, Path],
    pod_ips: Mapping[str, str],
    mode: str = "ebpf",
    *,
    pod_nodes: Mapping[str, int] | None = None,
    pin_root: Path,
    src_dir: Path = build.BPF_DIR,
) -> dict:
    """Put the given pods in `mode` ("ebpf" or "ebpf-connect"); return status().

    pod_cgroups: pod name -> its cgroup v2 directory (programs attach there; children such
    as <pod>/sidecar and <pod>/app inherit them). pod_ips: pod name -> IPv4, for every pod in
    pod_cgroups. pod_nodes: pod name -> the node it runs on (default 1); the same-node bypass
    only joins sidecars of one node. Attaching again with another node re-registers the pod.
    Pods attached earlier and not named here keep their arm (duet: one pair per arm); use
    detach(pod_cgroups=...) to take pods out.
    Raises MeshlabError before touching anything if a feature is missing; if attaching
    fails half-way the eBPF arm is removed completely before the error is raised.
    """
    validate_request(pod_cgroups, pod_ips, mode, pod_nodes)
    nodes = pod_nodes or {}
    pods = {pod: layouts.Pod(pod_ips[pod], nodes.get(pod, 1)) for pod in pod_cgroups}
    cgroups = {pod: _check_pod_cgroup(Path(cg)) for pod, cg in pod_cgroups.items()}
    pin_root = Path(pin_root)
    pins = Pins(pin_root)
    objects = build.ensure_built(src_dir)  # checks the toolchain
    features.raise_if_missing(features.kernel_missing())
    with _lock(pin_root):
        _ensure_bpffs(pin_root)
        try:
            infos = _ensure_loaded(pins, objects)
            _register_pods(pins, cgroups, pods)
            if mode == "ebpf":
                # Before sockops can insert anything: a socket only gets the verdict
                # program that is attached to the map when it is inserted.
                _attach_verdict(pins)
                _enable_splice(pins)
            for cgroup in cgroups.values():
                _reconcile_cgroup(cgroup, pins, infos, mode)
            if mode == "ebpf-connect" and _sockhash_entries(pins):
                # Their sockops no longer inserts; take the sockets already spliced off
                # the bypass (all of them: see _enable_splice), then _settle turns
                # splicing back on for pods still in ebpf.
                _unsplice(pins)
            _settle(pins, infos)
        except (BpfError, OSError, MeshlabError) as err:
            with suppress(BpfError, OSError):
                _teardown(pins)
            if isinstance(err, MeshlabError):
                raise
            raise MeshlabError(f"eBPF attach failed ({err}); the eBPF arm was removed") from err
    return status(pin_root)


def detach(
    pin_root: Path,
    cgroup_root: Path | None = None,
    pod_cgroups: Mapping[str, Path] | None = None,
) -> dict:
    """Remove the eBPF arm. Idempotent.

    Without pod_cgroups: detach from every cgroup, drop the verdict, unpin everything.
    cgroup_root (e.g. /sys/fs/cgroup/unified/meshlab) additionally removes any program named
    ml_* attached inside that subtree even if its pins are gone.
    With pod_cgroups: take only those pods out; unpin once no cgroup is left attached.
    Spliced connections of pods that stay in ebpf fall back to TCP too (see _enable_splice);
    their new connections are spliced again.
    """
    pin_root = Path(pin_root)
    pins = Pins(pin_root)
    with _lock(pin_root):
        try:
            if pod_cgroups is None:
                return _teardown(pins, cgroup_root)
            infos = _pinned_progs(pins)
            removed: dict = {"cgroups": {}, "msg_verdict": False, "unpinned": False}
            if not infos:
                return removed
            existing = [Path(cg) for cg in pod_cgroups.values() if Path(cg).is_dir()]
            leaving = {_cgroup_id(cg) for cg in existing}
            # Bypass targets first (no new connection to their 15006 once their getsockopt
            # hook goes), then the spliced sockets, then their programs.
            _unregister_cgroups(pins, leaving)
            staying = {_cgroup_id(cg) for cg in _attached_cgroups(infos)} - leaving
            _sync_pod_ips(pins, staying)
            for attach_type in _DETACH_ORDER:
                for cgroup in existing:
                    _detach_cgroup(cgroup, pins, infos, attach_type)
                    removed["cgroups"][str(cgroup)] = "detached"
                if attach_type == bpfsys.CGROUP_INET4_CONNECT and not _unsplice(pins):
                    time.sleep(GRACE_SECONDS)
            if not _settle(pins, infos):
                removed.update(_teardown(pins, cgroup_root), cgroups=removed["cgroups"])
            return removed
        except (BpfError, OSError) as err:
            raise MeshlabError(f"eBPF detach failed: {err}") from err


def status(pin_root: Path) -> dict:
    """Attached programs per cgroup, map entry counts, counters, and the arm they amount to.

    Never raises for kernel-side trouble: it reports it under "error" (the testbed's status
    command embeds this document).
    """
    pins = Pins(Path(pin_root))
    out: dict = {
        "mode": "off",
        "pin_root": str(pins.root),
        "loaded": False,
        "programs": {},
        "cgroups": {},
        "modes": {},
        "pods": {},
        "nodes": {},
        "msg_verdict_attached": False,
        "splice": False,
        "maps": {},
        "counters": {},
    }
    if not pins.root.exists():
        return out
    try:
        infos = _pinned_progs(pins)
        out["loaded"] = set(infos) == set(PROGS)
        out["programs"] = {
            name: {"id": info.id, "pinned": str(pins.prog(name))} for name, info in infos.items()
        }
        by_id = {info.id: name for name, info in infos.items()}
        names_per_cgroup: dict[str, set[str]] = {}
        for cgroup in _cgroups():
            entries = [
                {
                    "program": by_id[prog_id],
                    "id": prog_id,
                    "attach_type": bpfsys.ATTACH_TYPE_NAMES[attach_type],
                }
                for attach_type, prog_id in _cgroup_attachments(cgroup)
                if prog_id in by_id
            ]
            if entries:
                out["cgroups"][str(cgroup)] = entries
                names_per_cgroup[str(cgroup)] = {e["program"] for e in entries}
        out["modes"] = {cg: cgroup_mode(names) for cg, names in names_per_cgroup.items()}
        out["msg_verdict_attached"] = _verdict_attached(pins)
        out["splice"] = splice_enabled(pins.root)
        out["maps"] = _map_counts(pins)
        out["counters"] = _counters(pins)
        registered = _registered(pins)
        ids = {cg: _cgroup_id(Path(cg)) for cg in out["cgroups"] if Path(cg).exists()}
        out["pods"] = {cg: registered[i].ip for cg, i in ids.items() if i in registered}
        out["nodes"] = {cg: registered[i].node for cg, i in ids.items() if i in registered}
        out["mode"] = derive_mode(names_per_cgroup, out["msg_verdict_attached"])
    except (BpfError, OSError) as err:
        out["mode"] = "unknown"
        out["error"] = str(err)
    return out


def splice_enabled(pin_root: Path) -> bool:
    """Whether the stack bypass is switched on (ml_config.splice); cheap, takes no lock."""
    return _splice_on_safe(Pins(Path(pin_root)))


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
