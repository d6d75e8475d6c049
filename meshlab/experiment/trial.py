"""Run the trial(s) of one plan step on the local testbed: settle, load, sample, judge, store.

A duet step is two trials started together on pod pairs 1 and 2. The trial dir's trial.json is
written last: its presence is what marks a trial finished (resume relies on it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from meshlab.experiment import measure, store
from meshlab.experiment.load import script
from meshlab.experiment.plan import attempt_of, trial_id
from meshlab.experiment.samplers import Sampler, cpu_busy_now, read_jsonl
from meshlab.experiment.spec import Experiment
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


def run_step(
    run_dir: Path, manifest: dict[str, Any], entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    exp = Experiment.model_validate(manifest["experiment"])
    tb = tb_state.load()
    plan = manifest["plan"]
    lp = next(lp for lp in exp.load_points if lp.name == entries[0]["load_point"])
    trials = []
    for entry in entries:
        attempt = attempt_of(plan, entry)
        tid = trial_id(entry, attempt)
        tdir = store.trial_dir(run_dir, tid)
        if tdir.exists():  # an interrupted attempt: start it over
            shutil.rmtree(tdir)
        tdir.mkdir(parents=True)
        url = tb_state.server_url(tb, entry["pair"]).replace("/get", lp.path)
        (tdir / "load.js").write_text(script(lp, url))
        comps = _components(tb, entry["pair"])
        cpus = _cpus(exp, tb, entry["pair"])
        pin_running(comps, cpus)
        trials.append(
            {
                "entry": entry,
                "attempt": attempt,
                "id": tid,
                "dir": tdir,
                "components": comps,
                "cpus": cpus,
            }
        )

    settled = settle(tb, exp.gates)
    flood_rules = settled["rules"]
    all_components = {
        f"{name}@{t['entry']['pair']}": path
        for t in trials
        for name, path in t["components"].items()
    }
    scratch = trials[0]["dir"]
    started_at = store.now_iso()
    with (
        (scratch / ".proc-stat.jsonl").open("w") as ps,
        (scratch / ".cgroup-cpu.jsonl").open("w") as cg,
        Sampler(ps, cg, all_components),
    ):
        t_launch = time.time()
        procs = [
            subprocess.Popen(
                _k6_command(tb, t["entry"]["pair"], t["cpus"]["k6"], t["dir"]),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={"K6_CSV_TIME_FORMAT": "unix_micro", "PATH": "/usr/bin:/bin"},
            )
            for t in trials
        ]
        limit = lp.warmup_s + lp.duration_s + 60
        outputs = []
        for proc in procs:
            try:
                out, _ = proc.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
                out += f"\nk6 killed after {limit} s"
            outputs.append((proc.returncode, out))
    ended_at = store.now_iso()
    window = {"start": t_launch + lp.warmup_s, "end": t_launch + lp.warmup_s + lp.duration_s}
    stat_rows = read_jsonl(scratch / ".proc-stat.jsonl")
    cg_rows_all = read_jsonl(scratch / ".cgroup-cpu.jsonl")

    results = []
    for t, (rc, k6_out) in zip(trials, outputs, strict=True):
        tdir, entry = t["dir"], t["entry"]
        suffix = f"@{entry['pair']}"
        cg_rows = [
            {**r, "component": r["component"].removesuffix(suffix)}
            for r in cg_rows_all
            if r["component"].endswith(suffix)
        ]
        # Raw files get their final names only now, complete (rename is atomic).
        for hidden, final in (
            (".k6-raw.csv.gz", "k6-raw.csv.gz"),
            (".k6-summary.json", "k6-summary.json"),
        ):
            if (tdir / hidden).exists():
                (tdir / hidden).replace(tdir / final)
        store.atomic_write_bytes(
            tdir / "proc-stat.jsonl", (scratch / ".proc-stat.jsonl").read_bytes()
        )
        store.atomic_write_bytes(
            tdir / "cgroup-cpu.jsonl", "".join(json.dumps(r) + "\n" for r in cg_rows).encode()
        )
        store.atomic_write_bytes(tdir / "k6-output.txt", k6_out.encode())
        results.append(
            _judge(
                exp,
                lp,
                tb,
                t,
                rc,
                k6_out,
                window,
                stat_rows,
                cg_rows,
                settled,
                flood_rules,
                started_at,
                ended_at,
            )
        )
    for hidden in (".proc-stat.jsonl", ".cgroup-cpu.jsonl"):
        (scratch / hidden).unlink(missing_ok=True)
    return results


def _judge(
    exp,
    lp,
    tb,
    t,
    rc,
    k6_out,
    window,
    stat_rows,
    cg_rows,
    settled,
    flood_rules,
    started_at,
    ended_at,
) -> dict[str, Any]:
    tdir, entry = t["dir"], t["entry"]
    reasons: list[str] = []
    summary_doc: dict[str, Any] = {}
    if (tdir / "k6-summary.json").exists():
        summary_doc = json.loads((tdir / "k6-summary.json").read_text())
    if rc != 0:
        last = [ln for ln in k6_out.splitlines() if ln.strip()][-1:] or ["no output"]
        reasons.append(f"k6 exited {rc}: {last[0][:200]}")
    requests = int(_submetric(summary_doc, "http_reqs", "count"))
    dropped = int(_submetric(summary_doc, "dropped_iterations", "count"))
    failed = round(_submetric(summary_doc, "http_req_failed", "passes"))
    achieved = requests / lp.duration_s
    latency: dict[str, float] = {}
    if (tdir / "k6-raw.csv.gz").exists():
        lat = read_latencies_ms(tdir / "k6-raw.csv.gz")
        if lat.size:
            latency = summarize(lat)
    if not latency:
        reasons.append("no measured requests")
    cpu = measure.component_cpu(cg_rows, window["start"], window["end"], requests)
    node, steal = measure.node_cpu_and_steal(stat_rows, window["start"], window["end"], requests)
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
    pods = _pods_of_pair(tb, entry["pair"])
    doc = {
        "schema_version": store.SCHEMA_VERSION,
        "trial_id": t["id"],
        "plan_index": entry["index"],
        "round": entry["round"],
        "arm": entry["arm"],
        "dataplane": exp.arms[entry["arm"]].dataplane,
        "pair": entry["pair"],
        "attempt": t["attempt"],
        "requeue_of": entry.get("requeue_of"),
        "load_point": lp.model_dump(),
        "flood": {**_flood_numbers(entry["flood"]), "rules": flood_rules},
        "started_at": started_at,
        "ended_at": ended_at,
        "window": window,
        "settle": {k: v for k, v in settled.items() if k != "rules"},
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
        "pinning": t["cpus"],
        "pods": {"client": pods["client"]["name"], "server": pods["server"]["name"]},
    }
    store.atomic_write_json(tdir / "trial.json", doc)
    return doc


def _flood_numbers(spec: str) -> dict[str, int | str]:
    if spec == "off":
        return {"spec": spec, "pods": 0, "services": 0}
    pods, services = spec.split("x")
    return {"spec": spec, "pods": int(pods), "services": int(services)}
