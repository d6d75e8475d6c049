"""Does every pod of the default stack fit its node, also during an arm switch?

Renders the workload, Calico, Istio, Merbridge and flooder manifests for the default stack config
(tests/cloud/render_manifests.yml), takes each node's allocatable CPU and memory from the stack's
flavor (infra/config.py defaults) and the kubelet configuration the kubernetes role writes, and
asks meshlab.testbeds.cloud.schedule what the scheduler and the static CPU manager would do.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import infra_mocks  # noqa: F401  (puts the repository root on sys.path for infra.*)
import pytest
import yaml
from cloud_render import VERSIONS, docs

from infra.config import parse
from meshlab.record import spec as spec_mod
from meshlab.testbeds.cloud import preflight, schedule

REPO = Path(__file__).resolve().parents[2]
KUBELET_MINOR = int(VERSIONS["meshlab_versions"]["kubernetes"].split(".")[1])
# A named flavor's size is the cloud's secret; with cpuPinning the stack creates the flavor from
# vcpus/ramMb (defaults 4 / 8192: the thesis' shape), so the default sizes are known offline.
REQUIRED = {"image": "debian-12", "operatorCidrs": '["198.51.100.7/32"]', "cpuPinning": "true"}


def stack_hosts(**config: str) -> list[dict[str, Any]]:
    """The stack's Kubernetes VMs as the inventory groups them, sized by its flavor config."""
    cfg = parse({**REQUIRED, **config}, stack="dev")
    return [
        {"name": n.name, "groups": list(n.groups), "vcpus": cfg.vcpus, "memory_mb": cfg.ram_mb}
        for n in cfg.nodes()
        if "k8s_cluster" in n.groups
    ]


def kubelet(rendered: Path) -> dict[str, str]:
    patch = yaml.safe_load((rendered / "kubernetes__kubeletconfiguration+merge.yaml").read_text())
    return {
        "reserved_cpus": patch.get("reservedSystemCPUs", ""),
        "worker_cpu_manager_policy": patch["cpuManagerPolicy"],
    }


def manifests(rendered: Path) -> list[dict[str, Any]]:
    return preflight.load_docs(rendered)


def largest_flood(name: str = "default") -> int:
    exp = spec_mod.load(REPO / "experiments" / f"{name}.yml")
    return max(f.pods for f in exp.flood_sizes)


def model(rendered: Path, the_docs: list[dict[str, Any]] | None = None, **config: str):
    return preflight.model(
        manifests(rendered) if the_docs is None else the_docs,
        stack_hosts(**config),
        kubelet(rendered),
        KUBELET_MINOR,
        largest_flood(),
    )


def test_default_stack_fits_steady_and_during_an_arm_switch(rendered: Path) -> None:
    table, problems, _ = model(rendered)
    assert problems == []
    loadtest = next(b for b in table.values() if b.node.role == "loadtest")
    # 4 vCPU, CPU 0 reserved: 3 allocatable CPUs and 3 exclusive ones.
    assert loadtest.node.allocatable_cpu_m == 3000 and loadtest.node.exclusive_cpus == 3
    assert loadtest.cpu_m(during_switch=True) <= 3000
    assert loadtest.exclusive(during_switch=True) <= 3


def test_the_k6_pod_is_charged_with_its_injected_sidecar(rendered: Path) -> None:
    _, _, pods = model(rendered)
    k6 = next(p for p in pods if p.owner == "Deployment meshlab/k6")
    names = [c.name for c in k6.containers]
    assert names == ["k6", "istio-proxy"]
    assert [c.name for c in k6.init] == ["istio-init"]
    workload = yaml.safe_load((REPO / "roles/workload/defaults/main.yml").read_text())
    want = schedule.cpu_m(workload["workload_k6_cpu"]) + schedule.cpu_m(
        workload["workload_sidecar_cpu"]
    )
    assert k6.cpu_m == want
    assert k6.guaranteed and k6.exclusive_cpus() == want // 1000


def test_k6_at_two_cpus_does_not_fit_a_four_vcpu_loadtest_node(rendered: Path) -> None:
    # Issue 15, defect 1: k6 2 + sidecar 1 + calico-node 250m (+ CoreDNS, Merbridge) > 3 CPUs.
    the_docs = copy.deepcopy(manifests(rendered))
    k6 = next(d for d in the_docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "k6")
    for res in ("requests", "limits"):
        k6["spec"]["template"]["spec"]["containers"][0]["resources"][res]["cpu"] = "2"
    _, problems, _ = model(rendered, the_docs)
    steady = [p for p in problems if "(loadtest)" in p and "steady" in p]
    assert steady and "CPU requests 3550m > allocatable 3000m" in steady[0], problems


def test_a_rolling_update_deadlocks_the_arm_switch(rendered: Path) -> None:
    # Issue 15, defect 2: with one replica, RollingUpdate's 25 % surge is one extra pod that needs
    # a second set of exclusive CPUs while the old pod still holds the first.
    the_docs = copy.deepcopy(manifests(rendered))
    for d in the_docs:
        if d["kind"] == "Deployment" and d["metadata"].get("namespace") == "meshlab":
            d["spec"].pop("strategy", None)
    _, problems, _ = model(rendered, the_docs)
    switch = [p for p in problems if "during an arm switch" in p]
    assert any("(loadtest)" in p and "exclusive CPUs" in p for p in switch), problems
    assert any("(workload)" in p and "maxSurge 0" in p for p in switch), problems
    assert all("steady" not in p for p in problems)  # it fits until the first switch


def test_every_measured_deployment_recreates_its_pod(rendered: Path) -> None:
    deployments = [
        d for d in docs(rendered / "workload__workload-httpbin.yaml") if d["kind"] == "Deployment"
    ]
    assert {d["metadata"]["name"] for d in deployments} == {"server", "k6", "httpbin"}
    for d in deployments:
        assert d["spec"]["strategy"] == {"type": "Recreate"}, d["metadata"]["name"]


def test_a_small_loadtest_flavor_is_refused_naming_node_and_numbers(rendered: Path) -> None:
    _, problems, _ = model(rendered, vcpus="2", ramMb="4096")
    lines = [p for p in problems if "(loadtest)" in p]
    assert lines, problems
    assert "allocatable 1000m (2 vCPU - 1 reserved" in lines[0]


def _deployment(the_docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(d for d in the_docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


def test_the_same_node_layout_is_what_the_workload_role_renders(rendered: Path) -> None:
    """preflight.same_node (what the budget checks) and workload_placement: same-node (what the
    install applies) must be one layout: the server beside k6 on the load-test node."""
    role = docs(rendered / "workload__workload-same-node.yaml")
    ours = preflight.same_node(docs(rendered / "workload__workload.yaml"))
    for name in ("server", "k6"):
        assert _deployment(role, name) == _deployment(ours, name), name
    selector = _deployment(role, "server")["spec"]["template"]["spec"]["nodeSelector"]
    assert selector == {"meshlab.io/role": "loadtest"}


def test_same_node_does_not_fit_the_thesis_shape_and_fits_a_bigger_one(rendered: Path) -> None:
    # k6 1 + its sidecar 1 + nginx 1 + its sidecar 1 exclusive CPUs > 3 allocatable of 4 vCPU
    the_docs = preflight.same_node(manifests(rendered))
    _, problems, _ = model(rendered, the_docs)
    steady = [p for p in problems if "(loadtest)" in p and "steady" in p]
    assert steady and "CPU requests 4550m > allocatable 3000m" in steady[0], problems
    _, bigger, _ = model(rendered, the_docs, vcpus="8", ramMb="16384")
    assert bigger == []


def test_httpbin_on_the_default_shape_is_refused(tmp_path: Path, rendered: Path) -> None:
    the_docs = [
        d
        for name in preflight.MANIFESTS
        for d in docs(next(rendered.glob(f"*{name}")))
        if name != "workload.yaml"
    ] + docs(rendered / "workload__workload-httpbin.yaml")
    _, problems, _ = model(rendered, the_docs)
    assert any("(workload)" in p and "workload_httpbin_enabled" in p for p in problems), problems


def test_merbridge_sees_every_measured_pod(rendered: Path) -> None:
    _, _, pods = model(rendered)
    assert schedule.merbridge_skips(pods, ["meshlab"]) == []


def test_with_istio_defaults_merbridge_would_skip_the_measured_pods(rendered: Path) -> None:
    # Issue 15, defect 4: Istio 1.29's ENABLE_NATIVE_SIDECARS=auto on kubelets >= 1.33 moves
    # istio-proxy to initContainers; Merbridge 0.8.1 then finds one container and skips the pod.
    the_docs = copy.deepcopy(manifests(rendered))
    for d in the_docs:
        if d["kind"] == "IstioOperator":
            d["spec"]["values"].get("pilot", {}).get("env", {}).pop("ENABLE_NATIVE_SIDECARS", None)
        if d["kind"] == "Deployment":
            d["spec"]["template"]["metadata"].get("annotations", {}).pop(
                "sidecar.istio.io/nativeSidecar", None
            )
    _, _, pods = model(rendered, the_docs)
    skipped = schedule.merbridge_skips(pods, ["meshlab"])
    assert len(skipped) == 2 and all("initContainers (native sidecar)" in s for s in skipped)


@pytest.mark.parametrize(
    ("quantity", "millis"), [("250m", 250), ("1", 1000), (2, 2000), ("0.5", 500)]
)
def test_cpu_quantities(quantity: Any, millis: int) -> None:
    assert schedule.cpu_m(quantity) == millis


def test_memory_quantities_and_cpu_lists() -> None:
    assert schedule.mem_bytes("256Mi") == 256 * 2**20
    assert schedule.mem_bytes("1Gi") == 2**30
    assert schedule.mem_bytes("100M") == 10**8
    assert schedule.cpuset_size("0") == 1
    assert schedule.cpuset_size("0-1,3") == 3
    with pytest.raises(ValueError):
        schedule.mem_bytes("12 apples")


def test_a_pods_request_is_its_largest_init_or_its_containers() -> None:
    def c(name: str, cpu: int, restartable: bool = False) -> schedule.Container:
        return schedule.Container(name, cpu, 0, True, restartable)

    plain = schedule.PodTemplate("p", "ns", (c("init", 3000),), (c("a", 1000), c("b", 1000)),
                                 {}, (), 1, False, 0)  # fmt: skip
    assert plain.cpu_m == 3000 and plain.exclusive_cpus() == 3
    native = schedule.PodTemplate("p", "ns", (c("init", 1000), c("proxy", 1000, True)),
                                  (c("a", 1000),), {}, (), 1, False, 0)  # fmt: skip
    assert native.cpu_m == 2000 and native.exclusive_cpus() == 2
