"""The experiment engine, called by experiment.yml (`meshlab engine ...`, hidden). Each command
prints one typed message (experiment/protocol.py):

init     validate the definition, write manifest.json with the seeded plan (or resume one)
run      (local testbed, experiment/local_steps.py) run the steps in this process until the
         plan is done, the noise budget is spent, or the next step needs another block
         (placement, flood) that the playbook's roles apply; progress goes to events.jsonl
next     (cloud, experiment/cloud_steps.py) the next plan step and the arms it needs, or done
prepare  (cloud) a step's trial dir and load.js; what the playbook runs where
ingest   (cloud) judge a trial from the raw files fetched from the nodes
finish   close the run: complete or environment-unfit, with its answer in one line

This module holds what both testbeds share: the plan's next step, the slots, recording a
step's results (re-queues, the noise budget), the estimates so far, and closing the run.

A rejected trial is re-queued right after itself. The plan in the manifest only ever grows;
a resumed run (`--resume`) reruns exactly the steps that lack a trial.json.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshlab.analysis.loading import timing
from meshlab.errors import MeshlabError
from meshlab.experiment import plan as planner
from meshlab.experiment import provenance, saturation_plan, stopping
from meshlab.experiment.protocol import (
    NextStep,
    Planned,
    RunClosed,
    StepResult,
    StopProgress,
    TrialLine,
)
from meshlab.experiment.state import RunState
from meshlab.record import spec
from meshlab.record.format import (
    SCHEMA_VERSION,
    Image,
    Manifest,
    Rejection,
    TrialRecord,
    now_iso,
)
from meshlab.record.rundir import RunDir
from meshlab.testbeds import get as get_testbed
from meshlab.trial.slot import TrialSlot


def init(
    spec_path: Path,
    results_dir: Path,
    resume: Path | None,
    testbed: str = "local",
    inventory: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
    images: dict[str, Any] | None = None,
) -> Planned:
    """`inventory`, `versions` and `images` (as the preflight resolved them) describe a cloud
    testbed; the local one finds its own."""
    bed = get_testbed(testbed)
    if resume:
        run = RunDir(resume)
        manifest = run.load_manifest()
        if manifest.status == "complete":
            raise MeshlabError(f"{run}: this run is already complete; nothing to resume")
        if manifest.testbed != bed.name:
            raise MeshlabError(
                f"{run}: started on the {manifest.testbed} testbed; the inventory now holds "
                f"the {bed.name} testbed (resume it where it started)"
            )
        _same_images(run, manifest, images or {})
        if manifest.schema_version != SCHEMA_VERSION:
            raise MeshlabError(
                f"{run}: written by an older meshlab (schema_version "
                f"{manifest.schema_version}); its trials' figures are not this version's, so it "
                "cannot be resumed: start a new run (meshlab report still reads it)"
            )
        discarded = run.discard_unfinished()
        manifest.status = "running"
        manifest.outcome = None
        manifest.resumed_at.append(now_iso())
        run.save_manifest(manifest)
        exp = manifest.experiment
    else:
        exp = spec.load(spec_path)
        bed.fits(exp, str(spec_path))
        git = provenance.git()
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{git['sha']}"
        run = RunDir(results_dir / exp.id / run_id)
        if run.path.exists():
            raise MeshlabError(f"{run}: already exists; wait a second or use --resume")
        manifest = Manifest(
            experiment=exp,
            spec_hash=exp.spec_hash(),
            spec_file=str(spec_path),
            seed=exp.seed,
            plan=planner.make_plan(exp),
            status="running",
            started_at=now_iso(),
            git=git,
            versions={**provenance.versions(), **(versions or {})},
            host={**provenance.host(), "testbed": bed.name},
            inventory=inventory or {"testbed": ["localhost"], "kind": bed.name},
            pinning=bed.pinning(exp),
            images={k: Image.model_validate(v) for k, v in (images or {}).items()},
        )
        discarded = []
        run.save_manifest(manifest)  # the plan exists before the first trial
    bed.hold(run)
    done = {r.plan_index for _, r in run.records()}
    # The testbed comes up the way the first step still to run needs it (a resume included).
    order = planner.execution_order(manifest.plan)
    first = next((e for e in order if e.index not in done), order[0])
    return Planned(
        run_dir=str(run),
        testbed=bed.name,
        planned=len(manifest.plan),
        done=len(done),
        duet=exp.design == "duet",
        dataplanes=sorted({arm.dataplane for arm in exp.arms.values()}),
        first_flood=str(first.flood),
        first_placement=first.placement,
        max_steps=len(manifest.plan) * (exp.gates.max_requeues + 1) + 1,
        # each block once, plus one: a resume; plus one: the saturation search's return
        max_segments=len({(e.placement, str(e.flood)) for e in manifest.plan})
        + 1
        + (exp.saturation is not None),
        discarded_unfinished=discarded,
    )


def _same_images(run: RunDir, manifest: Manifest, images: dict[str, Any]) -> None:
    """A resumed run must run the images its first trials ran: a moved tag is refused."""
    for key, now in images.items():
        before = manifest.images.get(key)
        if before is not None and before.digest != now.get("digest"):
            raise MeshlabError(
                f"{run}: images.{key}: the run started on {before.image}:{before.tag} "
                f"{before.digest}, which now resolves to {now.get('digest')}; its trials would "
                "mix two images (start a new run)"
            )


# ---- one step at a time ------------------------------------------------------------------


def end_unfit(rs: RunState, reason: str) -> None:
    """The noise budget is spent: the run ends environment-unfit, saying how long and why."""
    gates = rs.manifest.experiment.gates
    spent = rs.budget_spent()
    rs.manifest.status = "environment-unfit"
    rs.manifest.outcome = (
        f"environment unfit after {(spent + rs.waited_s) / 60:.1f} min of waiting and re-runs "
        f"(budget {gates.noise_budget_s / 60:g} min): {reason}"
    )
    rs.save()


def _rejections(rs: RunState) -> str:
    """Why the budget went: the last rejected trial's reasons (an arm that keeps failing its
    integrity check, a gate the host keeps failing), so the run ends saying it."""
    rejected = [r for r in rs.trial_records() if r.status == "rejected"]
    if not rejected:
        return "rejected trials used the noise budget"
    last = max(rejected, key=lambda r: r.started_at)
    return (
        f"{len(rejected)} rejected trials used the noise budget; the last, {last.trial_id}: "
        + "; ".join(last.rejection_reasons)
    )


def next_step(rs: RunState) -> NextStep:
    """The next step to run (one trial; two for duet), or done."""
    if rs.manifest.status == "environment-unfit":
        return NextStep(done=True, reason="environment-unfit")
    if rs.budget_left() <= 0:
        end_unfit(rs, _rejections(rs))
        return NextStep(done=True, reason="environment-unfit")
    exp = rs.manifest.experiment
    stopped = _stopped_blocks(rs)
    pending = [
        e
        for e in planner.execution_order(rs.manifest.plan)
        if e.index not in rs.records and e.round <= stopped.get(stopping.block_of(e), e.round)
    ]
    if not pending and exp.saturation is not None:
        done = {i: r for i, (_, r) in rs.records.items()}
        pending = saturation_plan.extend(exp, rs.manifest.plan, done)
        if pending:
            rs.save()  # the plan grew by the search's next step
    if not pending:
        return NextStep(done=True, reason="complete", stopped_early=sorted(stopped))
    group = planner.next_group(pending, exp.design)
    state = rs.manifest.stopping.get(stopping.block_of(group[0]))
    stop = None
    if state is not None and exp.stop is not None and state.half_width_percent is not None:
        stop = StopProgress(
            half_width_percent=state.half_width_percent,
            target_percent=exp.stop.half_width_percent,
            rounds_left=stopping.rounds_left(state, exp.stop.half_width_percent, exp.rounds),
        )
    block = _block_label(exp, group[0].load_point, group[0].flood, group[0].placement)
    return NextStep(
        done=False,
        indexes=[e.index for e in group],
        flood=group[0].flood.as_dict(),
        placement=group[0].placement,
        dataplanes={str(e.pair): exp.arms[e.arm].dataplane for e in group},
        label=" + ".join(f"{e.arm} r{e.round}" for e in group) + (f" [{block}]" if block else ""),
        position=len(rs.records) + 1,
        total=len(rs.manifest.plan),
        reruns=_reruns(rs.manifest),
        stop=stop,
    )


def _stopped_blocks(rs: RunState) -> dict[str, int]:
    """Adaptive runs: block -> the last round it runs (a block that stopped skips the rest of
    its plan). The stopping state is saved in the manifest; once stopped, a block stays so."""
    manifest = rs.manifest
    if manifest.experiment.stop is None or not rs.records:
        return {}
    states = stopping.evaluate(rs.analysis_run(), manifest)
    for block, old in manifest.stopping.items():
        if old.stopped:
            states[block] = old
    if states != manifest.stopping:
        manifest.stopping = states
        rs.save()
    last_done: dict[str, int] = {}
    for e in manifest.plan:
        if e.index in rs.records:
            key = stopping.block_of(e)
            last_done[key] = max(last_done.get(key, 0), e.round)
    return {b: last_done.get(b, 0) for b, st in states.items() if st.stopped}


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


def slots(rs: RunState, indexes: list[int]) -> list[TrialSlot]:
    plan = rs.manifest.plan
    for i in indexes:
        if not 0 <= i < len(plan):
            raise MeshlabError(f"--index {i}: the plan has entries 0..{len(plan) - 1}")
    out = []
    for i in indexes:
        entry = plan[i]
        attempt = planner.attempt_of(plan, entry)
        tid = planner.trial_id(entry, attempt)
        out.append(TrialSlot(entry, attempt, tid, rs.run.trial(tid)))
    return out


def record(rs: RunState, group: list[TrialSlot], results: list[TrialRecord]) -> StepResult:
    """Keep the step's records, note rejections and re-queue them; the step's summary."""
    previous_end = max((r.window.end for r in rs.trial_records()), default=None)
    max_requeues = rs.manifest.experiment.gates.max_requeues
    for slot, result in zip(group, results, strict=True):
        rs.records[result.plan_index] = (slot.dir, result)
    if any(not r.valid for r in results):
        for slot, result in zip(group, results, strict=True):
            reasons = (
                result.rejection_reasons if not result.valid else ["its duet partner was rejected"]
            )
            rs.manifest.rejections.append(Rejection(trial_id=result.trial_id, reasons=reasons))
            # A duet step is re-run as a whole: its two trials only mean something together.
            # The saturation search re-runs an unusable trial itself (experiment/saturation.py).
            if saturation_plan.is_saturation(slot.entry.load_point):
                continue
            if planner.attempt_of(rs.manifest.plan, slot.entry) <= max_requeues:
                planner.requeue(rs.manifest.plan, slot.entry.index)
        rs.save()
    exp = rs.manifest.experiment
    wall, share = timing.measuring_share(
        rs.manifest, rs.trial_records(), now=datetime.now(UTC).timestamp()
    )
    first = min(r.window.start for r in results)
    entry = group[0].entry
    return StepResult(
        trials=[
            TrialLine(
                id=r.trial_id,
                arm=r.arm,
                round=r.round,
                block=_block_label(exp, r.load_point.name, r.flood.spec, r.placement),
                status=r.status,
                p50_ms=r.summary.latency_ms.get("p50"),
                steal_max_percent=r.steal.max_percent,
                reasons=r.rejection_reasons,
            )
            for r in results
        ],
        done=len(rs.records),
        total=len(rs.manifest.plan),
        reruns=_reruns(rs.manifest),
        so_far=so_far(rs, (entry.load_point, str(entry.flood), entry.placement)),
        wall_s=wall,
        measuring_share=share,
        overhead_s=None if previous_end is None else round(first - previous_end, 3),
    )


def so_far(rs: RunState, block: tuple[str, str, str] | None = None) -> list[str]:
    """The primary estimates so far of the comparison in `block` (load point, flood,
    placement: the block a step just ran; default the first), for progress lines:
    'p50 latency -7.2 % (95 % CI -9.0 to -5.1 %, n=8)' (an adaptive run's: 96 % CI)."""
    from meshlab.analysis.statistics.analyse import analyse
    from meshlab.analysis.statistics.fmt import ci_pct, signed_pct
    from meshlab.analysis.statistics.results import PRIMARY

    try:
        comparisons = analyse(rs.analysis_run(), resamples=0).comparisons
    except MeshlabError:
        return []
    chosen = next((c for c in comparisons if c.pairs.block == block), None) if block else None
    chosen = chosen or (comparisons[0] if comparisons else None)
    if chosen is None or chosen.pairs.n == 0:
        return []
    out = []
    for r in chosen.results:
        if r.family == PRIMARY:
            ci = f"{r.level} CI {ci_pct(r.ci95)}, " if r.ci95 else ""
            out.append(f"{r.metric.phrase} {signed_pct(r.estimate)} ({ci}n={r.n})")
    return out


# ---- closing ------------------------------------------------------------------------------


def finish(run_dir: Path, interrupted: bool = False) -> RunClosed:
    from meshlab.analysis.report.answer import DECIDED, answer

    rs = RunState.load(RunDir(run_dir))
    manifest = rs.manifest
    unfit = manifest.status == "environment-unfit"
    if interrupted:
        manifest.status = "interrupted"
    elif not unfit:
        manifest.status = "complete"
    try:
        from meshlab.analysis.statistics.analyse import analyse

        said = answer(analyse(rs.analysis_run(), resamples=0), manifest.outcome if unfit else None)
        outcome, text = said.outcome, said.line
    except MeshlabError:
        outcome, text = (
            ("environment-unfit" if unfit else "inconclusive"),
            (manifest.outcome or "no valid pairs"),
        )
    if not unfit:
        manifest.outcome = text
    manifest.finished_at = now_iso()
    rs.save()
    if manifest.testbed == "local":
        from meshlab.testbeds.local import lease

        lease.release_playbook_run()  # a playbook run without the CLI gives the testbed back
    records = rs.trial_records()
    rejected = sum(1 for r in records if not r.valid)
    return RunClosed(
        run_dir=str(rs.run),
        status=manifest.status,
        trials=len(records),
        valid=len(records) - rejected,
        rejected=rejected,
        answer=text,
        decided=outcome == DECIDED,
    )
