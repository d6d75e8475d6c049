"""The engine's cloud adapter: init on the cloud testbed, prepare, and ingest of fetched raw files
into the same trial record the local testbed writes (results/README.md)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import cloud_render
import pytest
import trial_fixtures as tf
from typer.testing import CliRunner

from meshlab.cli import app
from meshlab.errors import MeshlabError
from meshlab.experiment import cloud_steps, engine, provenance
from meshlab.record import spec
from meshlab.record.format import PlanEntry, now_iso
from meshlab.record.rundir import RunDir, TrialDir
from meshlab.trial.judge import Evidence, judge
from meshlab.trial.slot import TrialSlot

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "cloud.yml"  # the cloud testbed runs one placement per run
GIB = 1 << 30  # the k6 container's memory limit (roles/workload: workload_k6_memory)
# The cloud's default shape: k6 and the client sidecar on the load-test node, nginx and the
# server sidecar on the worker, the control plane runs neither.
PLACEMENT = {
    "lt1": [("k6", "k6-5f7c9-abcde", "2-3"), ("client_sidecar", "k6-5f7c9-abcde", "1")],
    "w1": [("app", "server-6d8b7-fghij", "2"), ("server_sidecar", "server-6d8b7-fghij", "1")],
    "cp1": [],
}
RAW_FILES = {"trial.json", "k6-raw.csv.gz", "k6-summary.json", "proc-stat.jsonl"}
RAW_FILES |= {"cgroup-cpu.jsonl", "k6-output.txt", "load.js"}
RAW_FILES |= {"path-evidence.json", "host-cpus.json"}  # meshlab.testbeds.cloud.trial_evidence


@pytest.fixture(autouse=True)
def _hermetic_provenance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "git", lambda: {"sha": "abc1234", "dirty": False})
    monkeypatch.setattr(provenance, "versions", lambda: {"k6": "local", "kernel": "local"})


def _run(tmp_path: Path, spec_path: Path = SMOKE) -> Path:
    out = engine.init(
        spec_path,
        tmp_path / "results",
        None,
        "cloud",
        {"kind": "cloud", "groups": {"loadtest": ["lt1"]}},
        {"k6": "1.1.0", "istio": "1.29.2"},
    )
    return Path(out.run_dir)


def _spec_file(tmp_path: Path, **changes: Any) -> Path:
    import yaml

    data = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        data[key] = value
    path = tmp_path / "exp.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def _fetch(
    raw: Path,
    lp: Any,
    *,
    k6: bool = True,
    spike_host: str | None = None,
    skip: tuple[str, ...] = (),
    dataplane: str = "iptables",
) -> None:
    """What trial_cloud.yml fetches into RAW (flat), for a trial launched at tf.T0."""
    raw.mkdir(parents=True, exist_ok=True)
    seconds = lp.warmup_s + lp.duration_s + 3
    if k6:
        tf.write_k6(raw, rate=lp.rate, duration_s=lp.duration_s, warmup_s=lp.warmup_s)
    (raw / "k6-output.txt").write_text("running (0m08.0s), 000/100 VUs\n")
    if "k6-run.json" not in skip:
        run = {
            "rc": 0,
            "started": tf.T0,
            "ended": tf.T0 + seconds - 1,
            "cpus": "2-3",
            "host": "lt1",
        }
        (raw / "k6-run.json").write_text(json.dumps(run))
    for host, comps in PLACEMENT.items():
        spike = lp.warmup_s + 2 if host == spike_host else None
        tf.write_jsonl(
            raw / f"{host}.proc-stat.jsonl",
            tf.proc_stat_rows(host, seconds, start=tf.T0 - 1, steal_spike_at=spike, steal_ticks=60),
        )
        names = tuple(c[0] for c in comps)
        tf.write_jsonl(
            raw / f"{host}.cgroup-cpu.jsonl", tf.cgroup_rows(host, names, seconds, start=tf.T0 - 1)
        )
        containers = [
            {"component": c, "pod": pod, "cpus": cpus, "host": host, "container": c}
            for c, pod, cpus in comps
        ]
        (raw / f"{host}.containers.json").write_text(json.dumps(containers))
        if "settle" not in skip:
            settle = {"seconds": 11.2, "cpu_busy_percent": 0.4, "rules_stable": True}
            settle |= {"timed_out": False, "rules": 900 + len(host), "host": host}
            (raw / f"{host}.settle.json").write_text(json.dumps(settle))
    # Every node's snapshots at the window's edges: a clean trial of the arm (test_cloud_arm).
    windows = cloud_render.windows(dataplane, tf.T0 + lp.warmup_s, lp.duration_s + 3)
    for host, window in windows.items():
        (raw / f"{host}.node-window.json").write_text(json.dumps(window))


def _prepared(tmp_path: Path, **fetch: Any) -> tuple[Path, dict[str, Any], Any]:
    run_dir = _run(tmp_path)
    prep = cloud_steps.prepare(run_dir, 0, "http://10.96.0.20:80/get", GIB)
    lp = RunDir(run_dir).load_manifest().experiment.load_points[0]
    _fetch(Path(prep["raw_dir"]), lp, dataplane=prep["dataplane"], **fetch)
    return run_dir, prep, lp


def _path_snapshot(redirected: int) -> dict[str, Any]:
    """testbeds/local/paths.py's reading of an iptables pod pair."""
    counters = {"outbound_redirect": redirected, "inbound_redirect": redirected}
    return {"counters": counters, "programs": {"client": "off", "server": "off"}}


def _local_trial(tmp_path: Path) -> dict[str, Any]:
    """A trial judged as the local testbed's runner judges it (trial.run_step's evidence)."""
    exp = spec.load(SMOKE)
    lp = exp.load_points[0]
    tdir = tmp_path / "local"
    tdir.mkdir()
    tf.write_k6(tdir, rate=lp.rate, duration_s=lp.duration_s, warmup_s=lp.warmup_s)
    seconds = lp.warmup_s + lp.duration_s + 2
    entry = PlanEntry(index=0, round=1, arm="iptables", load_point=lp.name, flood="off")
    evidence = Evidence(
        started_at=now_iso(),
        ended_at=now_iso(),
        planned_start=tf.T0 + lp.warmup_s,
        settle={"seconds": 1.0, "cpu_busy_percent": 2.0, "rules_stable": True, "rules": 90}
        | {"timed_out": False},
        stat_rows=tf.proc_stat_rows("host", seconds),
        cgroup_rows=tf.cgroup_rows("host", tf.COMPONENTS, seconds),
        rc=0,
        k6_output="",
        k6_env={"GOGC": "off"},
        pinning=exp.pinning_for("same-node").model_dump(),
        pods={"client": "client", "server": "server"},
        path_snapshots=(_path_snapshot(0), _path_snapshot(900)),
        same_node=True,
    )
    judge(exp, lp, TrialSlot(entry, 1, "000-iptables-r01", TrialDir(tdir)), evidence)
    return json.loads((tdir / "trial.json").read_text())


def _shape(doc: Any) -> Any:
    """Keys all the way down (values replaced); maps keyed by names (hosts, environment
    variables) count as values."""
    if isinstance(doc, dict):
        # path: its counters and programs are named by what each testbed can read
        named = ("hosts", "env", "counters", "programs_start", "programs_end", "sidecar_requests")
        return {k: None if k in named else _shape(v) for k, v in doc.items()}
    return None


# ---- init ------------------------------------------------------------------------------------


def test_init_on_the_cloud_records_the_cloud_testbed(tmp_path: Path) -> None:
    manifest = RunDir(_run(tmp_path)).load_manifest()
    assert manifest.testbed == "cloud"
    assert manifest.inventory["groups"] == {"loadtest": ["lt1"]}
    assert manifest.versions["k6"] == "1.1.0" and manifest.versions["istio"] == "1.29.2"
    assert "static CPU manager" in manifest.pinning


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"design": "duet"}, "design: duet"),
        ({"arms": {"a": {"dataplane": "iptables"}, "b": {"dataplane": "ebpf-connect"}}},
         "arms.b.dataplane"),
        ({"load_points": [{"name": "x", "rate": 10, "duration_s": 5, "warmup_s": 1,
                           "connection_mode": "new-connection"}]},
         "load_points[0].connection_mode"),
    ],
)  # fmt: skip
def test_init_on_the_cloud_refuses_what_the_cluster_cannot_run(
    tmp_path: Path, changes: dict[str, Any], field: str
) -> None:
    path = _spec_file(tmp_path, **changes)
    with pytest.raises(MeshlabError, match=field.replace("[", r"\[").replace("]", r"\]")):
        engine.init(path, tmp_path / "results", None, "cloud")
    assert not (tmp_path / "results").exists()  # refused before anything was written
    engine.init(path, tmp_path / "results", None, "local")  # the local testbed runs it


def test_a_run_resumes_only_on_the_testbed_it_started_on(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    with pytest.raises(MeshlabError, match="started on the cloud testbed"):
        engine.init(SMOKE, tmp_path, run_dir, "local")
    assert engine.init(SMOKE, tmp_path, run_dir, "cloud").run_dir == str(run_dir)


# ---- prepare ---------------------------------------------------------------------------------


def test_prepare_writes_load_js_and_says_how_to_run_k6(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    plan = RunDir(run_dir).load_manifest().plan
    prep = cloud_steps.prepare(run_dir, 1, "http://10.96.0.20:80/get", GIB)
    assert prep["trial_id"] == f"001-{plan[1].arm}-r01"
    assert Path(prep["dir"]) == (run_dir / "trials" / prep["trial_id"]).resolve()
    script = Path(prep["load_js"]).read_text()
    assert '"http://10.96.0.20:80/get"' in script and '"rate": 1000' in script
    assert prep["merbridge_state"] == {"iptables": "absent", "ebpf": "present"}[plan[1].arm]
    assert prep["flood"] == {"label": "50x500", "pods": 50, "services": 500}
    assert prep["k6_args"][:2] == ["run", "--quiet"]
    assert "csv=k6-raw.csv.gz" in prep["k6_args"] and prep["k6_args"][-1] == "load.js"
    env = dict(e.split("=", 1) for e in prep["k6_env"])
    assert env["K6_CSV_TIME_FORMAT"] == "unix_micro" and env["GOGC"] == "off"
    assert env["K6_CSV_SAVE_INTERVAL"] == f"{prep['time_limit_s']}s"  # one flush, at the end
    # 1000 req/s x 20 s x 40 kB = 800 MB: just under 75 % of the 1 GiB container (768 MiB)
    assert env["GOMEMLIMIT"] == "762MiB"
    assert prep["time_limit_s"] == 5 + 15 + 60  # warm-up + measured + grace
    assert not (Path(prep["dir"]) / "trial.json").exists()  # not finished: resume reruns it


def test_prepare_rejects_a_bad_target_and_index(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    with pytest.raises(MeshlabError, match="target URL"):
        cloud_steps.prepare(run_dir, 0, "server:80", GIB)
    with pytest.raises(MeshlabError, match="--index 99"):
        cloud_steps.prepare(run_dir, 99, "http://server", GIB)


# ---- ingest ----------------------------------------------------------------------------------


def test_ingest_writes_the_same_trial_record_as_the_local_testbed(tmp_path: Path) -> None:
    run_dir, prep, lp = _prepared(tmp_path)
    out = cloud_steps.ingest(run_dir, 0, Path(prep["raw_dir"])).model_dump()
    assert out["trials"][0]["status"] == "valid", out
    tdir = Path(prep["dir"])
    doc = json.loads((tdir / "trial.json").read_text())
    assert _shape(doc) == _shape(_local_trial(tmp_path))
    assert {p.name for p in tdir.iterdir()} == RAW_FILES  # the fetch staging area is gone
    assert doc["summary"]["requests"] == lp.rate * lp.duration_s
    assert doc["pinning"] == {"client_sidecar": "1", "server_sidecar": "1", "app": "2", "k6": "2-3"}
    assert doc["pods"] == {"client": "k6-5f7c9-abcde", "server": "server-6d8b7-fghij"}
    # k6's first to last measured request start (the fixture's iterations start 10 µs before
    # their request rows' timestamps minus durations)
    first, n = tf.T0 + lp.warmup_s, lp.rate * lp.duration_s
    assert doc["window"]["start"] == pytest.approx(first - 1e-5, abs=2e-6)
    assert doc["window"]["end"] == pytest.approx(first + (n - 1) / lp.rate - 1e-5, abs=2e-6)
    assert doc["window"]["requests"] == n and doc["window"]["source"] == "k6 iteration starts"
    assert doc["window"]["planned_start"] == first
    assert doc["flood"]["rules"] == 903 and doc["settle"]["rules_stable"] is True
    # 0.1 CPU-s per second per component over the measured window
    span = doc["window"]["end"] - doc["window"]["start"]
    assert doc["cpu"]["k6"]["cpu_seconds"] == pytest.approx(0.1 * span)
    # Samples keep their node; only the nodes that ran the trial's containers count.
    stat_hosts = {
        json.loads(x)["host"] for x in (tdir / "proc-stat.jsonl").read_text().splitlines()
    }
    assert stat_hosts == {"lt1", "w1"}
    cg = [json.loads(x) for x in (tdir / "cgroup-cpu.jsonl").read_text().splitlines()]
    assert {(r["component"], r["host"]) for r in cg} == {
        ("k6", "lt1"), ("client_sidecar", "lt1"), ("app", "w1"), ("server_sidecar", "w1"),
    }  # fmt: skip
    assert RunDir(run_dir).completed()[0].trial_id == prep["trial_id"]


def test_a_steal_spike_on_a_sidecar_node_rejects_and_requeues(tmp_path: Path) -> None:
    run_dir, prep, _ = _prepared(tmp_path, spike_host="w1")
    out = cloud_steps.ingest(run_dir, 0, Path(prep["raw_dir"])).model_dump()
    trial = out["trials"][0]
    assert trial["status"] == "rejected"
    assert any(r.startswith("steal_max_percent 59.9") for r in trial["reasons"]), trial
    manifest = RunDir(run_dir).load_manifest()
    assert manifest.plan[-1].requeue_of == 0  # re-queued
    assert manifest.rejections[0].trial_id == prep["trial_id"]


def test_a_steal_spike_on_a_node_without_trial_containers_does_not_count(tmp_path: Path) -> None:
    run_dir, prep, _ = _prepared(tmp_path, spike_host="cp1")
    out = cloud_steps.ingest(run_dir, 0, Path(prep["raw_dir"]))
    assert out.trials[0].status == "valid"


def test_missing_k6_files_reject_with_a_reason_not_a_crash(tmp_path: Path) -> None:
    run_dir, prep, _ = _prepared(tmp_path, k6=False)
    out = cloud_steps.ingest(run_dir, 0, Path(prep["raw_dir"])).model_dump()
    reasons = out["trials"][0]["reasons"]
    assert out["trials"][0]["status"] == "rejected"
    assert "k6-raw.csv.gz missing: not fetched from the load-test node" in reasons
    assert "k6-summary.json missing: not fetched from the load-test node" in reasons
    doc = json.loads((Path(prep["dir"]) / "trial.json").read_text())
    assert doc["summary"]["requests"] == 0 and doc["summary"]["latency_ms"] == {}


def test_missing_run_record_and_settle_results_reject(tmp_path: Path) -> None:
    run_dir, prep, _ = _prepared(tmp_path, skip=("k6-run.json", "settle"))
    reasons = cloud_steps.ingest(run_dir, 0, Path(prep["raw_dir"])).model_dump()["trials"][0][
        "reasons"
    ]
    assert any("k6-run.json missing" in r for r in reasons)
    assert any("no settle result" in r for r in reasons)
    assert any(r.startswith("k6 exited -1") for r in reasons)


def test_a_corrupt_k6_csv_and_torn_samples_reject_not_crash(tmp_path: Path) -> None:
    run_dir, prep, _ = _prepared(tmp_path)
    raw = Path(prep["raw_dir"])
    (raw / "k6-raw.csv.gz").write_bytes(gzip.compress(b"not,a,k6,csv\n1,2,3,4\n"))
    with (raw / "w1.cgroup-cpu.jsonl").open("a") as fh:
        fh.write('{"t": 17956')  # the sampler killed mid-line
    (raw / "w1.containers.json").write_text("{broken")
    out = cloud_steps.ingest(run_dir, 0, raw).model_dump()
    reasons = out["trials"][0]["reasons"]
    assert any("not a k6 CSV" in r for r in reasons), reasons
    assert any("container list of w1 unreadable" in r for r in reasons), reasons
    assert any(
        "no running container found on any node for server_sidecar, app" in r for r in reasons
    )


def test_a_sampler_that_stopped_early_rejects(tmp_path: Path) -> None:
    run_dir, prep, lp = _prepared(tmp_path)
    raw = Path(prep["raw_dir"])
    rows = [json.loads(x) for x in (raw / "lt1.proc-stat.jsonl").read_text().splitlines()]
    tf.write_jsonl(raw / "lt1.proc-stat.jsonl", [r for r in rows if r["t"] < tf.T0 + lp.warmup_s])
    reasons = cloud_steps.ingest(run_dir, 0, raw).model_dump()["trials"][0]["reasons"]
    assert "no /proc/stat samples from lt1 covering the measured window" in reasons


def test_ingest_refuses_to_judge_twice_or_without_prepare(tmp_path: Path) -> None:
    run_dir, prep, _ = _prepared(tmp_path)
    with pytest.raises(MeshlabError, match="run `prepare` first"):
        cloud_steps.ingest(run_dir, 1, Path(prep["raw_dir"]))
    cloud_steps.ingest(run_dir, 0, Path(prep["raw_dir"])).model_dump()
    with pytest.raises(MeshlabError, match="already judged"):
        cloud_steps.ingest(run_dir, 0, Path(prep["raw_dir"])).model_dump()


def test_cli_prepare_and_ingest_print_json(tmp_path: Path) -> None:
    run_dir = _run(tmp_path)
    cli = CliRunner()
    done = cli.invoke(
        app, ["engine", "prepare", str(run_dir), "--index", "0", "--target-url", "http://s"]
    )
    assert done.exit_code == 0, done.output
    prep = json.loads(done.output)
    lp = spec.load(SMOKE).load_points[0]
    _fetch(Path(prep["raw_dir"]), lp, dataplane=prep["dataplane"])
    ingest = ["engine", "ingest", str(run_dir), "--index", "0", "--raw", prep["raw_dir"]]
    done = cli.invoke(app, ingest)
    assert done.exit_code == 0 and json.loads(done.output)["trials"][0]["status"] == "valid"
    again = cli.invoke(app, ingest)
    assert again.exit_code == 2 and again.output.startswith("meshlab: error: ")
    assert "already judged" in again.output


def test_the_images_are_recorded_and_a_moved_digest_refuses_the_resume(tmp_path: Path) -> None:
    image = {"image": "ghcr.io/merbridge/merbridge", "tag": "0.8.1", "digest": "sha256:" + "a" * 64}
    out = engine.init(SMOKE, tmp_path, None, "cloud", None, None, {"merbridge": image})
    run_dir = Path(out.run_dir)
    assert RunDir(run_dir).load_manifest().images["merbridge"].digest == image["digest"]
    moved = {**image, "digest": "sha256:" + "b" * 64}
    with pytest.raises(MeshlabError, match=r"images.merbridge: the run started on .* now resolves"):
        engine.init(SMOKE, tmp_path, run_dir, "cloud", None, None, {"merbridge": moved})
    assert engine.init(SMOKE, tmp_path, run_dir, "cloud", None, None, {"merbridge": image})
