"""The experiment engine's steps, called by experiment.yml (`meshlab engine ...`, hidden):

init    validate the definition, write manifest.json with the seeded plan (or resume one)
next    the next plan step (one trial; two for duet) and the arms it needs, or done
step    run that step on the local testbed, judge the gates, re-queue rejections
prepare (cloud) create a step's trial dir and load.js; print what the playbook runs where
ingest  (cloud) judge a trial from the raw files fetched from the nodes, re-queue rejections
finish  close the run: complete, or environment-unfit when too many trials were rejected

Each returns a JSON-ready dict: the playbook reads it from stdout.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshlab.errors import MeshlabError
from meshlab.experiment import plan as planner
from meshlab.experiment import provenance, stopping
from meshlab.record import spec, store
from meshlab.record.format import SCHEMA_VERSION, Image, Manifest, PlanEntry, Rejection, TrialRecord
from meshlab.testbed import lease

TESTBEDS = ("netns", "k8s")


def init(
    spec_path: Path,
    results_dir: Path,
    resume: Path | None,
    testbed: str = "netns",
    inventory: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
    images: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`inventory`, `versions` and `images` (as the preflight resolved them) describe a cloud
    testbed (k8s); the local one finds its own."""
    if testbed not in TESTBEDS:
        raise MeshlabError(f"--testbed: {testbed!r} is not a testbed; expected netns or k8s")
    if resume:
        run_dir = resume
        manifest = store.load_manifest(run_dir)
        if manifest.status == "complete":
            raise MeshlabError(f"{run_dir}: this run is already complete; nothing to resume")
        if manifest.testbed != testbed:
            raise MeshlabError(
                f"{run_dir}: started on the {manifest.testbed} testbed; the inventory now holds "
                f"the {testbed} testbed (resume it where it started)"
            )
        _same_images(run_dir, manifest, images or {})
        if manifest.schema_version != SCHEMA_VERSION:
            raise MeshlabError(
                f"{run_dir}: written by an older meshlab (schema_version "
                f"{manifest.schema_version}); its trials' figures are not this version's, so it "
                "cannot be resumed: start a new run (meshlab report still reads it)"
            )
        discarded = store.discard_unfinished(run_dir)
        manifest.status = "running"
        manifest.resumed_at.append(store.now_iso())
        store.save_manifest(run_dir, manifest)
        exp = manifest.experiment
    else:
        exp = spec.load(spec_path)
        if testbed == "k8s":
            from meshlab.experiment.k8s_trial import check_fits

            check_fits(exp, str(spec_path))
        git = provenance.git()
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{git['sha']}"
        run_dir = results_dir / exp.id / run_id
        if run_dir.exists():
            raise MeshlabError(f"{run_dir}: already exists; wait a second or use --resume")
        manifest = Manifest(
            experiment=exp,
            spec_hash=exp.spec_hash(),
            spec_file=str(spec_path),
            seed=exp.seed,
            plan=planner.make_plan(exp),
            status="running",
            started_at=store.now_iso(),
            git=git,
            versions={**provenance.versions(), **(versions or {})},
            host={**provenance.host(), "testbed": testbed},
            inventory=inventory or {"testbed": ["localhost"], "kind": "netns"},
            pinning=_pinning(exp, testbed),
            images={k: Image.model_validate(v) for k, v in (images or {}).items()},
        )
        discarded = []
        store.save_manifest(run_dir, manifest)  # the plan exists before the first trial
    if testbed == "netns":
        _hold_testbed(run_dir)
    done = store.completed_trials(run_dir)
    # The testbed comes up the way the first step still to run needs it (a resume included).
    order = planner.execution_order(manifest.plan, exp.design)
    first = next((e for e in order if e.index not in done), order[0])
    return {
        "run_dir": str(run_dir),
        "planned": len(manifest.plan),
        "done": len(done),
        "duet": exp.design == "duet",
        "dataplanes": sorted({arm.dataplane for arm in exp.arms.values()}),
        "first_flood": str(first.flood),
        "first_placement": first.placement,
        "max_steps": len(manifest.plan) * (exp.gates.max_requeues + 1) + 1,
        "discarded_unfinished": discarded,
    }


def _hold_testbed(run_dir: Path) -> None:
    """The local testbed's lease, for the playbook that runs this plan: shared with meshlab run
    when it holds it, else taken for the ansible-playbook process. A second run is refused
    here, before anything on the testbed changes."""
    holder = lease.acquire("ansible-playbook experiment.yml", pid=lease.playbook_ancestor())
    verb = "meshlab run" if holder.what.startswith("meshlab run") else "ansible-playbook"
    lease.describe_run(holder, f"{verb} {run_dir}")


def _same_images(run_dir: Path, manifest: Manifest, images: dict[str, Any]) -> None:
    """A resumed run must run the images its first trials ran: a moved tag is refused."""
    for key, now in images.items():
        before = manifest.images.get(key)
        if before is not None and before.digest != now.get("digest"):
            raise MeshlabError(
                f"{run_dir}: images.{key}: the run started on {before.image}:{before.tag} "
                f"{before.digest}, which now resolves to {now.get('digest')}; its trials would "
                "mix two images (start a new run)"
            )


def _pinning(exp: spec.Experiment, testbed: str) -> dict[str, dict[str, str]] | str:
    # Every trial.json records the CPUs its components really ran on.
    if testbed == "k8s":
        return "per trial (Kubernetes static CPU manager: exclusive CPUs of each container)"
    if exp.design == "duet":
        return "per pod pair"  # each pair owns a CPU (testbed layout)
    return {p: exp.pinning_for(p).model_dump() for p in exp.placement}


def _rejected(done: dict[int, TrialRecord]) -> int:
    return sum(1 for t in done.values() if not t.valid)


def _too_many_rejections(manifest: Manifest, done: dict[int, TrialRecord]) -> bool:
    originals = sum(1 for e in manifest.plan if e.requeue_of is None)
    return _rejected(done) > manifest.experiment.gates.max_rejected_share * originals


def _stopped_blocks(
    run_dir: Path, manifest: Manifest, done: dict[int, TrialRecord]
) -> dict[str, int]:
    """Adaptive runs: block -> the last round it runs (a block that stopped skips the rest of
    its plan). The stopping state is saved in the manifest; once stopped, a block stays so."""
    if manifest.experiment.stop is None:
        return {}
    states = stopping.evaluate(run_dir, manifest)
    for block, old in manifest.stopping.items():
        if old.stopped:
            states[block] = old
    if states != manifest.stopping:
        manifest.stopping = states
        store.save_manifest(run_dir, manifest)
    last_done: dict[str, int] = {}
    for e in manifest.plan:
        if e.index in done:
            key = stopping.block_of(e)
            last_done[key] = max(last_done.get(key, 0), e.round)
    return {b: last_done.get(b, 0) for b, st in states.items() if st.stopped}


def next_step(run_dir: Path) -> dict[str, Any]:
    manifest = store.load_manifest(run_dir)
    if manifest.testbed == "netns":
        lease.require_held()  # the run that planned this is still alive and holds the testbed
    done = store.completed_trials(run_dir)
    if _too_many_rejections(manifest, done):
        return {"done": True, "reason": "environment-unfit"}
    design = manifest.experiment.design
    stopped = _stopped_blocks(run_dir, manifest, done)
    pending = [
        e
        for e in planner.execution_order(manifest.plan, design)
        if e.index not in done and e.round <= stopped.get(stopping.block_of(e), e.round)
    ]
    if not pending:
        return {"done": True, "reason": "complete", "stopped_early": sorted(stopped)}
    group = planner.next_group(pending, design)
    arms = manifest.experiment.arms
    state = manifest.stopping.get(stopping.block_of(group[0]))
    exp = manifest.experiment
    return {
        "stop": None
        if state is None or exp.stop is None
        else {
            "half_width_percent": state.half_width_percent,
            "target_percent": exp.stop.half_width_percent,
            "rounds_left": stopping.rounds_left(state, exp.stop.half_width_percent, exp.rounds),
        },
        "done": False,
        "indexes": [e.index for e in group],
        "flood": group[0].flood.as_dict(),
        "placement": group[0].placement,
        "dataplanes": {str(e.pair): arms[e.arm].dataplane for e in group},
        "label": " + ".join(f"{e.arm} r{e.round}" for e in group)
        + (
            f" [{block}]"
            if (block := _block_label(exp, group[0].load_point, group[0].flood, group[0].placement))
            else ""
        ),
        "position": len(done) + 1,
        "total": len(manifest.plan),
        "reruns": _reruns(manifest),
    }


def _block_label(exp: spec.Experiment, load_point: str, flood: object, placement: str) -> str:
    """'flood 50x500 cross-node': the factors this run varies, as progress lines show them."""
    parts = []
    if len(exp.load_points) > 1:
        parts.append(load_point)
    if len(exp.flood_sizes) > 1:
        parts.append(f"flood {flood}")
    if len(exp.placement) > 1:
        parts.append(placement)
    return " ".join(parts)


def _reruns(manifest: Manifest) -> int:
    """Plan entries that re-run a rejected trial (so 'total' can say why it grew)."""
    return sum(1 for e in manifest.plan if e.requeue_of is not None)


def _entries(manifest: Manifest, indexes: list[int]) -> list[PlanEntry]:
    plan = manifest.plan
    for i in indexes:
        if not 0 <= i < len(plan):
            raise MeshlabError(f"--index {i}: the plan has entries 0..{len(plan) - 1}")
    return [plan[i] for i in indexes]


def step(run_dir: Path, indexes: list[int]) -> dict[str, Any]:
    from meshlab.experiment.netns_trial import run_step  # heavy imports only when trials run

    lease.require_held()
    manifest = store.load_manifest(run_dir)
    entries = _entries(manifest, indexes)
    results = run_step(run_dir, manifest, entries)
    return _record(run_dir, manifest, entries, results)


def prepare(run_dir: Path, index: int, target_url: str, k6_memory_limit: int) -> dict[str, Any]:
    from meshlab.experiment import k8s_trial

    manifest = store.load_manifest(run_dir)
    entry = _entries(manifest, [index])[0]
    return k8s_trial.prepare(run_dir, manifest, entry, target_url, k6_memory_limit)


def ingest(run_dir: Path, index: int, raw: Path) -> dict[str, Any]:
    from meshlab.experiment import k8s_trial  # heavy imports only when trials are judged

    manifest = store.load_manifest(run_dir)
    entry = _entries(manifest, [index])[0]
    result = k8s_trial.ingest(run_dir, manifest, entry, raw)
    return _record(run_dir, manifest, [entry], [result])


def _record(
    run_dir: Path, manifest: Manifest, entries: list[PlanEntry], results: list[TrialRecord]
) -> dict[str, Any]:
    """Note rejections in the manifest and re-queue them; the step's one-line summary."""
    max_requeues = manifest.experiment.gates.max_requeues
    if any(not r.valid for r in results):
        for entry, result in zip(entries, results, strict=True):
            reasons = (
                result.rejection_reasons if not result.valid else ["its duet partner was rejected"]
            )
            manifest.rejections.append(Rejection(trial_id=result.trial_id, reasons=reasons))
            # A duet step is re-run as a whole: its two trials only mean something together.
            if planner.attempt_of(manifest.plan, entry) <= max_requeues:
                planner.requeue(manifest.plan, entry.index)
        store.save_manifest(run_dir, manifest)
    done = store.completed_trials(run_dir)
    return {
        "trials": [
            {
                "id": r.trial_id,
                "arm": r.arm,
                "round": r.round,
                # the block, for progress lines of runs with several
                "block": _block_label(
                    manifest.experiment, r.load_point.name, r.flood.spec, r.placement
                ),
                "status": r.status,
                "p50_ms": r.summary.latency_ms.get("p50"),
                "steal_max_percent": r.steal.max_percent,
                "reasons": r.rejection_reasons,
            }
            for r in results
        ],
        "done": len(done),
        "total": len(manifest.plan),
        "reruns": _reruns(manifest),
        "so_far": so_far(
            run_dir, (entries[0].load_point, str(entries[0].flood), entries[0].placement)
        ),
    }


def so_far(run_dir: Path, cell: tuple[str, str, str] | None = None) -> list[str]:
    """The primary estimates so far of the comparison in `cell` (load point, flood,
    placement: the block a step just ran; default the first), for progress lines:
    'p50 latency -7.2 % (95 % CI -9.0 to -5.1 %, n=8)' (an adaptive run's: 96 % CI)."""
    from meshlab.analysis.analyse import PRIMARY, analyse
    from meshlab.analysis.fmt import ci_pct, signed_pct
    from meshlab.analysis.run import load_run

    try:
        comparisons = analyse(load_run(run_dir), resamples=0).comparisons
    except MeshlabError:
        return []
    chosen = next((c for c in comparisons if c.pairs.cell == cell), None) if cell else None
    chosen = chosen or (comparisons[0] if comparisons else None)
    if chosen is None or chosen.pairs.n == 0:
        return []
    out = []
    for r in chosen.results:
        if r.family == PRIMARY:
            ci = f"{r.level} CI {ci_pct(r.ci95)}, " if r.ci95 else ""
            out.append(f"{r.metric.phrase} {signed_pct(r.estimate)} ({ci}n={r.n})")
    return out


def finish(run_dir: Path, interrupted: bool = False) -> dict[str, Any]:
    manifest = store.load_manifest(run_dir)
    done = store.completed_trials(run_dir)
    if interrupted:
        manifest.status = "interrupted"
    elif _too_many_rejections(manifest, done):
        manifest.status = "environment-unfit"
    else:
        manifest.status = "complete"
    manifest.finished_at = store.now_iso()
    store.save_manifest(run_dir, manifest)
    rejected = _rejected(done)
    return {
        "run_dir": str(run_dir),
        "status": manifest.status,
        "trials": len(done),
        "valid": len(done) - rejected,
        "rejected": rejected,
        "rejected_share": round(rejected / max(1, len(done)), 3),
    }
