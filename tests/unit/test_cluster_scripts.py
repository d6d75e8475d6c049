"""The Python programs the cluster roles install on the VMs (standard library, Debian's python3)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
PROC_STAT = """cpu  10 1 20 300 4 0 5 7 0 0
cpu0 5 1 10 150 2 0 3 6 0 0
cpu1 5 0 10 150 2 0 2 1 0 0
intr 12345 0 0
ctxt 999
"""


def load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(Path(path).stem.replace("-", "_"), REPO / path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


settle_mod = load("roles/flooder/files/meshlab-settle.py")
tuning = load("roles/node_prep/files/meshlab-cpu-tuning.py")


class FakeNode:
    """Rules change until t=5 s, kube-proxy burns 50 % CPU until t=8 s, then idle."""

    def __init__(self) -> None:
        self.t = 0.0
        self.ticks = 0

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        if self.t < 8:
            self.ticks += int(50 * s)  # 100 ticks/s = 100 %
        self.t += s

    def rules(self) -> int:
        return 1000 + int(min(self.t, 5.0)) * 100


def test_settle_waits_for_stable_rules_and_idle_kube_proxy() -> None:
    node = FakeNode()
    result = settle_mod.settle(
        node.rules, lambda: node.ticks, node.clock, node.sleep, 3, 2.0, 600, 100
    )
    assert result["timed_out"] is False and result["rules_stable"] is True
    assert result["rules"] == 1500
    # kube-proxy stops at 8 s; the 3-second window after that is clean at 11 s.
    assert result["seconds"] == 11
    assert result["cpu_busy_percent"] < 2.0


def test_settle_times_out_on_a_busy_kube_proxy() -> None:
    t = [0.0]
    ticks = [0]

    def sleep(s: float) -> None:
        t[0] += s
        ticks[0] += 30

    result = settle_mod.settle(lambda: 7, lambda: ticks[0], lambda: t[0], sleep, 3, 2.0, 20, 100)
    assert result["timed_out"] is True and result["rules_stable"] is True
    assert result["cpu_busy_percent"] > 2.0


def test_process_ticks_reads_utime_and_stime(tmp_path: Path) -> None:
    for pid, comm, ut, st in [
        ("10", "kube-proxy", 7, 3),
        ("11", "bash", 100, 100),
        ("12", "kube-proxy", 1, 1),
    ]:
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "comm").write_text(comm + "\n")
        fields = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", str(ut), str(st)]
        (tmp_path / pid / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + " 0 0\n")
    (tmp_path / "self").mkdir()
    assert settle_mod.process_ticks("kube-proxy", tmp_path) == 12


def test_cpu_tuning_masks_and_irq_steering(tmp_path: Path) -> None:
    assert tuning.parse_cpulist("0-2,5") == [0, 1, 2, 5]
    assert tuning.cpulist_to_mask([0]) == "00000001"
    assert tuning.cpulist_to_mask([0, 33]) == "00000002,00000001"
    irq = tmp_path / "irq"
    for n in ("1", "2"):
        (irq / n).mkdir(parents=True)
        (irq / n / "smp_affinity_list").write_text("0-3\n")
    (irq / "default_smp_affinity").write_text("f\n")
    assert tuning.steer_irqs(irq, "0") == {"irqs_on_housekeeping": 2, "irqs_refused": 0}
    assert (irq / "1" / "smp_affinity_list").read_text() == "0"


def test_cpu_tuning_sets_the_governor_only_where_available(tmp_path: Path) -> None:
    for cpu, available in (("cpu0", "performance powersave"), ("cpu1", "schedutil")):
        d = tmp_path / cpu / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text("powersave\n")
        (d / "scaling_available_governors").write_text(available + "\n")
    report = tuning.set_governor(tmp_path, "performance")
    assert report == {"cpufreq_exposed": True, "cpus_with_governor": 1, "governor": "performance"}
    assert (tmp_path / "cpu0/cpufreq/scaling_governor").read_text() == "performance"
    assert tuning.set_governor(tmp_path / "none", "performance")["cpufreq_exposed"] is False


# ---- meshlab-trial-agent (roles/trial_agent) -------------------------------------------------

agent = load("roles/trial_agent/files/meshlab-trial-agent.py")
COMPONENTS = ["k6=k6/k6", "client_sidecar=k6/istio-proxy", "app=server/nginx"]
PODS = {
    "items": [
        {"id": "sb-k6", "metadata": {"name": "k6-abc", "namespace": "meshlab"},
         "state": "SANDBOX_READY", "labels": {"app": "k6"}},
        {"id": "sb-old", "metadata": {"name": "k6-old", "namespace": "meshlab"},
         "state": "SANDBOX_NOTREADY", "labels": {"app": "k6"}},
        {"id": "sb-x", "metadata": {"name": "k6-elsewhere", "namespace": "other"},
         "state": "SANDBOX_READY", "labels": {"app": "k6"}},
    ]
}  # fmt: skip
RUN, EXITED = "CONTAINER_RUNNING", "CONTAINER_EXITED"
PS = {
    "containers": [
        {"id": "c1", "podSandboxId": "sb-k6", "metadata": {"name": "k6"}, "state": RUN},
        {"id": "c2", "podSandboxId": "sb-k6", "metadata": {"name": "istio-proxy"}, "state": RUN},
        {"id": "c3", "podSandboxId": "sb-old", "metadata": {"name": "k6"}, "state": EXITED},
        {"id": "c4", "podSandboxId": "sb-x", "metadata": {"name": "k6"}, "state": RUN},
    ]
}


def _fake_node(tmp_path: Path) -> tuple[Path, Path]:
    """A crictl that answers PODS/PS, and a kubepods cgroup tree for containers c1 and c2."""
    crictl = tmp_path / "crictl"
    crictl.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"print(json.dumps({PODS!r} if sys.argv[1] == 'pods' else {PS!r}))\n"
    )
    crictl.chmod(0o755)
    root = tmp_path / "kubepods.slice"
    for cid, cpus, usage in (("c1", "2-3", 5_000_000), ("c2", "1", 7_000_000)):
        d = root / "kubepods-podu1.slice" / f"cri-containerd-{cid}.scope"
        d.mkdir(parents=True)
        (d / "cpuset.cpus.effective").write_text(cpus + "\n")
        (d / "cpu.stat").write_text(f"usage_usec {usage}\nuser_usec 1\nsystem_usec 2\n")
        (d / "cgroup.procs").write_text("4242\n")
    return crictl, root


def test_agent_matches_running_containers_of_the_namespace_by_app_and_name() -> None:
    found = agent.match_containers(PODS, PS, "meshlab", agent.parse_components(COMPONENTS))
    assert found == [
        {"component": "k6", "pod": "k6-abc", "container": "k6", "id": "c1"},
        {"component": "client_sidecar", "pod": "k6-abc", "container": "istio-proxy", "id": "c2"},
    ]


def test_agent_rejects_a_malformed_component() -> None:
    with pytest.raises(SystemExit, match="NAME=APP/CONTAINER"):
        agent.parse_components(["k6=k6"])


def test_agent_sample_writes_the_results_readme_formats(tmp_path: Path) -> None:
    crictl, root = _fake_node(tmp_path)
    out, stop = tmp_path / "trial", tmp_path / "stop"
    stop.touch()  # already asked to stop: exactly one sample
    rc = agent.main(
        ["sample", "--out-dir", str(out), "--host", "lt1", "--crictl", str(crictl),
         "--cgroup-root", str(root), "--stop-file", str(stop), "--max-seconds", "30",
         *[f"--component={c}" for c in COMPONENTS]]
    )  # fmt: skip
    assert rc == 0
    containers = json.loads((out / "containers.json").read_text())
    assert {(c["component"], c["cpus"], c["host"]) for c in containers} == {
        ("k6", "2-3", "lt1"),
        ("client_sidecar", "1", "lt1"),
    }
    stat = [json.loads(x) for x in (out / "proc-stat.jsonl").read_text().splitlines()]
    assert len(stat) == 1 and stat[0]["host"] == "lt1"
    assert {"t", "host", "cpus"} <= set(stat[0]) <= {"t", "host", "cpus", "task_ns", "task_source"}
    assert set(stat[0]["cpus"]["cpu"]) == set(agent.procstat.FIELDS)
    cg = [json.loads(x) for x in (out / "cgroup-cpu.jsonl").read_text().splitlines()]
    assert sorted((r["component"], r["usage_usec"]) for r in cg) == [
        ("client_sidecar", 7_000_000),
        ("k6", 5_000_000),
    ]
    assert set(cg[0]) == {"t", "host", "component", "usage_usec", "user_usec", "system_usec"}


def test_agent_sample_stops_at_its_deadline(tmp_path: Path) -> None:
    crictl, root = _fake_node(tmp_path)
    out = tmp_path / "trial"
    agent.main(
        ["sample", "--out-dir", str(out), "--crictl", str(crictl), "--cgroup-root", str(root),
         "--stop-file", str(tmp_path / "never"), "--max-seconds", "1.5"]
    )  # fmt: skip
    assert 7 <= len((out / "proc-stat.jsonl").read_text().splitlines()) <= 9  # 0.2 s apart


def test_agent_k6_is_pinned_bounded_and_in_the_pods_network_namespace() -> None:
    argv = agent.k6_argv(4242, "2-3", 68, "/usr/bin/k6", ["run", "load.js"])
    assert argv[:3] == ["timeout", "--kill-after=10", "68"]
    assert argv[3:6] == ["taskset", "-c", "2-3"]
    assert argv[6:9] == ["nsenter", "--net=/proc/4242/ns/net", "--"]
    assert argv[9:] == ["/proc/4242/root/usr/bin/k6", "run", "load.js"]


def test_agent_k6_without_a_k6_container_leaves_a_record_not_a_failure(tmp_path: Path) -> None:
    crictl, _ = _fake_node(tmp_path)
    out = tmp_path / "trial"
    out.mkdir()
    rc = agent.main(
        ["k6", "--out-dir", str(out), "--crictl", str(crictl), "--cgroup-root",
         str(tmp_path / "empty"), "--limit-s", "5", "--component", "k6=k6/k6", "--", "run", "x.js"]
    )  # fmt: skip
    assert rc == 0
    record = json.loads((out / "k6-run.json").read_text())
    assert record["rc"] == -1 and record["started"] is None
    assert "no running k6 container" in (out / "k6-output.txt").read_text()


def test_the_agent_samples_with_the_packages_own_code() -> None:
    """The agent ships meshlab/core/procstat.py beside itself (a symlink in the role's files):
    a node's samples are the rows the local testbed writes, read by the same parser."""
    shipped = REPO / "roles/trial_agent/files/procstat.py"
    assert shipped.is_symlink()
    assert shipped.resolve() == (REPO / "meshlab/core/procstat.py").resolve()
    stat, lines = agent.sample_lines(
        1700000000.5, "w1", PROC_STAT, [{"component": "k6", "cgroup": "/cg"}],
        lambda _: "usage_usec 120\nuser_usec 100\nsystem_usec 20\n",
    )  # fmt: skip
    row = json.loads(stat)
    assert row["host"] == "w1" and row["cpus"]["cpu1"]["steal"] == 1
    assert json.loads(lines[0]) == {
        "t": 1700000000.5, "host": "w1", "component": "k6",
        "usage_usec": 120, "user_usec": 100, "system_usec": 20,
    }  # fmt: skip
