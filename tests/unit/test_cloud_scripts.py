"""The Python programs the cluster roles install on the VMs (standard library, Debian's python3)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from meshlab.testbeds.cloud import upstream

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


# ---- the agent's node snapshots (nodesnap.py, armprep.py): collect only ------------------------

nodesnap = agent.nodesnap
armprep = agent.armprep


def test_cgroup_ids_are_the_ones_bpf_sees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # bpf.h: a cgroup v2 id reaches user space through name_to_handle_at's 8-byte handle (it is
    # also the directory's inode number); without a handle the agent takes the inode number.
    assert upstream.value("bpftool", "cgroup_id_from_user_space")["api"] == "name_to_handle_at"

    class Libc:
        def name_to_handle_at(self, dirfd: int, path: bytes, handle: Any, mount: Any, flags: int):
            handle._obj.f_handle[:] = list((0x1234_5678).to_bytes(8, "little"))
            return 0

    monkeypatch.setattr(nodesnap.ctypes, "CDLL", lambda *a, **k: Libc())
    assert nodesnap.cgroup_id(str(tmp_path)) == 0x1234_5678

    def no_libc(*a: Any, **k: Any) -> Any:
        raise OSError("no libc")

    monkeypatch.setattr(nodesnap.ctypes, "CDLL", no_libc)
    assert nodesnap.cgroup_id(str(tmp_path)) == tmp_path.stat().st_ino


def _stat_line(pid: int, comm: str, fields: dict[int, int]) -> str:
    """A /proc/<pid>/stat line with the given 1-based fields (others 0), proc(5)'s layout."""
    values = [str(fields.get(n, 0)) for n in range(3, 53)]
    values[0] = "S"  # (3) state
    return f"{pid} ({comm}) " + " ".join(values) + "\n"


def test_the_task_list_reads_proc5s_fields(tmp_path: Path) -> None:
    numbers = upstream.value("manpages", "proc_pid_stat_fields")
    proc = tmp_path / "proc"
    task = proc / "4242" / "task" / "4243"
    task.mkdir(parents=True)
    v2 = upstream.value("manpages", "proc_pid_cgroup")
    (proc / "4242" / "cgroup").write_text(f"1:cpu:/x\n{v2}/system.slice/containerd.service\n")
    comm = "weird) name"  # comm may hold spaces and parentheses
    fields = {numbers["flags"]: 0x400040, numbers["utime"]: 120, numbers["stime"]: 30,
              numbers["processor"]: 2}  # fmt: skip
    (task / "stat").write_text(_stat_line(4243, comm, fields))
    allowed = upstream.value("manpages", "cpus_allowed_list")
    (task / "status").write_text(f"Name:\tx\nCpus_allowed:\tf\n{allowed}:\t0-3\n")
    (proc / "self").mkdir()  # not a pid
    doc = nodesnap.tasks(proc)
    assert doc["rows"] == [
        [4242, 4243, comm, 0x400040, 150, 2, "0-3", "/system.slice/containerd.service"]
    ]


def fake_run(answers: dict[str, tuple[int, str]]) -> tuple[Any, list[list[str]]]:
    """A command runner answering by the first matching argv prefix (joined with spaces)."""
    calls: list[list[str]] = []

    def run(argv: list[str]) -> tuple[int, str, str]:
        calls.append(argv)
        line = " ".join(argv)
        for prefix, (rc, out) in answers.items():
            if prefix in line:
                return rc, out if rc == 0 else "", "" if rc == 0 else out
        return 1, "", f"no answer for {line}"

    return run, calls


MAP_SHOW = [
    {"id": 13, "type": "lru_hash", "name": "cgroup_info_map", "bytes_key": 8, "bytes_value": 32},
    {"id": 17, "type": "lru_hash", "name": "pair_original_d", "bytes_key": 36, "bytes_value": 24},
    {"id": 99, "type": "hash", "name": "calico_ipsets", "bytes_key": 8, "bytes_value": 8},
]


def test_a_snapshot_holds_bpftools_json_and_both_iptables_backends() -> None:
    run, calls = fake_run({
        "cgroup show": (0, ""),  # bpftool prints nothing for a cgroup without programs
        "map show": (0, json.dumps(MAP_SHOW)),
        "map dump id 13": (0, "[]"),
        "map dump id 17": (0, '[{"key": ["0x01"], "value": ["0x02"]}]'),
        "iptables-nft-save": (0, "*nat\nCOMMIT\n"),
        "iptables-legacy-save": (1, "iptables-legacy-save: not found"),
    })  # fmt: skip
    containers = [{"component": "k6", "pod": "k6-abc", "pid": 4101},
                  {"component": "client_sidecar", "pod": "k6-abc", "pid": 4102}]  # fmt: skip
    doc = nodesnap.snapshot("lt1", containers, run, "/usr/sbin/bpftool",
                            ["cgroup_info_map", "pair_original_dst", "process_ip"],
                            target="10.96.0.20:80")  # fmt: skip
    assert doc["bpf"]["cgroup_show"] == [] and doc["bpf"]["errors"] == []
    assert doc["bpf"]["dumps"] == {
        "cgroup_info_map": [{"id": 13, "entries": []}],
        "pair_original_dst": [{"id": 17, "entries": [{"key": ["0x01"], "value": ["0x02"]}]}],
    }
    assert list(doc["netfilter"]) == ["k6-abc"]  # once per pod
    assert doc["netfilter"]["k6-abc"]["nft"] == "*nat\nCOMMIT\n"
    assert doc["netfilter"]["k6-abc"]["errors"][0].startswith("iptables-legacy-save: rc 1")
    assert calls[-1][:3] == ["nsenter", "--net=/proc/4101/ns/net", "--"]
    assert "tasks" not in doc and doc["t_begin"] <= doc["t_end"]


def test_rearm_deletes_exactly_the_entries_the_controller_named() -> None:
    import cloud_render as cr

    from meshlab.testbeds.cloud import arm_ready

    stale = {"k6": 1, "client_sidecar": 0}
    snaps = [cr.snapshot("lt1", 1.0, merbridge=True, in_mesh=stale)]
    plan = arm_ready.rearm(snaps)["lt1"]
    run, calls = fake_run({"map show": (0, json.dumps(MAP_SHOW)), "map delete": (0, "")})
    args = type("Args", (), {"plan_json": json.dumps(plan), "bpftool": "bpftool"})
    armprep.rearm(args, run)
    delete = calls[-1]
    syntax = upstream.value("bpftool", "map_delete_syntax")  # map delete id <id> key hex <bytes>
    assert delete[1:7] == [*syntax[:3], "13", *syntax[4:6]]
    # The key deleted is the dump's own key of client_sidecar's cgroup (id 1002).
    (entry,) = [e for e in snaps[0]["bpf"]["dumps"]["cgroup_info_map"][0]["entries"]
                if e["key"][:2] == ["0xea", "0x03"]]  # fmt: skip
    assert delete[7:] == [b[2:] for b in entry["key"]]
    run, calls = fake_run({"map show": (0, json.dumps(MAP_SHOW * 2))})
    armprep.rearm(args, run)
    assert not any("delete" in c for c in calls)  # two maps of that name: delete nothing


def test_the_probe_asks_until_enough_answers_in_a_row_are_200() -> None:
    # The first answers may be errors: the server Envoy's first connect to nginx goes to 15006
    # until sockops learns its process (Merbridge's legacy path).
    assert upstream.value("merbridge", "legacy_sidecar_to_local_pod")["unknown"] == 15006
    import http.server
    import threading

    codes = iter([503, 200, 503, 200, 200, 200, 200])
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.headers.get("Connection", ""))
            self.send_response(next(codes))
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/get"
        result = armprep.probe_requests(url, requests=10, successes=3, pause=0)
    finally:
        server.shutdown()
        server.server_close()
    assert result == {"ok": True, "codes": [503, 200, 503, 200, 200, 200]}
    assert set(seen) == {"close"}  # a new connection each time: every hop connects again


def test_sample_snapshots_the_window_and_lets_k6_start_after_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crictl, root = _fake_node(tmp_path)
    run, _ = fake_run({"cgroup show": (0, "[]"), "map show": (0, "[]")})
    monkeypatch.setattr(nodesnap, "run_command", run)
    out, stop = tmp_path / "trial", tmp_path / "stop"
    stop.touch()
    window, ready = out / "node-window.json", out / "window-start.done"
    rc = agent.main(
        ["sample", "--out-dir", str(out), "--host", "lt1", "--crictl", str(crictl),
         "--cgroup-root", str(root), "--stop-file", str(stop), "--max-seconds", "30",
         "--window-file", str(window), "--ready-file", str(ready), "--target", "10.96.0.20:80",
         *[f"--component={c}" for c in COMPONENTS]]
    )  # fmt: skip
    assert rc == 0 and ready.exists()
    doc = json.loads(window.read_text())
    assert doc["start"]["t_end"] <= doc["end"]["t_begin"]
    assert {c["component"] for c in doc["start"]["containers"]} == {"k6", "client_sidecar"}
    assert doc["end"]["target"] == "10.96.0.20:80" and doc["end"]["tasks"]["rows"]
