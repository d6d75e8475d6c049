"""Run the trial(s) of one plan step on the local testbed: settle, pin, load, sample; then hand
the evidence to meshlab.experiment.judge (shared with the cloud adapter).

A duet step is two trials started together on pod pairs 1 and 2. The trial dir's trial.json is
written last: its presence is what marks a trial finished (resume relies on it).
"""

from __future__ import annotations

import ctypes
import gzip
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshlab.core import atomic
from meshlab.core.procstat import read_jsonl
from meshlab.errors import MeshlabError
from meshlab.experiment import load, sidecar_log
from meshlab.experiment.judge import Evidence, judge
from meshlab.experiment.samplers import Sampler, cpu_busy_now
from meshlab.experiment.trialdir import (
    TrialSlot,
    load_point,
    open_trial,
    with_path,
    write_load_script,
)
from meshlab.record import store
from meshlab.record.format import Manifest, PlanEntry, TrialRecord
from meshlab.record.spec import Experiment, LoadPoint
from meshlab.testbed import lease
from meshlab.testbed import state as tb_state
from meshlab.testbed.iptables import save_line_count

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_S = 0.5  # how often a step checks that its run still holds the testbed
SAMPLE_INTERVAL_S = 0.2  # counters are interpolated at the window's edges between samples
ACCESS_LOG_FLUSH_S = 0.6  # Envoy writes its access logs every 0.25 s (testbed_sidecar)
HARNESS_CGROUP = "harness"
MONITORING_CGROUP = "node/monitoring"  # testbed_monitoring's Prometheus and node_exporter


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


def _cpus(exp: Experiment, tb: dict[str, Any], entry: PlanEntry) -> dict[str, str]:
    """Pinning per component: the experiment's layout for the trial's placement. Duet pairs
    each own their CPUs, whatever the placement (from the testbed's layout)."""
    if exp.design == "duet":
        c = tb["cpus"][str(entry.pair)]
        return {k: c[k] for k in ("k6", "client_sidecar", "server_sidecar", "app")}
    return exp.pinning_for(entry.placement).model_dump()


def _check_placement(tb: dict[str, Any], entry: PlanEntry) -> None:
    """The testbed must be in the trial's placement (the step's playbook moved it)."""
    now = tb.get("placement", "same-node")
    if now != entry.placement:
        raise MeshlabError(
            f"trial {entry.index}: planned {entry.placement}, but the testbed is {now} "
            "(run it through the experiment playbook, which moves the pods first)"
        )


def pin_running(components: dict[str, Path], cpus: dict[str, str]) -> None:
    """Re-pin the running sidecars and nginx (all their threads) to the experiment's CPUs."""
    for name in ("client_sidecar", "server_sidecar", "app"):
        procs = (components[name] / "cgroup.procs").read_text().split()
        for pid in procs:
            subprocess.run(
                ["taskset", "-a", "-cp", cpus[name], pid], capture_output=True, check=False
            )


def _rule_counts(tb: dict[str, Any]) -> list[int]:
    """iptables-save lines per node namespace (node 1 first)."""
    return [save_line_count(netns) for netns in tb_state.node_netns(tb)]


def settle(tb: dict[str, Any], gates: Any) -> dict[str, Any]:
    """Wait until every node's rule count is stable and no CPU is busier than the threshold."""
    started = time.monotonic()
    deadline = started + gates.settle_timeout_s
    previous = _rule_counts(tb)
    busy = 100.0
    stable = False
    while True:
        busy = cpu_busy_now(1.0)
        count = _rule_counts(tb)
        stable = count == previous
        previous = count
        if (stable and busy <= gates.settle_cpu_busy_percent) or time.monotonic() > deadline:
            break
    return {
        "seconds": round(time.monotonic() - started, 2),
        "cpu_busy_percent": round(busy, 1),
        "rules_stable": stable,
        "rules": previous[0],  # node 1's: every node holds the same kube-proxy rules
        "rules_by_node": previous,
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
        *load.run_args(
            str(tdir / ".k6-raw.csv.gz"), str(tdir / ".k6-summary.json"), str(tdir / "load.js")
        ),
    ]


@dataclass
class _Trial:
    """One trial of a step: its slot in the run, what it measures and pins, how k6 ended."""

    slot: TrialSlot
    components: dict[str, Path]
    cpus: dict[str, str]
    rc: int = -1
    k6_output: str = ""

    @property
    def entry(self) -> PlanEntry:
        return self.slot.entry

    @property
    def dir(self) -> Path:
        return self.slot.dir


def _prepare(run_dir: Path, exp: Experiment, tb: dict[str, Any], plan: list[PlanEntry],
             entry: PlanEntry, lp: LoadPoint) -> _Trial:  # fmt: skip
    _check_placement(tb, entry)  # before the trial's directory exists
    slot = open_trial(run_dir, plan, entry)
    write_load_script(slot, lp, with_path(tb_state.server_url(tb, entry.pair), lp.path))
    trial = _Trial(slot, _components(tb, entry.pair), _cpus(exp, tb, entry))
    pin_running(trial.components, trial.cpus)
    return trial


_LIBC = ctypes.CDLL(None, use_errno=True)  # resolved here, not in the forked child


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the step dies (kill -9 included)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class _Watchdog(threading.Thread):
    """Ends the step when the run it belongs to is gone (meshlab run killed, or the playbook
    that holds the testbed): its k6 loads are killed and the step exits without writing
    trial.json, so the trial stays unfinished and --resume runs it again."""

    def __init__(self) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.procs: list[subprocess.Popen] = []
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(WATCHDOG_S):
            try:
                lease.require_held()
            except MeshlabError as err:
                for proc in self.procs:
                    proc.kill()
                print(f"meshlab: error: {err}", file=sys.stderr, flush=True)
                os._exit(3)

    def stop(self) -> None:
        self._stop.set()


def _run_k6(trials: list[_Trial], tb: dict[str, Any], lp: LoadPoint, watchdog: _Watchdog) -> None:
    """Start every trial's k6 at once (duet) and wait for all, within a hard time limit."""
    procs = [
        subprocess.Popen(
            _k6_command(tb, t.entry.pair, t.cpus["k6"], t.dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**load.k6_env(lp), "PATH": "/usr/bin:/bin"},
            preexec_fn=_die_with_parent,
        )
        for t in trials
    ]
    watchdog.procs += procs
    limit = load.time_limit_s(lp)
    for trial, proc in zip(trials, procs, strict=True):
        try:
            out, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            out += f"\nk6 killed after {limit} s"
        trial.rc, trial.k6_output = proc.returncode, out


def _join_harness(tb: dict[str, Any]) -> Path:
    """Move this process (the step and its sampler thread) into the harness cgroup, so its
    CPU is measured per trial like everything else on the testbed's CPUs."""
    harness = Path(tb["cgroup_root"]) / HARNESS_CGROUP
    harness.mkdir(exist_ok=True)
    (harness / "cgroup.procs").write_text(str(os.getpid()))
    return harness


def _access_logs(tb: dict[str, Any], pair: int) -> dict[str, Path]:
    pods = _pods_of_pair(tb, pair)
    return {
        sidecar: Path(tb["run_dir"], pods[sidecar]["name"], "access", f"{direction}.log")
        for sidecar, direction in sidecar_log.LOGS.items()
    }


def run_step(run_dir: Path, manifest: Manifest, entries: list[PlanEntry]) -> list[TrialRecord]:
    exp = manifest.experiment
    tb = tb_state.load()
    lp = load_point(exp, entries[0].load_point)
    trials = [_prepare(run_dir, exp, tb, manifest.plan, e, lp) for e in entries]
    shared = {
        "harness": _join_harness(tb),
        "monitoring": Path(tb["cgroup_root"]) / MONITORING_CGROUP,
    }

    watchdog = _Watchdog()
    watchdog.start()
    settled = settle(tb, exp.gates)
    # Components of both duet pairs are sampled together, told apart by an @pair suffix; the
    # housekeeping cgroups belong to every trial of the step.
    components = {f"{n}@{t.entry.pair}": p for t in trials for n, p in t.components.items()}
    components.update(shared)
    logs = {t.entry.pair: _access_logs(tb, t.entry.pair) for t in trials}
    for path in (p for by_sidecar in logs.values() for p in by_sidecar.values()):
        os.truncate(path, 0)  # Envoy appends: the file now holds this step's requests only
    scratch = trials[0].dir
    started_at = store.now_iso()
    with (
        (scratch / ".proc-stat.jsonl").open("w") as ps,
        (scratch / ".cgroup-cpu.jsonl").open("w") as cg,
        Sampler(ps, cg, components, interval=SAMPLE_INTERVAL_S),
    ):
        t_launch = time.time()
        _run_k6(trials, tb, lp, watchdog)
    watchdog.stop()
    ended_at = store.now_iso()
    time.sleep(ACCESS_LOG_FLUSH_S)  # the sidecars' last lines reach their files
    stat_rows = read_jsonl(scratch / ".proc-stat.jsonl")
    cg_rows_all = read_jsonl(scratch / ".cgroup-cpu.jsonl")
    proc_stat_raw = (scratch / ".proc-stat.jsonl").read_bytes()
    for hidden in (".proc-stat.jsonl", ".cgroup-cpu.jsonl"):
        (scratch / hidden).unlink(missing_ok=True)

    results = []
    for t in trials:
        suffix = f"@{t.entry.pair}"
        cg_rows = [
            {**r, "component": r["component"].removesuffix(suffix)}
            for r in cg_rows_all
            if r["component"].endswith(suffix) or r["component"] in shared
        ]
        # Raw files get their final names only now, complete (rename is atomic).
        for name in ("k6-raw.csv.gz", "k6-summary.json"):
            if (t.dir / f".{name}").exists():
                (t.dir / f".{name}").replace(t.dir / name)
        atomic.write_bytes(t.dir / "proc-stat.jsonl", proc_stat_raw)
        atomic.write_jsonl(t.dir / "cgroup-cpu.jsonl", cg_rows)
        atomic.write_bytes(t.dir / "k6-output.txt", t.k6_output.encode())
        sidecar_rows = {}
        for sidecar, path in logs[t.entry.pair].items():
            text = path.read_text(errors="replace")
            atomic.write_bytes(t.dir / f"envoy-{sidecar}.log.gz", gzip.compress(text.encode(), 6))
            sidecar_rows[sidecar] = sidecar_log.parse(text)
        pods = _pods_of_pair(tb, t.entry.pair)
        evidence = Evidence(
            started_at=started_at,
            ended_at=ended_at,
            planned_start=t_launch + lp.warmup_s,
            settle=settled,
            stat_rows=stat_rows,
            cgroup_rows=cg_rows,
            rc=t.rc,
            k6_output=t.k6_output,
            k6_env=load.k6_env(lp),
            pinning=t.cpus,
            pods={"client": pods["client"]["name"], "server": pods["server"]["name"]},
            sidecar_logs=sidecar_rows,
        )
        results.append(judge(exp, lp, t.slot, evidence))
    return results
