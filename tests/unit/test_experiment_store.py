"""Atomic writes, resume bookkeeping, /proc/stat + cpu.stat parsing, CPU/steal maths, gates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshlab.core import atomic, procstat
from meshlab.errors import MeshlabError
from meshlab.record.rundir import RunDir
from meshlab.synthetic import SyntheticSpec, write_run

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
    run = write_run(tmp_path, SyntheticSpec(rounds=2))
    dirs = sorted((run / "trials").iterdir())
    (dirs[1] / "trial.json").unlink()  # interrupted while this trial ran
    assert sorted(RunDir(run).completed()) == [0, 2, 3]
    assert RunDir(run).discard_unfinished() == [dirs[1].name]
    assert sorted(p.name for p in (run / "trials").iterdir()) == [
        d.name for d in dirs if d != dirs[1]
    ]


def test_manifest_errors_name_the_path(tmp_path):
    with pytest.raises(MeshlabError, match="no such run directory"):
        RunDir(tmp_path / "nope").load_manifest()
    with pytest.raises(MeshlabError, match=r"manifest.json: missing"):
        RunDir(tmp_path).load_manifest()
    (tmp_path / "manifest.json").write_text('{"schema_version": 9}')
    with pytest.raises(MeshlabError, match="schema_version 9 is not supported"):
        RunDir(tmp_path).load_manifest()


def test_proc_stat_parsing_keeps_every_cpu_and_steal():
    stat = procstat.parse_proc_stat((FIXTURES / "stat-a.txt").read_text())
    assert set(stat) == {"cpu", "cpu0", "cpu1"}
    assert stat["cpu1"]["steal"] == 15 and stat["cpu0"]["idle"] == 3900
    short = procstat.parse_proc_stat("cpu0 1 2 3 4\n")  # old kernels print fewer columns
    assert short["cpu0"]["steal"] == 0


def test_cgroup_cpu_stat_parsing():
    cpu = procstat.parse_cpu_stat((FIXTURES / "cpu.stat").read_text())
    assert (cpu["usage_usec"], cpu["user_usec"], cpu["system_usec"]) == (
        2_500_000,
        1_500_000,
        1_000_000,
    )
