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

import shutil
import time
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

from meshlab.ebpf import bpfsys, build, features, layouts
from meshlab.ebpf.bpfsys import BpfError
from meshlab.ebpf.cgroups import (
    _attached_cgroups,
    _cgroup_attachments,
    _cgroup_id,
    _cgroups,
    _check_pod_cgroup,
    _detach_cgroup,
    _detach_id,
    _reconcile_cgroup,
)
from meshlab.ebpf.pins import (  # noqa: F401 - re-exported: the arm's facts, as before the split
    CGROUP_ATTACH_TYPES,
    CGROUP_PROGS,
    MAPS,
    MAX_NODE,
    MODES,
    PROG_PREFIX,
    PROGS,
    Pins,
    _cgroup2_mounts,
    _complete_and_fresh,
    _counters,
    _ensure_bpffs,
    _load,
    _lock,
    _map_counts,
    _pinned_progs,
    _prog_name,
    _registered,
    cgroup_mode,
    derive_mode,
)
from meshlab.ebpf.splice import (
    _attach_verdict,
    _detach_verdict,
    _enable_splice,
    _sockhash_entries,
    _splice_on_safe,
    _unsplice,
    _verdict_attached,
)
from meshlab.errors import MeshlabError

# --- pure decisions --------------------------------------------------------------------------


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


# --- load / unpin ----------------------------------------------------------------------------


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


# --- sockhash verdict ------------------------------------------------------------------------


# --- maps ------------------------------------------------------------------------------------


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


# --- cgroup reconciliation -------------------------------------------------------------------


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
