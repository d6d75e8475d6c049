"""Every figure of a trial over one window, beside an independent one (issue: numbers you can
trust): precise node CPU, interpolated window edges, the load generator's schedule, the sanity
gates, the sidecars' own latencies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trial_fixtures as tf

from meshlab.core import cpuwindow
from meshlab.core.procstat import BUSY_MODES, USER_HZ, read_jsonl
from meshlab.k6.schedule import schedule_lag
from meshlab.record import spec
from meshlab.record.format import PlanEntry, now_iso
from meshlab.record.rundir import TrialDir
from meshlab.trial import gates as measure
from meshlab.trial import sidecar_log
from meshlab.trial.judge import Evidence, judge
from meshlab.trial.slot import TrialSlot

RECORDED = Path(__file__).parent / "fixtures" / "ab37225-001-iptables-r01"
SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke.yml"


# ---- a recorded trial where ticks and the idle complement disagree ----------------------------


def _recorded_window() -> tuple[list[dict[str, Any]], list[dict[str, Any]], float, float]:
    doc = json.loads((RECORDED / "trial.json").read_text())
    w = doc["window"]
    return read_jsonl(RECORDED / "proc-stat.jsonl"), read_jsonl(RECORDED / "cgroup-cpu.jsonl"), \
        w["start"], w["end"]  # fmt: skip


def test_tick_sampled_busy_time_is_less_than_what_the_cgroups_used() -> None:
    stat, cgroups, start, end = _recorded_window()
    accounts = cpuwindow.cpu_accounts(stat, start, end)
    ticks = sum(a.ticks_busy for a in accounts.values())
    precise = sum(a.busy for a in accounts.values())
    cpu, _, _ = cpuwindow.trial_cpu(stat, cgroups, start, end, 15_002)
    components = sum(
        cpu[c]["cpu_seconds"] for c in ("client_sidecar", "server_sidecar", "app", "k6")
    )
    # The tick figure claims less CPU than four of the node's cgroups used: impossible, so
    # the ticks are wrong. The idle complement holds all of it. (Over the 15 s window, edges
    # interpolated; schema 1 took the outer samples, 16 s: ticks 8.68, idle complement 11.34,
    # cgroups 10.20.)
    assert ticks == pytest.approx(7.99, abs=0.01)
    assert components == pytest.approx(9.57, abs=0.01)
    assert precise == pytest.approx(10.64, abs=0.01)
    assert ticks < components <= precise == pytest.approx(cpu["node_total"]["cpu_seconds"])
    # Ticks also fail the accounting identity the idle complement satisfies by construction.
    for a in accounts.values():
        assert abs(a.busy + a.idle + a.iowait + a.steal - a.elapsed) < 1e-9
    closures = [(a.ticks_busy + a.idle + a.iowait + a.steal) / a.elapsed for a in accounts.values()]
    assert min(closures) < 0.9  # 0.95 and 0.87: one CPU in eight of ten seconds went missing


def test_a_schema_1_trial_is_read_with_todays_figures(tmp_path: Path) -> None:
    tdir = tmp_path / "run" / "trials" / "001-iptables-r01"
    shutil.copytree(RECORDED, tdir)
    record = TrialDir(tdir).read_record()
    assert record.schema_version == 2 and record.window.source == "planned"
    assert record.cpu["node_total"].cpu_seconds == pytest.approx(10.64, abs=0.01)  # was 8.68
    assert record.node is not None and record.node.source == "idle complement"
    assert record.status == "valid"  # judged then; never re-judged silently


# ---- the window and its interpolated edges -------------------------------------------------


def test_counters_are_interpolated_at_the_windows_instants() -> None:
    series = [(0.0, 0.0), (1.0, 10.0), (2.0, 30.0)]
    assert cpuwindow.at(series, 0.5) == 5.0 and cpuwindow.at(series, 1.5) == 20.0
    assert cpuwindow.at(series, -0.1) is None and cpuwindow.at(series, 2.1) is None
    assert cpuwindow.delta(series, 0.25, 1.75) == pytest.approx(25.0 - 2.5)


def test_cpu_over_a_window_between_samples_is_exact_for_a_steady_load() -> None:
    # 0.2 s samples; a component using 0.3 CPU-s per second; a window cut at odd instants.
    rows = [
        {"t": 100 + 0.2 * i, "host": "h", "component": "k6", "usage_usec": round(60_000 * i)}
        for i in range(101)
    ]
    cpu, _, _ = cpuwindow.trial_cpu([], rows, 101.37, 115.91, requests=1454)
    assert cpu["k6"]["cpu_seconds"] == pytest.approx(0.3 * (115.91 - 101.37), abs=1e-6)
    assert cpu["k6"]["per_1000_requests"] == pytest.approx(1000 * 0.3 * 14.54 / 1454, rel=1e-4)
    assert cpu["k6"]["max_percent"] == pytest.approx(30.0, abs=0.01)
    # samples that stop before the window ends give no figure at all (never extrapolated)
    assert "k6" not in cpuwindow.trial_cpu([], rows[:60], 101.37, 115.91, 1454)[0]


def test_the_last_sliver_of_a_window_joins_the_second_before() -> None:
    assert cpuwindow.seconds_grid(10.0, 13.2) == [10.0, 11.0, 12.0, 13.2]
    assert cpuwindow.seconds_grid(10.0, 13.7) == [10.0, 11.0, 12.0, 13.0, 13.7]


def _stat_rows(seconds: int, *, steal: dict[int, int] | None = None) -> list[dict[str, Any]]:
    """One CPU, 1 s samples: 30 ticks busy, the rest idle, `steal` ticks in given seconds."""
    ticks = dict.fromkeys(("user", "nice", "system", "idle", "iowait", "irq", "softirq",
                           "steal", "guest", "guest_nice"), 0)  # fmt: skip
    rows = []
    for t in range(seconds + 1):
        if t:
            s = (steal or {}).get(t, 0)
            ticks = {**ticks, "user": ticks["user"] + 30, "steal": ticks["steal"] + s,
                     "idle": ticks["idle"] + USER_HZ - 30 - s}  # fmt: skip
        rows.append({"t": float(t), "host": "h", "cpus": {"cpu": ticks, "cpu0": ticks}})
    return rows


def test_steal_mean_and_worst_second_cover_only_the_window() -> None:
    rows = _stat_rows(10, steal={3: 6})
    mean, worst = cpuwindow.steal_percent(rows, 0.0, 10.0)
    assert mean == pytest.approx(0.6) and worst == pytest.approx(6.0)
    assert cpuwindow.steal_percent(rows, 5.0, 10.0) == (0.0, 0.0)


# ---- the load generator's schedule ---------------------------------------------------------


def test_schedule_lag_measures_a_stall_and_its_catch_up_burst() -> None:
    on_time = tf.T0 + np.arange(10_000) / 1000.0
    assert schedule_lag(on_time, 1000) == {
        "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "stalls_over_5ms": 0, "max_gap_ms": 1.0,
    }  # fmt: skip
    stalled = on_time.copy()
    stalled[5000:5020] = stalled[5020]  # 20 ms without a start, then 20 at once
    lag = schedule_lag(stalled, 1000)
    assert lag["max_ms"] == pytest.approx(20.0) and lag["stalls_over_5ms"] == 1
    assert lag["max_gap_ms"] == pytest.approx(21.0) and lag["p50_ms"] == 0.0


# ---- judged trials: the gates reject what does not add up ----------------------------------


CALM_SETTLE = {
    "seconds": 1.0,
    "cpu_busy_percent": 2.0,
    "rules_stable": True,
    "rules": 90,
    "timed_out": False,
}


def _judged(tmp_path: Path, **doctor: Any) -> dict[str, Any]:
    """A local-testbed trial judged from synthetic raw files with the default gates (smoke.yml's
    are loose on purpose); `doctor` changes the evidence."""
    exp = spec.load(SMOKE).model_copy(update={"gates": spec.Gates()})
    # the figures below are for a 6-s window after a 2-s warm-up, whatever smoke.yml's are now
    lp = exp.load_points[0].model_copy(update={"duration_s": 6, "warmup_s": 2})
    tdir = tmp_path / "trial"
    tdir.mkdir()
    tf.write_k6(tdir, rate=lp.rate, duration_s=lp.duration_s, warmup_s=lp.warmup_s,
                stall=doctor.pop("stall", None))  # fmt: skip
    seconds = lp.warmup_s + lp.duration_s + 2
    per_s = doctor.pop("component_cpu_per_s", 0.1)
    evidence = Evidence(
        started_at=now_iso(),
        ended_at=now_iso(),
        planned_start=tf.T0 + lp.warmup_s,
        settle=doctor.pop("settle", CALM_SETTLE),
        stat_rows=doctor.pop("stat_rows", tf.proc_stat_rows("host", seconds)),  # 4 CPUs, 20 % busy
        cgroup_rows=tf.cgroup_rows("host", tf.COMPONENTS, seconds, per_s=per_s),
        rc=0,
        k6_output="",
        k6_env={"GOGC": "off"},
        pinning=exp.pinning_for("same-node").model_dump(),
        pods={"client": "client", "server": "server"},
        **doctor,
    )
    entry = PlanEntry(index=0, round=1, arm="iptables", load_point=lp.name, flood="off")
    judge(exp, lp, TrialSlot(entry, 1, "000-iptables-r01", TrialDir(tdir)), evidence)
    return json.loads((tdir / "trial.json").read_text())


def test_a_calm_trial_passes_every_gate(tmp_path: Path) -> None:
    doc = _judged(tmp_path)
    assert doc["status"] == "valid", doc["rejection_reasons"]
    assert {g for g, v in doc["gates"].items() if v["pass"]} == set(doc["gates"])
    # 4 components x 0.1 CPU-s/s against 4 CPUs x 20 % busy: half the node
    assert doc["gates"]["components_over_node_percent"]["value"] == pytest.approx(-50.0, abs=0.1)
    assert doc["cpu"]["node_total"]["cpu_seconds"] == pytest.approx(0.8 * 5.995, abs=0.01)
    assert doc["load_generator"]["schedule_lag"]["max_ms"] < 0.01


def test_a_node_that_never_settled_rejects_the_trial(tmp_path: Path) -> None:
    settle = {"seconds": 30.2, "cpu_busy_percent": 61.0, "rules_stable": True, "rules": 90,
              "timed_out": True}  # fmt: skip
    doc = _judged(tmp_path, settle=settle)
    assert doc["status"] == "rejected"
    assert (
        "settle timed out after 30.2 s (rules stable: True, busiest CPU 61.0 %, limit 25 %)"
        in (doc["rejection_reasons"])
    )


def test_a_stalled_load_generator_rejects_the_trial(tmp_path: Path) -> None:
    doc = _judged(tmp_path, stall=(300, 30.0))
    assert doc["status"] == "rejected"
    assert any(r.startswith("schedule_lag_max_ms 30.") for r in doc["rejection_reasons"]), doc


def test_components_using_more_cpu_than_the_node_reject_the_trial(tmp_path: Path) -> None:
    # 4 x 0.3 CPU-s/s of cgroups on a node that was busy 0.8 CPU-s/s: a broken source.
    doc = _judged(tmp_path, component_cpu_per_s=0.3)
    assert doc["status"] == "rejected"
    assert any(r.startswith("components_over_node_percent 50.") for r in doc["rejection_reasons"])


def test_idle_time_beyond_elapsed_rejects_the_trial(tmp_path: Path) -> None:
    rows = tf.proc_stat_rows("host", 12)
    for r in rows:  # idle counted 10 % faster than time passes: the counters cannot be trusted
        for ticks in r["cpus"].values():
            ticks["idle"] = round(ticks["idle"] * 1.375)  # 80 -> 110 ticks per 100
    doc = _judged(tmp_path, stat_rows=rows)
    assert doc["status"] == "rejected"
    assert any(r.startswith("cpu_accounting_percent 10.") for r in doc["rejection_reasons"]), doc


def test_task_time_beyond_busy_time_rejects_the_trial(tmp_path: Path) -> None:
    rows = tf.proc_stat_rows("host", 12)
    for r in rows:  # tasks "ran" 30 % of each second on CPUs that were busy 20 %
        r["task_ns"] = {f"cpu{c}": round(0.3e9 * (r["t"] - tf.T0)) for c in range(4)}
    doc = _judged(tmp_path, stat_rows=rows)
    assert any(r.startswith("cpu_accounting_percent 10.") for r in doc["rejection_reasons"]), doc
    assert doc["node"]["hosts"]["host"]["cpu0"]["task"] == pytest.approx(0.3 * 5.995, abs=0.01)


def test_samples_that_stop_early_reject_instead_of_shrinking_the_window(tmp_path: Path) -> None:
    rows = [r for r in tf.proc_stat_rows("host", 12) if r["t"] < tf.T0 + 5]
    doc = _judged(tmp_path, stat_rows=rows)
    assert (
        "no /proc/stat samples from host covering the measured window" in doc["rejection_reasons"]
    )


def test_the_sidecars_latency_covers_the_same_window(tmp_path: Path) -> None:
    exp_start = tf.T0 + 2
    lines = "\n".join(f"{exp_start - 1 + i * 0.01:.6f} {100 + i} 200" for i in range(1000))
    rows = sidecar_log.parse(lines + "\ngarbage\n1.0")
    doc = _judged(tmp_path, sidecar_logs={"server": rows})
    server = doc["sidecar_latency_ms"]["server"]
    # requests 100 .. 700 started in the window (2 .. 7.995 s after T0, plus the 10 ms a last
    # request takes to reach a sidecar)
    assert server["count"] == 601 and server["max"] == pytest.approx(0.800)  # 100 + 700 µs
    assert "client" not in doc["sidecar_latency_ms"]


# ---- the gate table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"dropped": 3}, "dropped_iterations 3 exceeds 0"),
        ({"achieved": 985.0}, "achieved_rate_error 1.5 exceeds 1.0"),
        ({"failed": 1}, "failed_requests 1 exceeds 0"),
        ({"steal": {"mean_percent": 0.6, "max_percent": 1}}, "steal_mean_percent 0.6 exceeds 0.5"),
        ({"lag": None}, "schedule_lag_p99_ms: no value"),
        ({"accounting": None}, "cpu_accounting_percent: no value"),
        ({"housekeeping": 7.5}, "housekeeping_cpu_percent 7.5 exceeds 5.0"),
        # a neighbour process: a third of a CPU busy outside every testbed cgroup
        ({"unattributed": 34.7}, "unattributed_cpu_percent 34.7 exceeds 20.0 (the "
         "node's CPUs were busy outside the testbed: another process ran during the window)"),
        ({"unattributed": None}, "unattributed_cpu_percent: no value"),
    ],
)  # fmt: skip
def test_every_gate_says_why_it_failed(change: dict[str, Any], reason: str | None) -> None:
    args: dict[str, Any] = {
        "gates": spec.Gates(), "rate": 1000, "achieved": 1000.0, "dropped": 0, "failed": 0,
        "steal": {"mean_percent": 0.0, "max_percent": 0.0},
        "lag": {"p99_ms": 1.0, "max_ms": 5.0}, "components_over_node": -10.0, "accounting": -1.0,
        "housekeeping": 1.0, "unattributed": 8.0,
    }  # fmt: skip
    table, reasons = measure.evaluate_gates(**{**args, **change})
    assert reasons[:1] == ([reason] if reason else [])
    assert all(g["pass"] for g in table.values()) == (reason is None)


def test_unattributed_cpu_is_node_busy_minus_every_component_in_percent_of_one_cpu() -> None:
    cpu = {name: {"cpu_seconds": 0.6} for name in ("k6", "client_sidecar", "app", "harness")}
    cpu["node_total"] = {"cpu_seconds": 3.0}  # never counted as a component
    # 3.0 busy - 2.4 in the cgroups = 0.6 CPU-s over a 6-s window: a tenth of one CPU
    assert measure.unattributed_percent(cpu, 3.0, 6.0) == pytest.approx(10.0)
    # more in the cgroups than the node was busy is the other gate's business, not a negative
    assert measure.unattributed_percent(cpu, 2.0, 6.0) == 0.0
    assert measure.unattributed_percent(cpu, None, 6.0) is None
    assert measure.unattributed_percent(cpu, 3.0, 0.0) is None


def test_unattributed_cpu_is_not_gated_where_the_harness_is_not_sampled() -> None:
    """The cloud's nodes run kubelet and containerd outside the components: no such gate."""
    table, reasons = measure.evaluate_gates(
        gates=spec.Gates(), rate=1000, achieved=1000.0, dropped=0, failed=0,
        steal={"mean_percent": 0.0, "max_percent": 0.0}, lag={"p99_ms": 1.0, "max_ms": 5.0},
        components_over_node=-60.0, accounting=-1.0, housekeeping=None, unattributed=60.0,
    )  # fmt: skip
    assert reasons == [] and "unattributed_cpu_percent" not in table


def test_busy_modes_are_the_ones_proc_stat_prints() -> None:
    assert set(BUSY_MODES) == {"user", "nice", "system", "irq", "softirq"}
