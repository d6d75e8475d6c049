"""Host processes off the measured CPUs, and a first boot that neither races apt nor lets it fire
later (issue 22): computed from the rendered systemd drop-ins, the roles' and the trial play's
task lists, the installed apt module, and recorded per-task CPU snapshots."""

from __future__ import annotations

import ast
import configparser
from pathlib import Path
from typing import Any

import ansible.modules.apt
import cloud_render as cr
import jinja2
import pytest
import yaml
from test_cloud_versions import CLUSTER_ROLES, iter_tasks

from meshlab.testbeds.cloud import host_cpus, upstream

REPO = cr.REPO
VCPUS = 4  # the default shape's Kubernetes VMs (infra/config.py)


# ---- systemd confined to the reserved CPUs ------------------------------------------------------


def drop_in(rendered: Path, unit: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(comment_prefixes=("#",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((rendered / f"kubernetes__reserved-cpus__{unit}.conf").read_text())
    return parser


def test_every_slice_and_daemon_is_confined_to_cpus_the_cpu_manager_never_hands_out(
    rendered: Path,
) -> None:
    defaults = yaml.safe_load((REPO / "roles/kubernetes/defaults/main.yml").read_text())
    units = defaults["kubernetes_confined_units"]
    # kubelet and containerd included, and the two slices every host process lives in.
    assert {"system.slice", "user.slice", "kubelet.service", "containerd.service"} <= set(units)
    (patch,) = cr.docs(rendered / "kubernetes__kubeletconfiguration+merge.yaml")
    assert patch["cpuManagerPolicy"] == "static"
    reserved = host_cpus.parse_cpulist(patch["reservedSystemCPUs"])
    assert upstream.value("kubernetes", "reserved_system_cpus_replace_cpu_reservation")
    exclusive = set(range(VCPUS)) - reserved  # what the static CPU manager may hand out
    fact = upstream.value("systemd", "allowed_cpus")
    for unit in units:
        conf = drop_in(rendered, unit)
        section = fact["section_for_slice"] if unit.endswith(".slice") else "Service"
        assert conf.sections() == [section], unit
        allowed = host_cpus.parse_cpulist(conf[section]["AllowedCPUs"])
        assert allowed and allowed <= reserved, unit
        assert not allowed & exclusive, unit
        # CPUAffinity= is a sched_setaffinity mask every forked process inherits, containers too
        assert upstream.value("systemd", "cpu_affinity")["inherited_by"] == "forked_processes"
        assert "CPUAffinity" not in conf[section]


def test_the_confinement_is_on_exactly_where_the_static_cpu_manager_is() -> None:
    defaults = (REPO / "roles/kubernetes/defaults/main.yml").read_text()
    expr = yaml.safe_load(defaults)["kubernetes_confine_host_cpus"]
    for policy, want in (("static", "True"), ("none", "False")):
        got = jinja2.Template(expr).render(kubernetes_cpu_manager_policy=policy)
        assert got == want, policy
    main = iter_tasks(yaml.safe_load((REPO / "roles/kubernetes/tasks/main.yml").read_text()))
    (include,) = [t for t in main if t.get("ansible.builtin.include_tasks") == "confine.yml"]
    assert include["when"] == "kubernetes_confine_host_cpus | bool"
    confine = iter_tasks(yaml.safe_load((REPO / "roles/kubernetes/tasks/confine.yml").read_text()))
    assert any(t.get("ansible.builtin.assert") for t in confine)  # the effective cpuset is checked


# ---- no Ansible round trip to a node while k6 measures -----------------------------------------


def _argv_words(task: dict[str, Any]) -> list[str]:
    cmd = task.get("ansible.builtin.command") or {}
    argv = cmd.get("argv") or []
    if isinstance(argv, str):
        return [str(a) for v in (task.get("vars") or {}).values() if isinstance(v, list) for a in v]
    return [str(a) for a in argv]


def test_no_task_reaches_a_node_while_k6_measures() -> None:
    tasks = iter_tasks(yaml.safe_load((REPO / "playbooks/tasks/trial_cloud.yml").read_text()))
    (k6,) = [i for i, t in enumerate(tasks) if "k6" in _argv_words(t)[2:3]]
    assert tasks[k6]["poll"] == 0 and "async" in tasks[k6]  # started, not watched
    sampler = next(t for t in tasks if "sample" in _argv_words(t)[2:3])
    assert sampler["poll"] == 0
    # Everything after k6's start runs on the controller until a controller-side wait has
    # covered the warm-up and the measured window.
    for i, task in enumerate(tasks[k6 + 1 :], start=k6 + 1):
        if "ansible.builtin.pause" in task:
            seconds = task["ansible.builtin.pause"]["seconds"]
            waited = int(jinja2.Template(seconds).render(__meshlab_trial={"measured_until_s": 25}))
            assert waited > 25, seconds  # the window, and some for k6's start-up
            break
        assert task.get("delegate_to") == "localhost", f"task {i} {task.get('name')} reaches nodes"
    else:
        pytest.fail("no controller-side wait after k6's start")
    assert [t.get("poll") for t in tasks if t.get("poll") not in (None, 0)] == []


def test_k6_starts_after_its_nodes_start_snapshot() -> None:
    tasks = iter_tasks(yaml.safe_load((REPO / "playbooks/tasks/trial_cloud.yml").read_text()))
    words = {w for t in tasks for w in _argv_words(t)}
    ready = next(w for w in words if w.startswith("--ready-file="))
    assert "--start-after=" + ready.split("=", 1)[1] in words


# ---- apt: masked timers and a long lock wait ----------------------------------------------------


def apt_module_default_lock_timeout() -> int:
    """lock_timeout's default in the installed ansible-core's apt module argument spec."""
    tree = ast.parse(Path(ansible.modules.apt.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "lock_timeout":
            call = node.value
            assert isinstance(call, ast.Call)
            return next(k.value.value for k in call.keywords if k.arg == "default")  # type: ignore[attr-defined]
    raise AssertionError("no lock_timeout in the apt module")


def test_every_apt_task_waits_long_for_the_dpkg_lock() -> None:
    module_default = apt_module_default_lock_timeout()
    assert module_default == 60  # what a first boot's apt-daily outlasts
    found = 0
    for role in CLUSTER_ROLES:
        defaults = yaml.safe_load((REPO / f"roles/{role}/defaults/main.yml").read_text()) or {}
        for path in sorted((REPO / f"roles/{role}/tasks").glob("*.yml")):
            for task in iter_tasks(yaml.safe_load(path.read_text()) or []):
                if "ansible.builtin.apt" not in task:
                    continue
                found += 1
                expr = str(task["ansible.builtin.apt"].get("lock_timeout", ""))
                assert expr, f"{path.relative_to(REPO)}: {task['name']} has no lock_timeout"
                value = int(jinja2.Template(expr).render(**defaults))
                assert value >= 10 * module_default, f"{path}: {task['name']}: {value} s"
    assert found >= 5


def test_apt_timers_are_masked_before_node_prep_first_uses_apt() -> None:
    tasks = iter_tasks(yaml.safe_load((REPO / "roles/node_prep/tasks/main.yml").read_text()))
    defaults = yaml.safe_load((REPO / "roles/node_prep/defaults/main.yml").read_text())
    first_apt = next(i for i, t in enumerate(tasks) if "ansible.builtin.apt" in t)
    (mask,) = [
        i
        for i, t in enumerate(tasks)
        if t.get("ansible.builtin.systemd_service", {}).get("masked") is True
    ]
    assert mask < first_apt
    assert {"apt-daily.timer", "apt-daily-upgrade.timer"} <= set(defaults["node_prep_masked_units"])
    assert tasks[mask]["ansible.builtin.systemd_service"]["state"] == "stopped"


# ---- per trial: what else ran on the exclusive CPUs ---------------------------------------------


def test_a_clean_window_has_no_intruder_and_lists_kernel_threads() -> None:
    record, reasons = host_cpus.judge(cr.windows("iptables"))
    assert reasons == []
    assert record["lt1"]["exclusive_cpus"] == "2,3" and record["lt1"]["intruders"] == []
    assert [k["comm"] for k in record["w1"]["kernel"]] == ["ksoftirqd/2"]
    assert "cp1" not in record  # no measured container there


def test_a_host_process_allowed_on_a_measured_cpu_is_an_intruder() -> None:
    windows = cr.windows("ebpf")
    for edge, ticks in (("start", 50), ("end", 53)):
        windows["w1"][edge]["tasks"]["rows"].append(
            [800, 801, "containerd", 0x400040, ticks, 0, "0-3", "/system.slice/containerd.service"]
        )
    _, reasons = host_cpus.judge(windows)
    assert reasons == [
        "exclusive CPUs: w1: containerd (pid 800, /system.slice/containerd.service) used 0.03 "
        "CPU-s during the window and was last on CPU 0 (allowed 0,1,2,3); the measured CPUs "
        "are 2,3"
    ]
    # The same process confined to CPU 0 (the drop-ins' effect) is no intruder.
    for edge in ("start", "end"):
        windows["w1"][edge]["tasks"]["rows"][-1][6] = "0"
    assert host_cpus.judge(windows)[1] == []


def test_a_task_started_in_the_window_counts_whole_and_a_missing_list_rejects() -> None:
    windows = cr.windows("iptables")
    windows["lt1"]["end"]["tasks"]["rows"].append(
        [950, 950, "sshd", 0x400140, 7, 3, "3", "/user.slice"]
    )
    _, reasons = host_cpus.judge(windows)
    assert len(reasons) == 1 and "sshd (pid 950, /user.slice) used 0.07 CPU-s" in reasons[0]
    del windows["lt1"]["end"]["tasks"]
    _, reasons = host_cpus.judge(windows)
    assert reasons[0].startswith("exclusive CPUs: lt1: no task list at the window's end")
