"""A short real sweep on the local testbed (issues 21 and 23): iptables, ebpf and the no-mesh
floor at 2 rates x 2 rounds, then each arm's saturation search. It must write the curve data
and the SMP and CSV exports, every trial must record the path its arm really took, and the
no-mesh trials must reach nginx without the sidecars."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.root, pytest.mark.testbed, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MESHLAB = str(Path(sys.prefix) / "bin" / "meshlab")
K6_HOP, INBOUND_HOP, DELIVERY_HOP = (
    "k6->client_sidecar", "client_sidecar->server_sidecar", "server_sidecar->app",
)  # fmt: skip
ARMS = {
    "iptables": {"dataplane": "iptables", "description": "REDIRECT capture"},
    "ebpf": {"dataplane": "ebpf", "description": "connect redirect + sk_msg bypass"},
    "no-mesh": {"dataplane": "no-mesh", "description": "the floor"},
}
RATES = (100, 300)


def _sweep_spec() -> dict:
    smoke = yaml.safe_load((REPO / "experiments" / "smoke.yml").read_text())
    return {
        "id": "mini-sweep",
        "description": "2 rates x 2 rounds, then a two-step saturation search",
        "arms": ARMS,
        "load_points": [
            {"name": f"{r}rps", "rate": r, "duration_s": 2, "warmup_s": 1} for r in RATES
        ],
        "flood_sizes": ["off"],
        "placement": ["same-node"],
        "rounds": 2,
        "seed": 11,
        "gates": smoke["gates"],  # the machinery is under test here, not the machine
        # 300 keeps up, then 600 is the maximum: two attempts per arm, both interleaved
        "saturation": {"p99_ms": 100, "start_rate": 300, "max_rate": 600, "min_rate": 100,
                       "resolution": 300, "duration_s": 2, "warmup_s": 1},
    }  # fmt: skip


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHLAB, *argv], capture_output=True, text=True, timeout=900,
                          cwd=REPO, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sweep")
    spec = tmp / "mini-sweep.yml"
    spec.write_text(yaml.safe_dump(_sweep_spec(), sort_keys=False))
    proc = _run("run", str(spec), "--results-dir", str(tmp / "results"))
    # 2 rounds decide nothing: a run that worked is inconclusive (3), never unfit (4)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    (run_dir,) = list((tmp / "results" / "mini-sweep").iterdir())
    return run_dir


def _trials(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("trials/*/trial.json"))]


def test_every_trial_took_its_arms_path(sweep_run: Path) -> None:
    trials = _trials(sweep_run)
    valid = [t for t in trials if t["status"] == "valid"]
    assert {t["arm"] for t in valid} == set(ARMS), "an arm has no valid trial"
    for t in trials:  # no trial of this quiet run may be rejected for its path
        wrong_path = [r for r in t["rejection_reasons"] if r.startswith("arm integrity")]
        assert not wrong_path, (t["trial_id"], wrong_path)
    for t in valid:
        path, arm = t["path"], t["arm"]
        hops = path["hops"]
        for name, hop in hops.items():
            assert hop["carrier"] == hop["expected"], (t["trial_id"], name, hop)
        want_mode = "ebpf" if arm == "ebpf" else "off"
        assert set(path["programs_start"].values()) == {want_mode}, (t["trial_id"], path)
        assert set(path["programs_end"].values()) == {want_mode}, (t["trial_id"], path)
        if arm == "iptables":
            assert hops[K6_HOP]["carrier"] == "iptables-redirect"
            assert hops[K6_HOP]["connections"] > 0 and hops[INBOUND_HOP]["connections"] > 0
            assert path["counters"]["out_redirect"] == path["counters"]["bypass"] == 0
        if arm == "ebpf":  # same-node: both hops by connect rewrites, delivery spliced
            assert hops[K6_HOP]["carrier"] == hops[INBOUND_HOP]["carrier"] == "ebpf-connect"
            assert path["counters"]["outbound_redirect"] == 0
            assert hops[DELIVERY_HOP]["carrier"] == "sockmap"
            # every request and response crosses the spliced delivery hop
            assert hops[DELIVERY_HOP]["messages"] >= t["summary"]["requests"]


def test_no_mesh_reaches_nginx_without_the_sidecars(sweep_run: Path) -> None:
    trials = _trials(sweep_run)
    floor = [t for t in trials if t["arm"] == "no-mesh" and t["status"] == "valid"]
    meshed = [t for t in trials if t["arm"] == "iptables" and t["status"] == "valid"]
    assert floor and meshed
    for t in floor:
        assert t["summary"]["requests"] > 0 and t["summary"]["failed_requests"] == 0, t["summary"]
        assert set(t["path"]["sidecar_requests"].values()) == {0}, t["path"]
        assert t["cpu"]["app"]["cpu_seconds"] > 0  # nginx served them
    # The sidecars are idle: well under a tenth of what they burn carrying the same load.
    for rate in RATES:
        idle = max(
            t["cpu"]["client_sidecar"]["cpu_seconds"] + t["cpu"]["server_sidecar"]["cpu_seconds"]
            for t in floor if t["load_point"]["rate"] == rate
        )  # fmt: skip
        busy = min(
            t["cpu"]["client_sidecar"]["cpu_seconds"] + t["cpu"]["server_sidecar"]["cpu_seconds"]
            for t in meshed if t["load_point"]["rate"] == rate
        )  # fmt: skip
        assert idle < 0.1 * busy, (rate, idle, busy)


def test_curves_and_saturation_are_written(sweep_run: Path) -> None:
    curves = json.loads((sweep_run / "derived" / "curves.json").read_text())
    (sweep,) = curves["sweeps"]
    assert [lp["rate"] for lp in sweep["load_points"]] == list(RATES)
    level_arms = {c["arm"] for c in sweep["levels"] if c["metric"] == "cpu_node_total"}
    assert level_arms == set(ARMS)
    for c in sweep["levels"]:
        for p in c["points"]:
            assert p["n"] >= 1 and p["estimate"] is not None and p["achieved_rate"] > 0, (c, p)
    pairs = {(c["arm"], c["baseline"]) for c in sweep["changes"]}
    assert {("ebpf", "iptables"), ("ebpf", "no-mesh"), ("iptables", "no-mesh")} <= pairs
    saturation = curves["saturation"]
    assert {a["arm"] for a in saturation["arms"]} == set(ARMS)
    for arm in saturation["arms"]:
        assert [a["rate"] for a in arm["attempts"]][:1] == [300], arm
        assert arm["status"] in ("found", "above-max", "below-min"), arm
    assert (sweep_run / "derived" / "figures" / "sweep_off_same-node.png").stat().st_size > 0


def test_exports_one_smp_result_per_arm_and_block(sweep_run: Path) -> None:
    proc = _run("export", str(sweep_run), "--format", "smp")
    assert proc.returncode == 0, proc.stderr
    out = sweep_run / "derived" / "export" / "smp"
    index = json.loads((out / "index.json").read_text())
    assert index["export"] == "smp" and not index["skipped"], index["skipped"]
    # 3 arms x 2 sweep blocks: the saturation search's trials are not blocks of the export
    assert len(index["results"]) == len(ARMS) * len(RATES), index["results"]
    assert {r["arm"] for r in index["results"]} == set(ARMS)
    for r in index["results"]:
        for name in r["files"]:
            assert json.loads((out / r["name"] / name).read_text()), (r["name"], name)
    proc = _run("export", str(sweep_run), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    csvs = sorted((sweep_run / "derived" / "export" / "csv").glob("*.csv"))
    assert len(csvs) >= 2, csvs
