"""What a finished `playbooks/site.yml` must have produced on the cloud testbed (opt-in)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.cluster
NS = "meshlab"

# Run inside the k6 pod (sidecar-injected, service account k6): the only caller the policy allows.
RBAC_SCRIPT = """
import http from 'k6/http';
import { check } from 'k6';
export const options = { iterations: 1, vus: 1, thresholds: { checks: ['rate==1'] } };
const base = 'http://server.meshlab.svc.cluster.local';
export default function () {
  check(http.get(`${base}/get`), { 'GET /get is allowed': (r) => r.status === 200 });
  check(http.post(`${base}/get`, 'x'), { 'POST /get is denied': (r) => r.status === 403 });
  check(http.get(`${base}/other`), { 'GET /other is denied': (r) => r.status === 403 });
}
"""


def test_every_node_is_ready(kubectl: Callable[..., Any], groups: dict[str, list[str]]) -> None:
    nodes = kubectl("get", "nodes", "-o", "json")["items"]
    assert len(nodes) == len(groups["k8s_cluster"])
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["metadata"]["name"]


def test_calico_node_and_istiod_are_running(kubectl: Callable[..., Any]) -> None:
    calico = kubectl("-n", "kube-system", "get", "daemonset", "calico-node", "-o", "json")["status"]
    assert calico["numberReady"] == calico["desiredNumberScheduled"] > 0
    istiod = kubectl("-n", "istio-system", "get", "deployment", "istiod", "-o", "json")["status"]
    assert istiod.get("availableReplicas", 0) >= 1


def test_measured_pods_have_sidecars_and_are_guaranteed(kubectl: Callable[..., Any]) -> None:
    pods = kubectl("-n", NS, "get", "pods", "-o", "json")["items"]
    apps = {p["metadata"]["labels"].get("app") for p in pods}
    assert {"server", "k6"} <= apps
    for pod in pods:
        names = [
            c["name"] for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
        ]
        assert "istio-proxy" in names, pod["metadata"]["name"]
        assert pod["status"]["qosClass"] == "Guaranteed", pod["metadata"]["name"]


def test_strict_mtls_refuses_plaintext(kubectl: Callable[..., Any], control_plane: Any) -> None:
    pods = kubectl("-n", NS, "get", "pods", "-l", "app=server", "-o", "json")["items"]
    pod_ip = pods[0]["status"]["podIP"]
    # The control plane is outside the mesh: a plaintext request must not get an HTTP answer.
    result = control_plane.run(
        f"curl -sS -m 5 -o /dev/null -w '%{{http_code}}' http://{pod_ip}:80/get"
    )
    assert result.rc != 0 or result.stdout.strip() == "000", result.stdout


def test_only_k6_may_get_slash_get(kubectl: Callable[..., Any]) -> None:
    result = kubectl(
        "-n",
        NS,
        "exec",
        "-i",
        "deploy/k6",
        "-c",
        "k6",
        "--",
        "k6",
        "run",
        "--quiet",
        "-",
        stdin=RBAC_SCRIPT,
        check=False,
    )
    assert result.rc == 0, result.stdout + result.stderr


def test_merbridge_is_in_the_expected_state(
    kubectl: Callable[..., Any], expected_merbridge_state: str
) -> None:
    result = kubectl(
        "-n",
        "istio-system",
        "get",
        "daemonset",
        "merbridge",
        "--ignore-not-found",
        "-o",
        "json",
        check=False,
    )
    if expected_merbridge_state == "absent":
        assert result.stdout.strip() == "", "Merbridge DaemonSet exists in the iptables arm"
    else:
        ds = json.loads(result.stdout)
        status = ds["status"]
        assert (
            status["numberReady"]
            == status["desiredNumberScheduled"]
            == status["updatedNumberScheduled"]
            > 0
        )
        # Ready means attached (roles/merbridge readiness probe), not merely started.
        (container,) = ds["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["exec"]["command"][:2] == ["sh", "-c"]


def test_node_exporter_runs_on_every_vm(
    groups: dict[str, list[str]], host_of: Callable[[str], Any]
) -> None:
    for name in groups["k8s_cluster"] + groups["monitoring"]:
        host = host_of(name)
        assert host.service("prometheus-node-exporter").is_running, name
        metrics = host.check_output("curl -s -m 5 http://127.0.0.1:9100/metrics")
        assert 'node_cpu_seconds_total{cpu="0",mode="steal"}' in metrics, name


def test_measured_nodes_run_the_static_cpu_manager(
    groups: dict[str, list[str]], host_of: Callable[[str], Any]
) -> None:
    workers = [h for h in groups["kube_node"] if h not in groups["kube_control_plane"]]
    assert workers
    for name in workers:
        state = json.loads(
            host_of(name).check_output("sudo -n cat /var/lib/kubelet/cpu_manager_state")
        )
        assert state["policyName"] == "static", name
    for name in groups["loadtest"]:
        state = json.loads(
            host_of(name).check_output("sudo -n cat /var/lib/kubelet/cpu_manager_state")
        )
        assert state.get("entries"), f"{name}: no exclusive CPUs assigned (k6 pod not Guaranteed?)"


def test_host_processes_stay_off_the_measured_cpus(
    groups: dict[str, list[str]], host_of: Callable[[str], Any]
) -> None:
    # The kubernetes role's AllowedCPUs= drop-ins: every slice on the reserved CPU 0 (issue 22).
    workers = [h for h in groups["kube_node"] if h not in groups["kube_control_plane"]]
    for name in workers:
        host = host_of(name)
        for slice_ in ("system.slice", "user.slice"):
            cpus = host.check_output(f"cat /sys/fs/cgroup/{slice_}/cpuset.cpus.effective")
            assert cpus.strip() == "0", f"{name}: {slice_} may run on {cpus}"


def test_apt_timers_are_masked(groups: dict[str, list[str]], host_of: Callable[[str], Any]) -> None:
    for name in groups["k8s_cluster"] + groups["monitoring"]:
        host = host_of(name)
        for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
            state = host.run(f"systemctl is-enabled {timer}").stdout.strip()
            assert state == "masked", f"{name}: {timer} is {state}"


def test_irqbalance_is_gone_and_irqs_avoid_measured_cpus(
    groups: dict[str, list[str]], host_of: Callable[[str], Any]
) -> None:
    for name in groups["k8s_cluster"]:
        host = host_of(name)
        assert not host.package("irqbalance").is_installed, name
        report = json.loads(host.check_output("cat /run/meshlab/cpu-tuning.json"))
        assert report["irqs_on_housekeeping"] > 0, name


def test_prometheus_scrapes_every_target(
    groups: dict[str, list[str]], host_of: Callable[[str], Any]
) -> None:
    monitor = host_of(groups["monitoring"][0])
    targets = json.loads(monitor.check_output("curl -s -m 5 http://127.0.0.1:9090/api/v1/targets"))[
        "data"
    ]["activeTargets"]
    jobs = {t["labels"]["job"] for t in targets}
    assert {"node", "envoy", "cadvisor"} <= jobs
    down = [
        (t["labels"]["job"], t["labels"].get("instance"), t.get("lastError"))
        for t in targets
        if t["health"] != "up"
    ]
    assert down == []
    health = json.loads(monitor.check_output("curl -s -m 5 http://127.0.0.1:3000/api/health"))
    assert health["database"] == "ok"
