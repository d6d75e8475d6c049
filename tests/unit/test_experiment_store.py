"""Atomic writes, resume bookkeeping, /proc/stat + cpu.stat parsing, CPU/steal maths, gates."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from meshlab.analysis.synthetic import SyntheticSpec, write_run
from meshlab.core import atomic, procstat
from meshlab.errors import MeshlabError
from meshlab.experiment import measure, samplers
from meshlab.record import store

FIXTURES = Path(__file__).parent / "fixtures" / "proc"


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
    target = tmp_path / "d" / "trial.json"
    atomic.write_json(target, {"a": 1})
    atomic.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["trial.json"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "manifest.json"
    atomic.write_json(target, {"ok": True})
    with pytest.raises(TypeError):
        atomic.write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": True}
    assert len(list(tmp_path.iterdir())) == 1


def test_resume_bookkeeping(tmp_path):
    run = write_run(tmp_path, SyntheticSpec(rounds=2, write_samples=False))
    dirs = sorted((run / "trials").iterdir())
    (dirs[1] / "trial.json").unlink()  # interrupted while this trial ran
    assert sorted(store.completed_trials(run)) == [0, 2, 3]
    assert store.discard_unfinished(run) == [dirs[1].name]
    assert sorted(p.name for p in (run / "trials").iterdir()) == [
        d.name for d in dirs if d != dirs[1]
    ]


def test_manifest_errors_name_the_path(tmp_path):
    with pytest.raises(MeshlabError, match="no such run directory"):
        store.load_manifest(tmp_path / "nope")
    with pytest.raises(MeshlabError, match=r"manifest.json: missing"):
        store.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"schema_version": 9}')
    with pytest.raises(MeshlabError, match="schema_version 9 is not supported"):
        store.load_manifest(tmp_path)


def test_proc_stat_parsing_keeps_every_cpu_and_steal():
    stat = procstat.parse_proc_stat((FIXTURES / "stat-a.txt").read_text())
    assert set(stat) == {"cpu", "cpu0", "cpu1"}
    assert stat["cpu1"]["steal"] == 15 and stat["cpu0"]["idle"] == 3900
    short = procstat.parse_proc_stat("cpu0 1 2 3 4\n")  # old kernels print fewer columns
    assert short["cpu0"]["steal"] == 0


def test_steal_and_busy_percent_between_two_samples():
    a = procstat.parse_proc_stat((FIXTURES / "stat-a.txt").read_text())
    b = procstat.parse_proc_stat((FIXTURES / "stat-b.txt").read_text())
    # cpu1: busy 20+0+20+0+5+10 = 55 ticks, idle 75 -> total 130; steal 10/130.
    assert samplers.steal_percent(a["cpu1"], b["cpu1"]) == pytest.approx(100 * 10 / 130)
    assert samplers.busy_percent(a["cpu1"], b["cpu1"]) == pytest.approx(100 * 55 / 130)
    assert samplers.steal_percent(a["cpu0"], b["cpu0"]) == 0


def test_cgroup_cpu_stat_parsing():
    cpu = procstat.parse_cpu_stat((FIXTURES / "cpu.stat").read_text())
    assert (cpu["usage_usec"], cpu["user_usec"], cpu["system_usec"]) == (
        2_500_000,
        1_500_000,
        1_000_000,
    )


def _stat_rows(steal_per_second: list[int]):
    rows, ticks = [], {"user": 0, "nice": 0, "system": 0, "idle": 0, "iowait": 0, "irq": 0,
                       "softirq": 0, "steal": 0, "guest": 0, "guest_nice": 0}  # fmt: skip
    for t, steal in enumerate([0, *steal_per_second]):
        ticks = {**ticks, "steal": ticks["steal"] + steal, "idle": ticks["idle"] + 100 - steal}
        rows.append({"t": float(t), "host": "h", "cpus": {"cpu": ticks, "cpu0": ticks}})
    return rows


def test_window_steal_mean_and_max():
    rows = _stat_rows([0, 0, 6, 0, 0, 0, 0, 0, 0, 0])
    _, steal = measure.node_cpu_and_steal(rows, 0.0, 10.0, requests=1000)
    assert steal == {"mean_percent": pytest.approx(0.6), "max_percent": pytest.approx(6.0)}
    # The same spike outside the measured window does not count.
    _, later = measure.node_cpu_and_steal(rows, 5.0, 10.0, requests=1000)
    assert later["max_percent"] == 0


def test_component_cpu_per_1000_requests():
    rows = [{"t": float(t), "host": "h", "component": "client_sidecar", "usage_usec": t * 250_000}
            for t in range(0, 12)]  # fmt: skip
    cpu = measure.component_cpu(rows, 1.0, 11.0, requests=5000)
    assert cpu["client_sidecar"]["cpu_seconds"] == pytest.approx(2.5)
    assert cpu["client_sidecar"]["per_1000_requests"] == pytest.approx(0.5)
    assert cpu["client_sidecar"]["max_percent"] == pytest.approx(25.0)


GATES = SimpleNamespace(rate_tolerance_percent=1.0, steal_mean_percent=0.5, steal_max_percent=5.0)


@pytest.mark.parametrize(
    ("kwargs", "reasons"),
    [
        ({}, []),
        ({"dropped": 3}, ["dropped_iterations 3 exceeds 0"]),
        ({"achieved": 985.0}, ["achieved_rate_error 1.5 exceeds 1.0"]),
        ({"failed": 1}, ["failed_requests 1 exceeds 0"]),
        (
            {"steal": {"mean_percent": 0.6, "max_percent": 1.0}},
            ["steal_mean_percent 0.6 exceeds 0.5"],
        ),
        (
            {"steal": {"mean_percent": 0.1, "max_percent": 5.5}},
            ["steal_max_percent 5.5 exceeds 5.0"],
        ),
    ],
)
def test_gates(kwargs, reasons):
    calm = {"mean_percent": 0.0, "max_percent": 0.0}
    args = {"rate": 1000, "achieved": 1000.0, "dropped": 0, "failed": 0, "steal": calm}
    args.update({"gates": GATES, **kwargs})
    table, why = measure.evaluate_gates(**args)
    assert why == reasons
    assert all(g["pass"] for g in table.values()) == (not reasons)
