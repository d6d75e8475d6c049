"""Run the trial(s) of one plan step on the local testbed: settle, load, sample, judge, store.

A duet step is two trials started together on pod pairs 1 and 2. The trial dir's trial.json is
written last: its presence is what marks a trial finished (resume relies on it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlab.experiment import measure, store
from meshlab.experiment.load import script
from meshlab.experiment.plan import attempt_of, trial_id
from meshlab.experiment.samplers import Sampler, cpu_busy_now, read_jsonl
from meshlab.experiment.spec import Experiment, LoadPoint
from meshlab.k6.results import read_latencies_ms, summarize
from meshlab.testbed import state as tb_state
from meshlab.testbed.iptables import save_line_count


def _pods_of_pair(tb: dict[str, Any], pair: int) -> dict[str, dict[str, Any]]:
    return {p["role"]: p for p in tb["pods"] if p["pair"] == pair}


def _components(tb: dict[str, Any], pair: int) -> dict[str, Path]:
    pods = _pods_of_pair(tb, pair)
    root = Path(tb["cgroup_root"])
    return {
        "client_sidecar": root / pods["client"]["name"] / "sidecar",
        "server_sidecar": root / pods["server"]["name"] / "sidecar",
        "app": root / pods["server"]["name"] / "app",
        "k6": root / pods["client"]["name"] / "app",
    }


def _cpus(exp: Experiment, tb: dict[str, Any], pair: int) -> dict[str, str]:
    """Pinning per component. Duet pairs each own their CPUs (from the testbed's layout)."""
    if exp.design == "duet":
        c = tb["cpus"][str(pair)]
        return {
            "k6": c["k6"],
            "client_sidecar": c["sidecar"],
            "server_sidecar": c["sidecar"],
            "app": c["app"],
        }
    return exp.pinning.model_dump()


def pin_running(components: dict[str, Path], cpus: dict[str, str]) -> None:
    """Re-pin the running sidecars and nginx (all their threads) to the experiment's CPUs."""
    for name in ("client_sidecar", "server_sidecar", "app"):
        procs = (components[name] / "cgroup.procs").read_text().split()
        for pid in procs:
            subprocess.run(
                ["taskset", "-a", "-cp", cpus[name], pid], capture_output=True, check=False
            )


def settle(tb: dict[str, Any], gates: Any) -> dict[str, Any]:
    """Wait until the node's rule count is stable and no CPU is busier than the threshold."""
    started = time.monotonic()
    deadline = started + gates.settle_timeout_s
    previous = save_line_count(tb["node_netns"])
    busy = 100.0
    stable = False
    while True:
        busy = cpu_busy_now(1.0)
        count = save_line_count(tb["node_netns"])
        stable = count == previous
        previous = count
        if (stable and busy <= gates.settle_cpu_busy_percent) or time.monotonic() > deadline:
            break
    return {
        "seconds": round(time.monotonic() - started, 2),
        "cpu_busy_percent": round(busy, 1),
        "rules_stable": stable,
        "rules": previous,
        "timed_out": not (stable and busy <= gates.settle_cpu_busy_percent),
    }


def _k6_command(tb: dict[str, Any], pair: int, cpus: str, tdir: Path) -> list[str]:
    client = _pods_of_pair(tb, pair)["client"]["name"]
    return [
        f"{tb['run_dir']}/bin/podexec",
        f"{tb['prefix']}-{client}",
        f"{tb['cgroup_root']}/{client}/app",
        cpus,
        "-",
        tb["k6_bin"],
        "run",
        "--quiet",
        "--no-usage-report",
        "--no-color",
        "--out", f"csv={tdir / '.k6-raw.csv.gz'}",
        "--summary-export", str(tdir / ".k6-summary.json"),
        str(tdir / "load.js"),
    ]  # fmt: skip


def _submetric(summary: dict[str, Any], name: str, field: str) -> float:
    metric = summary.get("metrics", {}).get(f"{name}{{scenario:measure}}", {})
    return float(metric.get(field, 0) or 0)


@dataclass
class _Trial:
    """One trial of a step: its plan entry, where it writes, what it measures and pins."""

    entry: dict[str, Any]
    attempt: int
    id: str
    dir: Path
    components: dict[str, Path]
    cpus: dict[str, str]
    rc: int = -1
    k6_output: str = ""


@dataclass
class _Step:
    """What all trials of a step share: the load point, settle result, window and samples."""

    exp: Experiment
    lp: LoadPoint
    tb: dict[str, Any]
    settled: dict[str, Any]
    started_at: str
    ended_at: str
    window: dict[str, float]
    stat_rows: list[dict[str, Any]]


def _prepare(run_dir: Path, exp: Experiment, tb: dict[str, Any], plan: list[dict[str, Any]],
             entry: dict[str, Any], lp: LoadPoint) -> _Trial:  # fmt: skip
    attempt = attempt_of(plan, entry)
    tid = trial_id(entry, attempt)
    tdir = store.trial_dir(run_dir, tid)
    if tdir.exists():  # an interrupted attempt: start it over
        shutil.rmtree(tdir)
    tdir.mkdir(parents=True)
    url = tb_state.server_url(tb, entry["pair"]).replace("/get", lp.path)
    (tdir / "load.js").write_text(script(lp, url))
    trial = _Trial(entry, attempt, tid, tdir, _components(tb, entry["pair"]),
                   _cpus(exp, tb, entry["pair"]))  # fmt: skip
    pin_running(trial.components, trial.cpus)
    return trial


def _run_k6(trials: list[_Trial], tb: dict[str, Any], lp: LoadPoint) -> None:
    """Start every trial's k6 at once (duet) and wait for all, within a hard time limit."""
    procs = [
        subprocess.Popen(
            _k6_command(tb, t.entry["pair"], t.cpus["k6"], t.dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={"K6_CSV_TIME_FORMAT": "unix_micro", "PATH": "/usr/bin:/bin"},
        )
        for t in trials
    ]
    limit = lp.warmup_s + lp.duration_s + 60
    for trial, proc in zip(trials, procs, strict=True):
        try:
            out, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            out += f"\nk6 killed after {limit} s"
        trial.rc, trial.k6_output = proc.returncode, out


def run_step(
    run_dir: Path, manifest: dict[str, Any], entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    exp = Experiment.model_validate(manifest["experiment"])
    tb = tb_state.load()
    lp = next(lp for lp in exp.load_points if lp.name == entries[0]["load_point"])
    trials = [_prepare(run_dir, exp, tb, manifest["plan"], e, lp) for e in entries]

    settled = settle(tb, exp.gates)
    # Components of both duet pairs are sampled together, told apart by an @pair suffix.
    components = {f"{n}@{t.entry['pair']}": p for t in trials for n, p in t.components.items()}
    scratch = trials[0].dir
    started_at = store.now_iso()
    with (
        (scratch / ".proc-stat.jsonl").open("w") as ps,
        (scratch / ".cgroup-cpu.jsonl").open("w") as cg,
        Sampler(ps, cg, components),
    ):
        t_launch = time.time()
        _run_k6(trials, tb, lp)
    step = _Step(
        exp, lp, tb, settled, started_at, store.now_iso(),
        {"start": t_launch + lp.warmup_s, "end": t_launch + lp.warmup_s + lp.duration_s},
        read_jsonl(scratch / ".proc-stat.jsonl"),
    )  # fmt: skip
    cg_rows_all = read_jsonl(scratch / ".cgroup-cpu.jsonl")
    proc_stat_raw = (scratch / ".proc-stat.jsonl").read_bytes()
    for hidden in (".proc-stat.jsonl", ".cgroup-cpu.jsonl"):
        (scratch / hidden).unlink(missing_ok=True)

    results = []
    for t in trials:
        suffix = f"@{t.entry['pair']}"
        cg_rows = [
            {**r, "component": r["component"].removesuffix(suffix)}
            for r in cg_rows_all
            if r["component"].endswith(suffix)
        ]
        # Raw files get their final names only now, complete (rename is atomic).
        for name in ("k6-raw.csv.gz", "k6-summary.json"):
            if (t.dir / f".{name}").exists():
                (t.dir / f".{name}").replace(t.dir / name)
        store.atomic_write_bytes(t.dir / "proc-stat.jsonl", proc_stat_raw)
        cg_text = "".join(json.dumps(r) + "\n" for r in cg_rows)
        store.atomic_write_bytes(t.dir / "cgroup-cpu.jsonl", cg_text.encode())
        store.atomic_write_bytes(t.dir / "k6-output.txt", t.k6_output.encode())
        results.append(_judge(step, t, cg_rows))
    return results


def _judge(step: _Step, t: _Trial, cg_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarise the raw files, apply the gates, write trial.json (last: it marks completion)."""
    exp, lp, window = step.exp, step.lp, step.window
    reasons: list[str] = []
    summary_doc: dict[str, Any] = {}
    if (t.dir / "k6-summary.json").exists():
        summary_doc = json.loads((t.dir / "k6-summary.json").read_text())
    if t.rc != 0:
        last = [ln for ln in t.k6_output.splitlines() if ln.strip()][-1:] or ["no output"]
        reasons.append(f"k6 exited {t.rc}: {last[0][:200]}")
    requests = int(_submetric(summary_doc, "http_reqs", "count"))
    dropped = int(_submetric(summary_doc, "dropped_iterations", "count"))
    failed = round(_submetric(summary_doc, "http_req_failed", "passes"))
    achieved = requests / lp.duration_s
    latency: dict[str, float] = {}
    if (t.dir / "k6-raw.csv.gz").exists():
        lat = read_latencies_ms(t.dir / "k6-raw.csv.gz")
        if lat.size:
            latency = summarize(lat)
    if not latency:
        reasons.append("no measured requests")
    cpu = measure.component_cpu(cg_rows, window["start"], window["end"], requests)
    node, steal = measure.node_cpu_and_steal(
        step.stat_rows, window["start"], window["end"], requests
    )
    cpu.update(node)
    gates, failed_gates = measure.evaluate_gates(
        rate=lp.rate,
        achieved=achieved,
        dropped=dropped,
        failed=failed,
        steal=steal,
        gates=exp.gates,
    )
    reasons += failed_gates
    entry = t.entry
    pods = _pods_of_pair(step.tb, entry["pair"])
    doc = {
        "schema_version": store.SCHEMA_VERSION,
        "trial_id": t.id,
        "plan_index": entry["index"],
        "round": entry["round"],
        "arm": entry["arm"],
        "dataplane": exp.arms[entry["arm"]].dataplane,
        "pair": entry["pair"],
        "attempt": t.attempt,
        "requeue_of": entry.get("requeue_of"),
        "load_point": lp.model_dump(),
        "flood": {**_flood_numbers(entry["flood"]), "rules": step.settled["rules"]},
        "started_at": step.started_at,
        "ended_at": step.ended_at,
        "window": window,
        "settle": {k: v for k, v in step.settled.items() if k != "rules"},
        "status": "rejected" if reasons else "valid",
        "rejection_reasons": reasons,
        "gates": gates,
        "summary": {
            "requests": requests,
            "achieved_rate": round(achieved, 3),
            "failed_requests": failed,
            "latency_ms": latency,
        },
        "cpu": cpu,
        "steal": steal,
        "pinning": t.cpus,
        "pods": {"client": pods["client"]["name"], "server": pods["server"]["name"]},
    }
    store.atomic_write_json(t.dir / "trial.json", doc)
    return doc


def _flood_numbers(spec: str) -> dict[str, int | str]:
    if spec == "off":
        return {"spec": spec, "pods": 0, "services": 0}
    pods, services = spec.split("x")
    return {"spec": spec, "pods": int(pods), "services": int(services)}
