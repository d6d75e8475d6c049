"""Per-node CPU and memory budgets of the cloud cluster, steady and during an arm switch.

Inputs: the manifests the roles render (Deployments, DaemonSets, the IstioOperator and the
namespaces that get sidecars), the nodes (vCPUs and memory from the flavor or from facts, their
inventory groups) and the kubelet configuration the kubernetes role writes (static CPU manager,
reservedSystemCPUs). Pods that no role renders but every cluster has (kubeadm's control plane and
CoreDNS, istiod) come from the upstream facts. What the scheduler and the kubelet would do is
modelled the way they do it:

- allocatable CPU = vCPUs - |reservedSystemCPUs| (kubelet: the reserved CPUs replace the CPU part
  of system/kube reserved); allocatable memory = memory - the hard eviction threshold;
- a pod's request = max(largest init container, sum of app containers) (restartable init
  containers, i.e. native sidecars, count with the app containers);
- on a node with the static CPU manager a Guaranteed pod's integer-CPU containers need that many
  exclusive CPUs, never from the reserved ones (init containers' CPUs are reused);
- Istio's injector adds istio-init and istio-proxy with the proxy's resources (annotations, else
  values.global.proxy.resources), in `containers` unless native sidecars are on;
- a pod that may land on several nodes (CoreDNS) is charged to each of them: the scheduler's
  spreading is a preference, not a promise;
- an arm switch (`kubectl rollout restart` of every Deployment in the restarted namespaces) keeps,
  per Deployment, `replicas + maxSurge` pods at once under RollingUpdate (maxSurge 25 % rounds up
  to 1 for one replica) and `replicas` under Recreate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshlab.testbeds.cloud import upstream
from meshlab.testbeds.cloud.pods import (  # noqa: F401 - re-exported: callers take them from here
    CONTROL_PLANE_TAINT,
    MIB,
    Container,
    Injection,
    PodTemplate,
    cluster_addons,
    cpu_m,
    cpuset_size,
    mem_bytes,
    pod_templates,
)

ROLE_LABEL = "meshlab.io/role"


# ---- nodes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    name: str
    role: str  # control-plane | workload | loadtest
    vcpus: int
    memory_mb: int
    labels: Mapping[str, str]
    taints: tuple[tuple[str, str], ...]  # (key, effect)
    cpu_manager_policy: str
    reserved_cpus: str

    @property
    def reserved(self) -> int:
        return cpuset_size(self.reserved_cpus) if self.reserved_cpus else 0

    @property
    def allocatable_cpu_m(self) -> int:
        return self.vcpus * 1000 - self.reserved * 1000

    @property
    def allocatable_mem(self) -> int:
        evict = mem_bytes(upstream.value("kubernetes", "eviction_hard_memory_available"))
        return self.memory_mb * MIB - evict

    @property
    def exclusive_cpus(self) -> int:
        """CPUs the static CPU manager can hand out exclusively (none without it)."""
        return self.vcpus - self.reserved if self.cpu_manager_policy == "static" else 0


def cluster_nodes(hosts: Sequence[Mapping[str, Any]], kubelet: Mapping[str, Any]) -> list[Node]:
    """Nodes as playbooks/site.yml makes them from inventory hosts.

    hosts: [{name, groups, vcpus, memory_mb}]; kubelet: {reserved_cpus, worker_cpu_manager_policy}
    (the kubernetes role's kubernetes_reserved_cpus and the policy site.yml gives workers).
    Hosts outside k8s_cluster (monitoring) are not Kubernetes nodes.
    """
    nodes = []
    for host in hosts:
        groups = set(host["groups"])
        if "kube_control_plane" in groups:
            role, labels = "control-plane", {CONTROL_PLANE_TAINT: ""}
            taints: tuple[tuple[str, str], ...] = ((CONTROL_PLANE_TAINT, "NoSchedule"),)
            policy, reserved = "none", ""
        elif "kube_node" in groups:
            role = "loadtest" if "loadtest" in groups else "workload"
            labels, taints = {ROLE_LABEL: role}, ()
            policy = str(kubelet.get("worker_cpu_manager_policy", "static"))
            reserved = str(kubelet.get("reserved_cpus", "")) if policy == "static" else ""
        else:
            continue
        labels = {**labels, "kubernetes.io/os": "linux", "kubernetes.io/hostname": host["name"]}
        nodes.append(
            Node(
                host["name"],
                role,
                int(host["vcpus"]),
                int(host["memory_mb"]),
                labels,
                taints,
                policy,
                reserved,
            )
        )
    return nodes


# ---- pods ---------------------------------------------------------------------------------


def _tolerates(pod: PodTemplate, node: Node) -> bool:
    for key, effect in node.taints:
        if not any(
            (t.get("operator") == "Exists" and not t.get("key"))
            or (t.get("key") == key and t.get("effect") in (None, "", effect))
            for t in pod.tolerations
        ):
            return False
    return True


def eligible(pod: PodTemplate, nodes: Sequence[Node]) -> list[Node]:
    return [
        n
        for n in nodes
        if all(n.labels.get(k) == str(v) for k, v in pod.node_selector.items())
        and _tolerates(pod, n)
    ]


# ---- budgets ------------------------------------------------------------------------------


@dataclass
class Budget:
    node: Node
    steady: list[tuple[PodTemplate, int]] = field(default_factory=list)  # (pod, count)
    surge: list[tuple[PodTemplate, int]] = field(default_factory=list)  # extra during a switch

    def cpu_m(self, during_switch: bool = False) -> int:
        rows = self.steady + (self.surge if during_switch else [])
        return sum(p.cpu_m * n for p, n in rows)

    def mem(self, during_switch: bool = False) -> int:
        rows = self.steady + (self.surge if during_switch else [])
        return sum(p.mem * n for p, n in rows)

    def exclusive(self, during_switch: bool = False) -> int:
        if self.node.cpu_manager_policy != "static":
            return 0
        rows = self.steady + (self.surge if during_switch else [])
        return sum(p.exclusive_cpus() * n for p, n in rows)

    def pods(self, during_switch: bool = False) -> int:
        rows = self.steady + (self.surge if during_switch else [])
        return sum(n for _, n in rows)

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.node.role,
            "allocatable_cpu_m": self.node.allocatable_cpu_m,
            "requested_cpu_m": self.cpu_m(),
            "requested_cpu_m_during_switch": self.cpu_m(True),
            "allocatable_memory_mib": self.node.allocatable_mem // MIB,
            "requested_memory_mib": self.mem() // MIB,
            "requested_memory_mib_during_switch": self.mem(True) // MIB,
            "exclusive_cpus_available": self.node.exclusive_cpus,
            "exclusive_cpus_needed": self.exclusive(),
            "exclusive_cpus_needed_during_switch": self.exclusive(True),
        }


def budgets(
    nodes: Sequence[Node], pods: Sequence[PodTemplate], restart_namespaces: Iterable[str]
) -> tuple[dict[str, Budget], list[str]]:
    """Charge every pod to the node(s) it can run on; a pod with none is a problem too."""
    out = {n.name: Budget(n) for n in nodes}
    restarted = set(restart_namespaces)
    problems = []
    for pod in pods:
        where = eligible(pod, nodes)
        if not where:
            have = ", ".join(f"{n.name}={n.labels.get(ROLE_LABEL, n.role)}" for n in nodes)
            problems.append(
                f"{pod.owner}: no node matches nodeSelector {dict(pod.node_selector)} ({have})"
            )
            continue
        # Pinned by its selector to one node, or a DaemonSet: counted there. Otherwise the
        # replicas may all land on any eligible node: charged to each (worst case).
        for node in where:
            out[node.name].steady.append((pod, pod.replicas))
            if pod.surge and pod.namespace in restarted:
                out[node.name].surge.append((pod, pod.surge))
    return out, problems


def _describe(rows: list[tuple[PodTemplate, int]]) -> str:
    parts = []
    for pod, n in sorted(rows, key=lambda r: -r[0].cpu_m * r[1]):
        if pod.cpu_m * n == 0:
            continue
        times = f"{n} x " if n > 1 else ""
        parts.append(f"{times}{pod.owner.split(' ', 1)[1]} {pod.cpu_m}m")
    return ", ".join(parts)


def refusals(table: Mapping[str, Budget]) -> list[str]:
    """One line per node and resource that does not fit, naming the numbers and the pods."""
    lines = []
    for name, b in table.items():
        node = b.node
        why_alloc = f"{node.vcpus} vCPU"
        if node.reserved:
            why_alloc += (
                f" - {node.reserved} reserved (kubernetes_reserved_cpus={node.reserved_cpus!r})"
            )
        for switch, label in ((False, "steady"), (True, "during an arm switch")):
            if switch and not b.surge:
                continue
            # The role variables behind the pods that weigh: exclusive CPUs or >= 0.5 CPU.
            hints = sorted(
                {p.hint for p, n in b.steady + b.surge
                 if p.hint and (p.exclusive_cpus() or p.cpu_m * n >= 500)}
            )  # fmt: skip
            fields = f"; set by {'; '.join(hints)}" if hints else ""
            cpu = b.cpu_m(switch)
            if cpu > node.allocatable_cpu_m:
                extra = ""
                if switch:
                    extra = (
                        " (rollout restart keeps old and new pods: "
                        + _describe(b.surge)
                        + " more; use strategy Recreate or maxSurge 0)"
                    )
                lines.append(
                    f"node {name} ({node.role}): CPU requests {cpu}m > allocatable "
                    f"{node.allocatable_cpu_m}m ({why_alloc}) {label}: {_describe(b.steady)}"
                    f"{extra}{fields}"
                )
            need = b.exclusive(switch)
            if need > node.exclusive_cpus and node.cpu_manager_policy == "static":
                lines.append(
                    f"node {name} ({node.role}): Guaranteed pods need {need} exclusive CPUs "
                    f"{label} but the static CPU manager has {node.exclusive_cpus} "
                    f"({why_alloc}){fields}"
                )
            mem = b.mem(switch)
            if mem > node.allocatable_mem:
                lines.append(
                    f"node {name} ({node.role}): memory requests {mem // MIB}Mi > allocatable "
                    f"{node.allocatable_mem // MIB}Mi ({node.memory_mb} MB - eviction threshold) "
                    f"{label}{fields}"
                )
            max_pods = upstream.value("kubernetes", "max_pods_default")
            if b.pods(switch) > max_pods:
                lines.append(
                    f"node {name} ({node.role}): {b.pods(switch)} pods > the kubelet's maxPods "
                    f"{max_pods} {label} (flooder_pods?)"
                )
    return lines


def merbridge_skips(pods: Sequence[PodTemplate], namespaces: Iterable[str]) -> list[str]:
    """Measured pods Merbridge 0.8.1 would not redirect (its IsIstioInjectedSidecar)."""
    rule = upstream.value("merbridge", "sidecar_detection")
    found = []
    for pod in pods:
        if pod.namespace not in set(namespaces):
            continue
        names = [c.name for c in pod.containers]
        if rule["container"] not in names or len(names) < rule["min_containers"]:
            where = "initContainers" if any(c.name == rule["container"] for c in pod.init) else None
            found.append(
                f"{pod.owner}: containers {names}"
                + (f", {rule['container']} is in {where} (native sidecar)" if where else "")
            )
    return found
