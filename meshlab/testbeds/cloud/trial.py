"""The cloud testbed's trials: what fits the cluster, a trial's preparation, and judging a
trial from the raw files the playbook fetched from the nodes.

playbooks/tasks/trial_cloud.yml drives one plan step:

    next -> arm (merbridge role) -> flood + settle gate (flooder role) -> prepare
         -> k6 on the load-test node while every node samples -> fetch into RAW -> ingest

`ingest` reads RAW (flat, names fixed by the playbook):

    k6-raw.csv.gz, k6-summary.json   k6's own files, untouched (missing: rejected, with a reason)
    k6-output.txt                     k6's stdout/stderr
    k6-run.json                       {"rc", "started", "ended", "cpus", "host"} from the node agent
    <host>.proc-stat.jsonl            per-second /proc/stat of that node (results/README.md format)
    <host>.cgroup-cpu.jsonl           per-second cpu.stat of the experiment containers on that node
    <host>.containers.json            which container is which component there (pod, cpus, cgroup)
    <host>.settle.json                the flooder role's settle result on that node
    <host>.node-window.json           the node's snapshots at the window's edges (trial agent):
                                      judged by meshlab.testbeds.cloud.trial_evidence into
                                      path-evidence.json and host-cpus.json

and writes the trial directory exactly as the local testbed does (results/README.md), trial.json
last. Steal and node CPU count only the nodes that ran a measured container (the load-test node
with k6 and the client sidecar, the server's node); every sample keeps its node in `host`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from meshlab.core.arms import CLOUD_DATAPLANES
from meshlab.core.procstat import read_jsonl
from meshlab.errors import MeshlabError
from meshlab.record.format import COMPONENTS, Manifest, TrialRecord, iso_of
from meshlab.record.rundir import TrialDir
from meshlab.record.spec import Experiment
from meshlab.testbeds.cloud import trial_evidence
from meshlab.trial import load
from meshlab.trial.judge import Evidence, judge
from meshlab.trial.slot import TrialSlot

# The arm switch on the cluster: the merbridge role's state per dataplane.
MERBRIDGE_STATE = dict(zip(CLOUD_DATAPLANES, ("absent", "present"), strict=True))
K6_FILES = TrialDir.K6_FILES
RAW_DIR_NAME = ".raw"
SAMPLE_INTERVAL_S = 0.2  # as on the local testbed: the window's edges are interpolated


def check_fits(exp: Experiment, source: str) -> None:
    """Refuse, naming the field, what the cluster cannot run (before anything is planned)."""
    if exp.design == "duet":
        raise MeshlabError(
            f"{source}: design: duet is not supported on the cloud testbed: the load-test node "
            "has room for one pinned k6 + sidecar pair (4 vCPU, CPU 0 reserved); use rmit"
        )
    for name, arm in exp.arms.items():
        if arm.dataplane not in CLOUD_DATAPLANES:
            raise MeshlabError(
                f"{source}: arms.{name}.dataplane: {arm.dataplane} exists only on the local "
                f"testbed; the cloud testbed runs {', '.join(MERBRIDGE_STATE)} (Merbridge absent "
                "or present)"
            )
    if exp.saturation is not None:
        raise MeshlabError(
            f"{source}: saturation: the saturation search grows the plan as it measures; the "
            "cloud play's step loop is bounded by the plan it starts with, so it runs on the "
            "local testbed only for now"
        )
    if len(exp.placement) > 1:
        raise MeshlabError(
            f"{source}: placement: the cloud testbed runs one placement per run "
            f"({' or '.join(exp.placement)}): moving the server pod between nodes mid-run is a "
            "reschedule onto other exclusive CPUs, not a link move; run each placement on its own"
        )
    for i, lp in enumerate(exp.load_points):
        if lp.connection_mode == "new-connection":
            raise MeshlabError(
                f"{source}: load_points[{i}].connection_mode: new-connection is not supported on "
                "the cloud testbed yet (Istio keeps pooling sidecar-to-sidecar connections, so "
                "only the k6 hop would be new); use keepalive"
            )


def prepare(
    manifest: Manifest, slot: TrialSlot, target_url: str, k6_memory_limit: int
) -> dict[str, Any]:
    """Create the trial dir and its load.js; say what the playbook needs to run k6."""
    exp = manifest.experiment
    entry = slot.entry
    lp = exp.load_point(entry.load_point)
    url = load.with_path(target_url, lp.path)
    slot.dir.open_empty()
    script = slot.dir.write_load_script(load.script(lp, url))
    dataplane = exp.arms[entry.arm].dataplane
    return {
        "index": entry.index,
        "trial_id": slot.id,
        "dir": str(slot.dir.path.resolve()),
        "raw_dir": str((slot.dir.path / RAW_DIR_NAME).resolve()),
        "load_js": str(script.resolve()),
        "url": url,
        "arm": entry.arm,
        "dataplane": dataplane,
        "merbridge_state": MERBRIDGE_STATE.get(dataplane),
        "flood": entry.flood.as_dict(),
        # Paths relative to the node's trial directory (the node agent runs k6 there).
        "k6_args": load.run_args(K6_FILES[0], K6_FILES[1], TrialDir.LOAD_SCRIPT),
        "k6_env": [f"{k}={v}" for k, v in load.k6_env(lp, k6_memory_limit).items()],
        "sample_interval_s": SAMPLE_INTERVAL_S,
        "time_limit_s": load.time_limit_s(lp),
        # k6 measures until warm-up + duration after its start: the controller waits that long
        # without touching the nodes (trial_cloud.yml), then collects.
        "measured_until_s": lp.warmup_s + lp.duration_s,
    }


# ---- ingest --------------------------------------------------------------------------------


def _read_json(path: Path, problems: list[str], what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        problems.append(f"{what} unreadable ({path.name}: {err})"[:200])
        return None


def _per_host(raw: Path, suffix: str) -> dict[str, Path]:
    return {p.name.removesuffix(suffix): p for p in sorted(raw.glob(f"*{suffix}"))}


def _k6_run(raw: Path, problems: list[str]) -> dict[str, Any]:
    path = raw / "k6-run.json"
    if not path.exists():
        problems.append("k6-run.json missing: no record of the k6 run from the load-test node")
        return {}
    doc = _read_json(path, problems, "k6 run record")
    return doc if isinstance(doc, dict) else {}


def _containers(raw: Path, problems: list[str]) -> dict[str, dict[str, Any]]:
    """component -> {host, pod, cpus, ...} from every node's containers.json."""
    found: dict[str, dict[str, Any]] = {}
    for host, path in _per_host(raw, ".containers.json").items():
        doc = _read_json(path, problems, f"container list of {host}")
        for c in doc if isinstance(doc, list) else []:
            if c.get("component") in COMPONENTS:
                found[c["component"]] = {**c, "host": c.get("host") or host}
    missing = [c for c in COMPONENTS if c not in found]
    if missing:
        problems.append(f"no running container found on any node for {', '.join(missing)}")
    return found


def _settle(raw: Path, problems: list[str]) -> dict[str, Any]:
    """The worst node's settle result: longest wait, busiest kube-proxy, most rules."""
    records = []
    for host, path in _per_host(raw, ".settle.json").items():
        doc = _read_json(path, problems, f"settle result of {host}")
        if isinstance(doc, dict):
            records.append(doc)
    if not records:
        problems.append("no settle result (settle.json) from any node: the flood was not settled")
        return {
            "seconds": None,
            "cpu_busy_percent": None,
            "rules_stable": False,
            "rules": None,
            "timed_out": True,
        }
    return {
        "seconds": max(float(r.get("seconds") or 0) for r in records),
        "cpu_busy_percent": max(float(r.get("cpu_busy_percent") or 0) for r in records),
        "rules_stable": all(bool(r.get("rules_stable")) for r in records),
        "rules": max(int(r.get("rules") or 0) for r in records),
        "timed_out": any(bool(r.get("timed_out")) for r in records),
    }


def _place_k6_files(raw: Path, slot: TrialSlot, problems: list[str]) -> str:
    for name in K6_FILES:
        if (raw / name).exists():
            (raw / name).replace(slot.dir.file(name))  # same file system: atomic
        else:
            problems.append(f"{name} missing: not fetched from the load-test node")
    path = raw / TrialDir.K6_OUTPUT
    return path.read_text(errors="replace") if path.exists() else ""


def ingest(manifest: Manifest, slot: TrialSlot, raw: Path) -> TrialRecord:
    """Judge `entry` from the fetched files in `raw`; write the trial dir as the local testbed
    does, trial.json last. Missing or broken inputs reject the trial, naming what was missing;
    they never raise."""
    exp = manifest.experiment
    lp = exp.load_point(slot.entry.load_point)
    if not slot.dir.path.is_dir():
        raise MeshlabError(f"{slot.dir.path}: no such trial directory (run `prepare` first)")
    if slot.dir.finished:
        raise MeshlabError(f"{slot.dir.path}: already judged ({slot.dir.TRIAL} exists)")
    if not raw.is_dir():
        raise MeshlabError(f"{raw}: no such directory of fetched raw files")
    problems: list[str] = []

    run = _k6_run(raw, problems)
    rc = int(run["rc"]) if isinstance(run.get("rc"), int) else -1
    k6_output = _place_k6_files(raw, slot, problems)
    containers = _containers(raw, problems)
    settled = _settle(raw, problems)

    stat_all = {h: read_jsonl(p) for h, p in _per_host(raw, ".proc-stat.jsonl").items()}
    cg_rows = [
        r
        for p in _per_host(raw, ".cgroup-cpu.jsonl").values()
        for r in read_jsonl(p)
        if r.get("component") in COMPONENTS
    ]
    started = run.get("started")
    if not isinstance(started, int | float):
        # No launch time: anchor on the samples so the files are kept; the trial is rejected.
        ts = [float(r["t"]) for rows in stat_all.values() for r in rows]
        started = min(ts) if ts else 0.0
    ended = run.get("ended") if isinstance(run.get("ended"), int | float) else started

    # Steal and node CPU count the nodes that ran this trial's containers (all nodes if that
    # is unknown); the judge rejects any of them, or any container, whose samples do not cover
    # the measured window.
    measured = sorted({c["host"] for c in containers.values()}) or sorted(stat_all)
    for host in measured:
        if not stat_all.get(host):
            problems.append(f"no /proc/stat samples from {host} covering the measured window")
    for name in COMPONENTS:
        if name in containers and not any(r["component"] == name for r in cg_rows):
            problems.append(f"no cgroup CPU samples of {name} covering the measured window")
    stat_rows = [r for h in measured for r in stat_all.get(h, [])]

    # Which path each hop took and what else ran on the exclusive CPUs (the nodes' snapshots at
    # the window's edges): reasons reject the trial like any other problem.
    dataplane = exp.arms[slot.entry.arm].dataplane
    paths, cpus, reasons = trial_evidence.collect(raw, dataplane, (started + lp.warmup_s, ended))
    problems += reasons
    slot.dir.write_json(slot.dir.PATH_EVIDENCE, paths)
    path = trial_evidence.as_path(paths)
    slot.dir.write_json(slot.dir.HOST_CPUS, cpus)

    # The raw sample files, complete, then trial.json (judge) last.
    slot.dir.write_samples(stat_rows, cg_rows)
    slot.dir.write_k6_output(k6_output)
    if raw.resolve().parent == slot.dir.path.resolve():
        shutil.rmtree(raw)  # the fetch staging area inside the trial dir is scratch

    evidence = Evidence(
        started_at=iso_of(started),
        ended_at=iso_of(ended),
        planned_start=started + lp.warmup_s,
        settle=settled,
        stat_rows=stat_rows,
        cgroup_rows=cg_rows,
        rc=rc,
        k6_output=k6_output,
        k6_env={str(k): str(v) for k, v in (run.get("env") or {}).items()},
        pinning={
            name: str(containers[name].get("cpus", "")) for name in COMPONENTS if name in containers
        },
        pods={
            "client": str(containers.get("k6", {}).get("pod", "")),
            "server": str(containers.get("app", {}).get("pod", "")),
        },
        problems=problems,
        path=path,
    )
    return judge(exp, lp, slot, evidence)
