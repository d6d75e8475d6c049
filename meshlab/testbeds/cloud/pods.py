"""What the cloud cluster's pods ask for, read from the rendered manifests: Kubernetes quantities,
containers and pod templates (Deployments, DaemonSets), what Istio's injector adds to a pod, and the
pods every cluster has that no role renders (kubeadm's control plane, CoreDNS, istiod, from the
upstream facts). schedule.py fits them onto the nodes."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshlab.testbeds.cloud import upstream

CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"

MIB = 1024 * 1024


_MEM_UNITS = {
    "": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
}  # fmt: skip


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
