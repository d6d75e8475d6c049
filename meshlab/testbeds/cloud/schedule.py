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

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshlab.testbeds.cloud import upstream

MIB = 1024 * 1024
_MEM_UNITS = {
    "": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
}  # fmt: skip
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
ROLE_LABEL = "meshlab.io/role"


def cpu_m(quantity: Any) -> int:
    """Kubernetes CPU quantity -> millicores ('250m', '1', 2, '0.5')."""
    text = str(quantity).strip()
    if text.endswith("m"):
        return int(text[:-1])
    return round(float(text) * 1000)


def mem_bytes(quantity: Any) -> int:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity).strip())
    if not match or match.group(2) not in _MEM_UNITS:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return round(float(match.group(1)) * _MEM_UNITS[match.group(2)])


def cpuset_size(cpus: str) -> int:
    """Number of CPUs in a Linux cpu list ('0', '0-1,3')."""
    count = 0
    for part in filter(None, (p.strip() for p in str(cpus).split(","))):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


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


@dataclass(frozen=True)
class Container:
    name: str
    cpu_m: int
    mem: int
    guaranteed: bool  # requests == limits for cpu and memory
    restartable: bool = False  # a native sidecar (init container with restartPolicy Always)


@dataclass(frozen=True)
class PodTemplate:
    owner: str  # "Deployment meshlab/k6"
    namespace: str
    init: tuple[Container, ...]
    containers: tuple[Container, ...]
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    replicas: int  # per eligible node for DaemonSets
    daemon: bool
    surge: int  # extra pods during a rollout restart
    hint: str = ""  # which role variables set the requests

    @property
    def cpu_m(self) -> int:
        side = sum(c.cpu_m for c in self.init if c.restartable)
        inits = [c.cpu_m for c in self.init if not c.restartable]
        return max([sum(c.cpu_m for c in self.containers) + side, *inits])

    @property
    def mem(self) -> int:
        side = sum(c.mem for c in self.init if c.restartable)
        inits = [c.mem for c in self.init if not c.restartable]
        return max([sum(c.mem for c in self.containers) + side, *inits])

    @property
    def guaranteed(self) -> bool:
        return all(c.guaranteed for c in (*self.init, *self.containers))

    def exclusive_cpus(self) -> int:
        """Exclusive CPUs under the static policy: integer-CPU containers of Guaranteed pods."""
        if not self.guaranteed:
            return 0

        def whole(c: Container) -> int:
            return c.cpu_m // 1000 if c.cpu_m % 1000 == 0 else 0

        app = sum(whole(c) for c in self.containers) + sum(
            whole(c) for c in self.init if c.restartable
        )
        return max([app, *(whole(c) for c in self.init if not c.restartable)])


def _container(spec: Mapping[str, Any], restartable: bool = False) -> Container:
    res = spec.get("resources") or {}
    req, lim = res.get("requests") or {}, res.get("limits") or {}
    # A limit without a request defaults the request to the limit (API server defaulting).
    cpu = req.get("cpu", lim.get("cpu", 0))
    mem = req.get("memory", lim.get("memory", 0))
    guaranteed = (
        "cpu" in lim
        and "memory" in lim
        and cpu_m(cpu) == cpu_m(lim["cpu"])
        and mem_bytes(mem) == mem_bytes(lim["memory"])
    )
    return Container(str(spec.get("name")), cpu_m(cpu), mem_bytes(mem), guaranteed, restartable)


@dataclass(frozen=True)
class Injection:
    """What Istio's injector adds to pods of injected namespaces (istio fixture + rendered IOP)."""

    namespaces: frozenset[str]
    proxy_resources: Mapping[str, Any]
    native_mode: str  # ENABLE_NATIVE_SIDECARS as istiod runs it: auto | true | false
    kubelet_minor: int

    @classmethod
    def from_manifests(cls, docs: Iterable[Mapping[str, Any]], kubelet_minor: int) -> Injection:
        namespaces, resources, env = set(), {}, {}
        for doc in docs:
            if doc.get("kind") == "Namespace":
                labels = (doc.get("metadata") or {}).get("labels") or {}
                if labels.get("istio-injection") == "enabled":
                    namespaces.add(doc["metadata"]["name"])
            elif doc.get("kind") == "IstioOperator":
                values = doc["spec"].get("values") or {}
                resources = ((values.get("global") or {}).get("proxy") or {}).get("resources") or {}
                env = (values.get("pilot") or {}).get("env") or {}
        default = upstream.value("istio", "native_sidecars_default")
        mode = str(env.get("ENABLE_NATIVE_SIDECARS", default)).lower()
        return cls(frozenset(namespaces), resources, mode, kubelet_minor)

    def native(self, annotations: Mapping[str, str]) -> bool:
        """Istio 1.29: the pod annotation wins over the flag; auto = every kubelet >= 1.33."""
        note = upstream.value("istio", "native_sidecar_annotation")
        if annotations.get(note) in ("true", "false"):
            return annotations[note] == "true"
        if self.native_mode == "auto":
            return self.kubelet_minor >= upstream.value(
                "istio", "native_sidecars_auto_min_kubelet_minor"
            )
        return self.native_mode == "true"

    def proxy_spec(self, annotations: Mapping[str, str]) -> dict[str, Any]:
        keys = {
            ("requests", "cpu"): "sidecar.istio.io/proxyCPU",
            ("requests", "memory"): "sidecar.istio.io/proxyMemory",
            ("limits", "cpu"): "sidecar.istio.io/proxyCPULimit",
            ("limits", "memory"): "sidecar.istio.io/proxyMemoryLimit",
        }
        if any(a in annotations for a in keys.values()):
            res: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
            for (kind, name), note in keys.items():
                if note in annotations:
                    res[kind][name] = annotations[note]
            return {"resources": res}
        return {"resources": dict(self.proxy_resources)}

    def inject(self, namespace: str, template: Mapping[str, Any]) -> dict[str, Any]:
        """The pod spec after injection: istio-init first, istio-proxy where Istio puts it."""
        meta = template.get("metadata") or {}
        spec = dict(template.get("spec") or {})
        annotations = meta.get("annotations") or {}
        if (
            namespace not in self.namespaces
            or annotations.get("sidecar.istio.io/inject") == "false"
        ):
            return spec
        proxy = {"name": upstream.value("istio", "proxy_container"), **self.proxy_spec(annotations)}
        init = {"name": upstream.value("istio", "init_container"), **self.proxy_spec(annotations)}
        if self.native(annotations):
            spec["initContainers"] = [init, *spec.get("initContainers", []),
                                      {**proxy, "restartPolicy": "Always"}]  # fmt: skip
        else:
            spec["initContainers"] = [init, *spec.get("initContainers", [])]
            spec["containers"] = [*spec.get("containers", []), proxy]
        return spec


def _surge(doc: Mapping[str, Any], replicas: int) -> int:
    strategy = (doc.get("spec") or {}).get("strategy") or {}
    defaults = upstream.value("kubernetes", "deployment_rolling_defaults")
    if strategy.get("type", defaults["type"]) == "Recreate":
        return 0
    raw = str((strategy.get("rollingUpdate") or {}).get("maxSurge", defaults["max_surge"]))
    if raw.endswith("%"):
        return math.ceil(replicas * float(raw[:-1]) / 100)
    return int(raw)


HINTS = {
    ("meshlab", "k6"): "workload_k6_cpu/workload_k6_memory + workload_sidecar_cpu/memory",
    ("meshlab", "server"): "workload_server_cpu/memory + workload_sidecar_cpu/memory",
    ("meshlab", "httpbin"): "workload_httpbin_enabled (workload_server_cpu + workload_sidecar_cpu)",
    ("meshlab-flood", "flooder"): "flooder_pods (the experiment's largest flood)",
}


def pod_templates(docs: Sequence[Mapping[str, Any]], injection: Injection) -> list[PodTemplate]:
    """Every Deployment and DaemonSet in the rendered manifests, sidecars injected."""
    pods = []
    for doc in docs:
        kind = doc.get("kind")
        if kind not in ("Deployment", "DaemonSet"):
            continue
        meta = doc["metadata"]
        namespace = str(meta.get("namespace", "default"))
        template = doc["spec"]["template"]
        spec = injection.inject(namespace, template)
        replicas = 1 if kind == "DaemonSet" else int(doc["spec"].get("replicas", 1))
        pods.append(
            PodTemplate(
                owner=f"{kind} {namespace}/{meta['name']}",
                namespace=namespace,
                init=tuple(
                    _container(c, c.get("restartPolicy") == "Always")
                    for c in spec.get("initContainers", [])
                ),
                containers=tuple(_container(c) for c in spec.get("containers", [])),
                node_selector=spec.get("nodeSelector") or {},
                tolerations=tuple(spec.get("tolerations") or ()),
                replicas=replicas,
                daemon=kind == "DaemonSet",
                surge=0 if kind == "DaemonSet" else _surge(doc, replicas),
                hint=HINTS.get((namespace, str(meta["name"])), ""),
            )
        )
    return pods


def cluster_addons(injection: Injection, istiod_selector: Mapping[str, str]) -> list[PodTemplate]:
    """Pods every cluster has that no role template renders: kubeadm's and istiod."""

    def pod(owner: str, ns: str, cpu: str, mem: str, selector: Mapping[str, str], replicas: int,
            tolerate_cp: bool) -> PodTemplate:  # fmt: skip
        c = Container(owner.split("/")[-1], cpu_m(cpu), mem_bytes(mem), False)
        tol = ({"key": CONTROL_PLANE_TAINT, "effect": "NoSchedule"},) if tolerate_cp else ()
        return PodTemplate(owner, ns, (), (c,), selector, tol, replicas, False, 0)

    cp = {CONTROL_PLANE_TAINT: ""}
    static = upstream.value("kubernetes", "control_plane_static_pods")
    dns = upstream.value("kubernetes", "coredns")
    istiod = upstream.value("istio", "istiod_requests")
    pods = [pod(f"static pod kube-system/{n}", "kube-system", cpu, "0", cp, 1, True)
            for n, cpu in static.items()]  # fmt: skip
    pods.append(
        pod("Deployment kube-system/coredns", "kube-system", dns["requests"]["cpu"],
            dns["requests"]["memory"], {}, dns["replicas"], dns["tolerates_control_plane"])
    )  # fmt: skip
    pods.append(
        pod("Deployment istio-system/istiod", "istio-system", istiod["cpu"], istiod["memory"],
            istiod_selector, 1, True)
    )  # fmt: skip
    del injection  # istiod and kubeadm's pods get no sidecar
    return pods


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
