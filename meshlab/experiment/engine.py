"""The experiment engine's steps, called by experiment.yml (python -m meshlab.experiment ...):

init    validate the definition, write manifest.json with the seeded plan (or resume one)
next    the next plan step (one trial; two for duet) and the arms it needs, or done
step    run that step on the local testbed, judge the gates, re-queue rejections
prepare (cloud) create a step's trial dir and load.js; print what the playbook runs where
ingest  (cloud) judge a trial from the raw files fetched from the nodes, re-queue rejections
finish  close the run: complete, or environment-unfit when too many trials were rejected
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshlab.errors import MeshlabError
from meshlab.experiment import plan as planner
from meshlab.experiment import provenance, spec, store

TESTBEDS = ("netns", "k8s")


def init(
    spec_path: Path,
    results_dir: Path,
    resume: Path | None,
    testbed: str = "netns",
    inventory: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`inventory` and `versions` describe a cloud testbed (k8s); the local one finds its own."""
    if resume:
        run_dir = resume
        manifest = store.load_manifest(run_dir)
        if manifest["status"] == "complete":
            raise MeshlabError(f"{run_dir}: this run is already complete; nothing to resume")
        started_on = manifest.get("host", {}).get("testbed", "netns")
        if started_on != testbed:
            raise MeshlabError(
                f"{run_dir}: started on the {started_on} testbed; the inventory now holds the "
                f"{testbed} testbed (resume it where it started)"
            )
        discarded = store.discard_unfinished(run_dir)
        manifest["status"] = "running"
        manifest.setdefault("resumed_at", []).append(store.now_iso())
        store.save_manifest(run_dir, manifest)
        exp = spec.Experiment.model_validate(manifest["experiment"])
    else:
        exp = spec.load(spec_path)
        if testbed == "k8s":
            from meshlab.experiment.cloud import check_fits

            check_fits(exp, str(spec_path))
        git = provenance.git()
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{git['sha']}"
        run_dir = results_dir / exp.id / run_id
        if run_dir.exists():
            raise MeshlabError(f"{run_dir}: already exists; wait a second or use --resume")
        manifest = {
            "schema_version": store.SCHEMA_VERSION,
            "experiment": exp.canonical(),
            "spec_hash": exp.spec_hash(),
            "spec_file": str(spec_path),
            "seed": exp.seed,
            "plan": planner.make_plan(exp),
            "status": "running",
            "started_at": store.now_iso(),
            "finished_at": None,
            "git": git,
            "versions": {**provenance.versions(), **(versions or {})},
            "host": {**provenance.host(), "testbed": testbed},
            "inventory": inventory or {"testbed": ["localhost"], "kind": "netns"},
            "pinning": _pinning(exp, testbed),
            "rejections": [],
        }
        discarded = []
        store.save_manifest(run_dir, manifest)  # the plan exists before the first trial
    done = store.completed_trials(run_dir)
    return {
        "run_dir": str(run_dir),
        "planned": len(manifest["plan"]),
        "done": len(done),
        "duet": exp.design == "duet",
        "dataplanes": sorted({arm.dataplane for arm in exp.arms.values()}),
        "first_flood": exp.flood_sizes[0],
        "max_steps": len(manifest["plan"]) * (exp.gates.max_requeues + 1) + 1,
        "discarded_unfinished": discarded,
    }


def _pinning(exp: spec.Experiment, testbed: str) -> dict[str, str] | str:
    # Every trial.json records the CPUs its components really ran on.
    if testbed == "k8s":
        return "per trial (Kubernetes static CPU manager: exclusive CPUs of each container)"
    # Duet pairs each own a CPU (testbed layout).
    return exp.pinning.model_dump() if exp.design != "duet" else "per pod pair"


def _rejected_share(manifest: dict[str, Any], done: dict[int, dict[str, Any]]) -> float:
    rejected = sum(1 for t in done.values() if t["status"] == "rejected")
    return rejected / max(1, len(done))


def _too_many_rejections(manifest: dict[str, Any], done: dict[int, dict[str, Any]]) -> bool:
    exp = manifest["experiment"]
    originals = sum(1 for e in manifest["plan"] if "requeue_of" not in e)
    rejected = sum(1 for t in done.values() if t["status"] == "rejected")
    return rejected > exp["gates"]["max_rejected_share"] * originals


def next_step(run_dir: Path) -> dict[str, Any]:
    manifest = store.load_manifest(run_dir)
    done = store.completed_trials(run_dir)
    if _too_many_rejections(manifest, done):
        return {"done": True, "reason": "environment-unfit"}
    pending = [
        e
        for e in planner.execution_order(manifest["plan"], manifest["experiment"]["design"])
        if e["index"] not in done
    ]
    if not pending:
        return {"done": True, "reason": "complete"}
    group = planner.next_group(pending, manifest["experiment"]["design"])
    first = group[0]
    arms = manifest["experiment"]["arms"]
    total = len(manifest["plan"])
    return {
        "done": False,
        "indexes": [e["index"] for e in group],
        "flood": first["flood"],
        "dataplanes": {str(e["pair"]): arms[e["arm"]]["dataplane"] for e in group},
        "label": " + ".join(f"{e['arm']} r{e['round']}" for e in group),
        "position": len(done) + 1,
        "total": total,
    }


def step(run_dir: Path, indexes: list[int]) -> dict[str, Any]:
    from meshlab.experiment.trial import run_step  # heavy imports only when trials run

    manifest = store.load_manifest(run_dir)
    entries = [manifest["plan"][i] for i in indexes]
    results = run_step(run_dir, manifest, entries)
    return _record(run_dir, manifest, entries, results)


def prepare(run_dir: Path, index: int, target_url: str) -> dict[str, Any]:
    from meshlab.experiment import cloud

    return cloud.prepare(run_dir, store.load_manifest(run_dir), index, target_url)


def ingest(run_dir: Path, index: int, raw: Path) -> dict[str, Any]:
    from meshlab.experiment import cloud  # heavy imports only when trials are judged

    manifest = store.load_manifest(run_dir)
    result = cloud.ingest(run_dir, manifest, index, raw)
    return _record(run_dir, manifest, [manifest["plan"][index]], [result])


def _record(
    run_dir: Path,
    manifest: dict[str, Any],
    entries: list[dict[str, Any]],
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    """Note rejections in the manifest and re-queue them; the step's one-line summary."""
    plan = manifest["plan"]
    max_requeues = manifest["experiment"]["gates"]["max_requeues"]
    if any(r["status"] == "rejected" for r in results):
        for entry, result in zip(entries, results, strict=True):
            manifest["rejections"].append(
                {"trial_id": result["trial_id"], "reasons": result["rejection_reasons"]}
                if result["status"] == "rejected"
                else {"trial_id": result["trial_id"], "reasons": ["its duet partner was rejected"]}
            )
            # A duet step is re-run as a whole: its two trials only mean something together.
            if planner.attempt_of(plan, entry) <= max_requeues:
                planner.requeue(plan, entry["index"])
        store.save_manifest(run_dir, manifest)
    done = store.completed_trials(run_dir)
    return {
        "trials": [
            {
                "id": r["trial_id"],
                "arm": r["arm"],
                "round": r["round"],
                "status": r["status"],
                "p50_ms": r["summary"]["latency_ms"].get("p50"),
                "steal_max_percent": r["steal"]["max_percent"],
                "reasons": r["rejection_reasons"],
            }
            for r in results
        ],
        "done": len(done),
        "total": len(plan),
    }


def finish(run_dir: Path, interrupted: bool = False) -> dict[str, Any]:
    manifest = store.load_manifest(run_dir)
    done = store.completed_trials(run_dir)
    if interrupted:
        manifest["status"] = "interrupted"
    elif _too_many_rejections(manifest, done):
        manifest["status"] = "environment-unfit"
    else:
        manifest["status"] = "complete"
    manifest["finished_at"] = store.now_iso()
    store.save_manifest(run_dir, manifest)
    valid = sum(1 for t in done.values() if t["status"] == "valid")
    return {
        "run_dir": str(run_dir),
        "status": manifest["status"],
        "trials": len(done),
        "valid": valid,
        "rejected": len(done) - valid,
        "rejected_share": round(_rejected_share(manifest, done), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshlab.experiment")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init")
    p.add_argument("--spec", type=Path, required=True)
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--resume", type=Path, default=None)
    p.add_argument("--testbed", choices=TESTBEDS, default="netns")
    p.add_argument("--inventory-json", type=json.loads, default=None, help="cloud: groups -> hosts")
    p.add_argument("--versions-json", type=json.loads, default=None, help="cloud: pinned versions")
    for name in ("next", "finish"):
        sub.add_parser(name).add_argument("run_dir", type=Path)
    p = sub.add_parser("step")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--index", type=int, action="append", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--target-url", required=True, help="the server as k6 reaches it: http://HOST")
    p = sub.add_parser("ingest")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--raw", type=Path, required=True, help="directory of the fetched raw files")
    sub.choices["finish"].add_argument("--interrupted", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "init":
            resume = args.resume if args.resume and str(args.resume) else None
            out = init(
                args.spec,
                args.results_dir,
                resume,
                args.testbed,
                args.inventory_json,
                args.versions_json,
            )
        elif args.cmd == "next":
            out = next_step(args.run_dir)
        elif args.cmd == "step":
            out = step(args.run_dir, args.index)
        elif args.cmd == "prepare":
            out = prepare(args.run_dir, args.index, args.target_url)
        elif args.cmd == "ingest":
            out = ingest(args.run_dir, args.index, args.raw)
        else:
            out = finish(args.run_dir, args.interrupted)
    except MeshlabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0
