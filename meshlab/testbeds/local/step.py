"""Run the trial(s) of one plan step on the local testbed: pin, probe the host, load, sample;
then hand the evidence to the judge (shared with the cloud testbed).

A duet step is two trials started together on pod pairs 1 and 2. Each trial dir's trial.json is
written last: its presence is what marks a trial finished (resume relies on it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshlab.core.hostprobe import WORK, probe
from meshlab.core.procstat import read_jsonl
from meshlab.errors import MeshlabError
from meshlab.record.format import HostProbe, Manifest, Timeline, TrialRecord, now_iso
from meshlab.record.spec import Experiment, LoadPoint
from meshlab.testbeds.local import lease, paths
from meshlab.testbeds.local.iptables import save_line_count
from meshlab.testbeds.local.samplers import Sampler
from meshlab.testbeds.local.state import LocalState
from meshlab.trial import load, sidecar_log
from meshlab.trial.judge import Evidence, judge
from meshlab.trial.slot import TrialSlot

PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_S = 0.5  # how often a step checks that its run still holds the testbed
SAMPLE_INTERVAL_S = 0.2  # counters are interpolated at the window's edges between samples
ACCESS_LOG_FLUSH_S = 0.6  # Envoy writes its access logs every 0.25 s (local_sidecar)
HARNESS_CGROUP = "harness"
MONITORING_CGROUP = "node/monitoring"  # local_monitoring's Prometheus and node_exporter


@dataclass
class StepClock:
    """Where the step's time went before its window (the trial's Timeline)."""

    step_started: float
    quiet_wait_s: float = 0.0
    arm_s: float = 0.0
    settle_s: float = 0.0
    probe_s: float = 0.0
    launched: float = 0.0

    def timeline(self) -> Timeline:
        return Timeline(**{k: round(v, 6) for k, v in self.__dict__.items()})


def cpus_for(exp: Experiment, state: LocalState, slot: TrialSlot) -> dict[str, str]:
    """Pinning per component: the experiment's layout for the trial's placement. Duet pairs
    each own their CPUs, whatever the placement (from the testbed's layout)."""
    if exp.design == "duet":
        c = state.cpus[str(slot.entry.pair)]
        return {k: c[k] for k in ("k6", "client_sidecar", "server_sidecar", "app")}
    return exp.pinning_for(slot.entry.placement).model_dump()


def check_placement(state: LocalState, slot: TrialSlot) -> None:
    """The testbed must be in the trial's placement (the playbook moves the pods)."""
    if state.placement != slot.entry.placement:
        raise MeshlabError(
            f"trial {slot.entry.index}: planned {slot.entry.placement}, but the testbed is "
            f"{state.placement} (run it through the experiment playbook, which moves the pods)"
        )


def pin_running(components: dict[str, Path], cpus: dict[str, str]) -> None:
    """Re-pin the running sidecars and nginx (all their threads) to the experiment's CPUs."""
    for name in ("client_sidecar", "server_sidecar", "app"):
        for pid in (components[name] / "cgroup.procs").read_text().split():
            subprocess.run(
                ["taskset", "-a", "-cp", cpus[name], pid], capture_output=True, check=False
            )


def rule_counts(state: LocalState) -> list[int]:
    """iptables-save lines per node namespace (node 1 first)."""
    return [save_line_count(netns) for netns in state.node_netns_list()]


def settle_rules(state: LocalState, timeout_s: float) -> dict[str, Any]:
    """At a block's first step (its flood or placement just changed): wait until every node's
    rule count is stable. Later steps of the block find the same rules (nothing else writes
    them), so they skip this."""
    started = time.monotonic()
    previous = rule_counts(state)
    while True:
        time.sleep(0.5)
        count = rule_counts(state)
        stable = count == previous
        previous = count
        if stable or time.monotonic() - started > timeout_s:
            break
    return {"seconds": round(time.monotonic() - started, 2), "rules_stable": stable,
            "rules": previous[0], "rules_by_node": previous}  # fmt: skip


@dataclass
class _Trial:
    slot: TrialSlot
    components: dict[str, Path]
    cpus: dict[str, str]
    rc: int = -1
    k6_output: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_LIBC = ctypes.CDLL(None, use_errno=True)  # resolved here, not in the forked child


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the step dies (kill -9 included)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Watchdog(threading.Thread):
    """Ends the process when the run it belongs to is gone (meshlab run killed, or the
    playbook that holds the testbed): its k6 loads are killed and it exits without writing
    trial.json, so the trial stays unfinished and --resume runs it again."""

    def __init__(self) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.procs: list[subprocess.Popen] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(WATCHDOG_S):
            try:
                lease.require_held()
            except MeshlabError as err:
                for proc in self.procs:
                    proc.kill()
                print(f"meshlab: error: {err}", file=sys.stderr, flush=True)
                os._exit(3)

    def stop(self) -> None:
        self._halt.set()


def _k6_command(state: LocalState, t: _Trial) -> list[str]:
    client = state.pair(t.slot.entry.pair)["client"].name
    tdir = t.slot.dir
    return [
        state.podexec(),
        state.netns_of(client),
        str(state.cgroup(client, "app")),
        t.cpus["k6"],
        "-",
        state.k6_bin,
        *load.run_args(
            str(tdir.partial(tdir.K6_RAW)), str(tdir.partial(tdir.K6_SUMMARY)),
            str(tdir.file(tdir.LOAD_SCRIPT)),
        ),
    ]  # fmt: skip


def _run_k6(trials: list[_Trial], state: LocalState, lp: LoadPoint, watchdog: Watchdog) -> None:
    """Start every trial's k6 at once (duet) and wait for all, within a hard time limit."""
    procs = [
        subprocess.Popen(
            _k6_command(state, t),
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


def join_harness(state: LocalState) -> Path:
    """Move this process (the trial loop and its sampler thread) into the harness cgroup, so
    its CPU is measured per trial like everything else on the testbed's CPUs."""
    harness = state.cgroup(HARNESS_CGROUP)
    harness.mkdir(exist_ok=True)
    (harness / "cgroup.procs").write_text(str(os.getpid()))
    return harness


def _host_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0) | set(range(os.cpu_count() or 1)))


def run_step(
    state: LocalState,
    manifest: Manifest,
    slots: list[TrialSlot],
    clock: StepClock,
    settled: dict[str, Any],
    watchdog: Watchdog,
) -> list[TrialRecord]:
    """Run the step's trials (their arm applied, the host found quiet) and judge them.
    `settled`: the rule counts and the quiet check that preceded this step."""
    exp = manifest.experiment
    lp = exp.load_point(slots[0].entry.load_point)
    trials = []
    for slot in slots:
        check_placement(state, slot)  # before the trial's directory exists
        slot.dir.open_empty()
        slot.dir.write_load_script(
            load.script(lp, load.with_path(state.server_url(slot.entry.pair), lp.path))
        )
        t = _Trial(slot, state.components(slot.entry.pair), cpus_for(exp, state, slot))
        pin_running(t.components, t.cpus)
        trials.append(t)
    shared = {"harness": join_harness(state), "monitoring": state.cgroup(MONITORING_CGROUP)}
    # Components of both duet pairs are sampled together, told apart by an @pair suffix; the
    # housekeeping cgroups belong to every trial of the step.
    components = {f"{n}@{t.slot.entry.pair}": p for t in trials for n, p in t.components.items()}
    components.update(shared)
    logs = {
        t.slot.entry.pair: {
            sidecar: state.access_log(state.pair(t.slot.entry.pair)[sidecar].name, direction)
            for sidecar, direction in sidecar_log.LOGS.items()
        }
        for t in trials
    }
    for path in (p for by_sidecar in logs.values() for p in by_sidecar.values()):
        os.truncate(path, 0)  # Envoy appends: the file now holds this step's requests only
    cpus = _host_cpus()
    t0 = time.monotonic()
    before = probe(cpus)
    clock.probe_s = time.monotonic() - t0
    before_path = {t.slot.entry.pair: paths.snapshot(state, t.slot.entry.pair) for t in trials}
    scratch = trials[0].slot.dir
    started_at = now_iso()
    stat_path, cg_path = scratch.partial(scratch.PROC_STAT), scratch.partial(scratch.CGROUP_CPU)
    with (
        stat_path.open("w") as ps,
        cg_path.open("w") as cg,
        Sampler(ps, cg, components, interval=SAMPLE_INTERVAL_S),
    ):
        clock.launched = time.time()
        _run_k6(trials, state, lp, watchdog)
    ended_at = now_iso()
    after_path = {t.slot.entry.pair: paths.snapshot(state, t.slot.entry.pair) for t in trials}
    t0 = time.monotonic()
    after = probe(cpus)
    clock.probe_s += time.monotonic() - t0
    host_probe = HostProbe(work=WORK, before=before, after=after)
    time.sleep(max(0.0, ACCESS_LOG_FLUSH_S - (time.monotonic() - t0)))  # the last log lines
    stat_rows, cg_rows_all = read_jsonl(stat_path), read_jsonl(cg_path)
    proc_stat_raw = stat_path.read_bytes()
    stat_path.unlink(missing_ok=True)
    cg_path.unlink(missing_ok=True)

    results = []
    for t in trials:
        suffix = f"@{t.slot.entry.pair}"
        cg_rows = [
            {**r, "component": r["component"].removesuffix(suffix)}
            for r in cg_rows_all
            if r["component"].endswith(suffix) or r["component"] in shared
        ]
        tdir = t.slot.dir
        tdir.publish(*tdir.K6_FILES)  # final names only now, complete (rename is atomic)
        tdir.write_samples(proc_stat_raw, cg_rows)
        tdir.write_k6_output(t.k6_output)
        sidecar_rows = {}
        for sidecar, path in logs[t.slot.entry.pair].items():
            text = path.read_text(errors="replace")
            tdir.write_sidecar_log(sidecar, text)
            sidecar_rows[sidecar] = sidecar_log.parse(text)
        pods = state.pair(t.slot.entry.pair)
        evidence = Evidence(
            started_at=started_at,
            ended_at=ended_at,
            planned_start=clock.launched + lp.warmup_s,
            settle=settled,
            stat_rows=stat_rows,
            cgroup_rows=cg_rows,
            rc=t.rc,
            k6_output=t.k6_output,
            k6_env=load.k6_env(lp),
            pinning=t.cpus,
            pods={"client": pods["client"].name, "server": pods["server"].name},
            sidecar_logs=sidecar_rows,
            timeline=clock.timeline(),
            host_probe=host_probe,
            path_snapshots=(before_path[t.slot.entry.pair], after_path[t.slot.entry.pair]),
            same_node=pods["client"].node == pods["server"].node,
            shared_counters=len(trials) > 1,
        )
        results.append(judge(exp, lp, t.slot, evidence))
    return results
