"""The cloud run's preflight: refuse in the first minute what would fail after the install.

    meshlab engine preflight --spec experiments/cloud.yml \\
        [--resume RUN_DIR] [--images-json JSON] \\
        [--nodes-json JSON --manifests DIR [--kubelet-minor 35]]

playbooks/preflight.yml runs it twice: on the controller before any VM is touched (the experiment
against what the cluster can run, the image digests it resolved), and once every VM answered (each
node's CPU, memory and exclusive-CPU budget for the rendered manifests, steady and during an arm
switch, and the kernel features Merbridge needs). Prints one JSON object and exits 0, or one line
per refusal (`meshlab: error: <field or node>: ...`) and exits 2.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from meshlab.errors import MeshlabError, RefusedError
from meshlab.record import spec as spec_mod
from meshlab.record.rundir import RunDir
from meshlab.record.spec import Experiment
from meshlab.testbeds.cloud import schedule, upstream
from meshlab.testbeds.cloud.trial import check_fits

SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
# The files of the render that hold pods, the injection settings and the Sidecar scope.
MANIFESTS = (
    "calico.yaml", "istio-operator.yaml", "namespace.yaml", "policies.yaml", "merbridge.yaml",
    "flooder.yaml", "workload.yaml",
)  # fmt: skip
RESTART_NAMESPACES = ("meshlab",)  # merbridge_restart_namespaces
WORKLOAD_NAMESPACE = "meshlab"  # workload_namespace
SERVER_DEPLOYMENTS = ("server", "httpbin")  # the pods workload_server_node_selector places


def _experiment(spec: Path, resume: Path | None) -> tuple[Experiment, str]:
    if resume:
        run = RunDir(resume)
        return run.load_manifest().experiment, str(run.manifest_path)
    return spec_mod.load(spec), str(spec)


def check_images(exp: Experiment, source: str, images: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """Digest per image: resolved on the controller, or pinned; a mismatch or none is refused
    when the experiment needs the image (Merbridge: an ebpf arm)."""
    out, errors = {}, []
    ebpf_arms = [name for name, arm in exp.arms.items() if arm.dataplane == "ebpf"]
    for key, image in images.items():
        ref = f"{image.get('image')}:{image.get('tag')}"
        pinned, resolved = image.get("pinned") or "", image.get("resolved") or ""
        if pinned and not SHA256.match(pinned):
            errors.append(f"meshlab_images.{key}.digest: {pinned!r} is not sha256:<64 hex>")
            continue
        if pinned and resolved and pinned != resolved:
            errors.append(
                f"meshlab_images.{key}.digest: pinned {pinned} but {ref} resolves to {resolved} "
                "now (the tag moved); check the new image and re-pin, or clear the pin"
            )
            continue
        digest = resolved or pinned
        needed = key == "merbridge" and ebpf_arms
        if needed and not digest:
            why = image.get("error") or "no answer"
            errors.append(
                f"{source}: arms.{ebpf_arms[0]}.dataplane: ebpf needs {ref} by digest, which the "
                f"controller could not resolve ({why}) and meshlab_images.{key}.digest does not pin"
            )
            continue
        out[key] = {"image": image.get("image"), "tag": image.get("tag"), "digest": digest}
    return out, errors


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def check_kernels(exp: Experiment, hosts: Sequence[Mapping[str, Any]]) -> list[str]:
    """What Merbridge's programs need on every Kubernetes node (only with an ebpf arm)."""
    if not any(arm.dataplane == "ebpf" for arm in exp.arms.values()):
        return []
    want = upstream.value("merbridge", "min_kernel")
    errors = []
    for host in hosts:
        if "k8s_cluster" not in host.get("groups", ()) or "kernel" not in host:
            continue
        if _version_tuple(str(host["kernel"])) < _version_tuple(want):
            errors.append(
                f"node {host['name']}: kernel {host['kernel']} < {want}, the least Merbridge "
                f"{upstream.fact('merbridge', 'min_kernel').tag} runs on (its README.md)"
            )
        if host.get("cgroup2") is False:
            errors.append(
                f"node {host['name']}: no cgroup v2 at /sys/fs/cgroup; Merbridge attaches its "
                "programs to the cgroup2 root (bpf/Makefile refuses to load without it)"
            )
    return errors


def load_docs(directory: Path, names: Sequence[str] = MANIFESTS) -> list[dict[str, Any]]:
    found = []
    for name in names:
        matches = sorted(directory.glob(f"*{name}"))
        if not matches:
            raise MeshlabError(f"{directory}: no rendered {name}")
        for doc in yaml.safe_load_all(matches[0].read_text()):
            if doc:
                found.append(doc)
    return found


def model(
    docs: Sequence[Mapping[str, Any]],
    hosts: Sequence[Mapping[str, Any]],
    kubelet: Mapping[str, Any],
    kubelet_minor: int,
    flood_pods: int | None = None,
) -> tuple[dict[str, schedule.Budget], list[str], list[schedule.PodTemplate]]:
    """Budgets and problems for the rendered manifests on these nodes. `flood_pods` replaces the
    flooder Deployment's replicas (the experiment's largest flood; 0 = no flood)."""
    docs = [dict(d) for d in docs]
    for doc in docs:
        if (
            doc.get("kind") == "Deployment"
            and doc["metadata"]["name"] == "flooder"
            and flood_pods is not None
        ):
            doc["spec"] = {**doc["spec"], "replicas": flood_pods}
    injection = schedule.Injection.from_manifests(docs, kubelet_minor)
    pods = [p for p in schedule.pod_templates(docs, injection) if p.replicas > 0]
    iop = next((d for d in docs if d.get("kind") == "IstioOperator"), {})
    istiod_selector = (
        ((iop.get("spec") or {}).get("components") or {}).get("pilot", {}).get("k8s", {})
    ).get("nodeSelector", {})
    pods += schedule.cluster_addons(injection, istiod_selector)
    nodes = schedule.cluster_nodes(hosts, kubelet)
    table, problems = schedule.budgets(nodes, pods, RESTART_NAMESPACES)
    return table, problems + schedule.refusals(table), pods


def same_node(docs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The manifests as the workload role renders them for `placement: same-node`
    (workload_placement): the server Deployments take the k6 runner's nodeSelector."""
    out = [copy.deepcopy(dict(d)) for d in docs]
    deployments = {
        d["metadata"]["name"]: d
        for d in out
        if d.get("kind") == "Deployment" and d["metadata"].get("namespace") == WORKLOAD_NAMESPACE
    }
    k6 = deployments.get("k6")
    if k6 is None:
        return out
    selector = k6["spec"]["template"]["spec"].get("nodeSelector", {})
    for name in SERVER_DEPLOYMENTS:
        if name in deployments:
            deployments[name]["spec"]["template"]["spec"]["nodeSelector"] = dict(selector)
    return out


def _largest_flood(exp: Experiment) -> int:
    return max(f.pods for f in exp.flood_sizes)


def run(
    spec: Path,
    resume: Path | None = None,
    images: Mapping[str, Any] | None = None,
    hosts: list[dict[str, Any]] | None = None,
    kubelet: Mapping[str, Any] | None = None,
    manifests: Path | None = None,
    kubelet_minor: int = 35,
) -> dict[str, Any]:
    """The checks; raises RefusedError (one line per problem) or returns what was checked."""
    exp, source = _experiment(spec, resume)
    errors: list[str] = []
    try:
        check_fits(exp, source)
    except MeshlabError as err:
        errors.append(str(err))
    resolved, image_errors = check_images(exp, source, images or {})
    errors += image_errors
    result: dict[str, Any] = {"ok": True, "experiment": exp.id, "images": resolved}
    if hosts:
        errors += check_kernels(exp, hosts)
        if manifests:
            docs = load_docs(manifests)
            if exp.placement == ["same-node"]:
                # What the install renders for this run (site.yml: workload_placement).
                docs = same_node(docs)
            table, problems, pods = model(
                docs, hosts, kubelet or {}, kubelet_minor, _largest_flood(exp)
            )
            if exp.placement == ["same-node"]:
                problems = [
                    f"placement: same-node puts k6 and the server on one node: {p}"
                    for p in problems
                ]
            errors += problems
            if any(arm.dataplane == "ebpf" for arm in exp.arms.values()):
                tag = upstream.fact("merbridge", "sidecar_detection").tag
                errors += [
                    f"{line}: Merbridge {tag} skips it (it wants istio-proxy in spec.containers);"
                    ' keep sidecar.istio.io/nativeSidecar "false" on measured pods'
                    for line in schedule.merbridge_skips(pods, RESTART_NAMESPACES)
                ]
            result["nodes"] = {name: b.as_dict() for name, b in table.items()}
    if errors:
        raise RefusedError(errors)
    return result


def _true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def summary(report: Mapping[str, Any] | None) -> list[str]:
    """What a preflight run checked and what it could not, one line each: `meshlab preflight`
    never prints a bare "ok" (playbooks/preflight.yml records `meshlab_preflight_report`)."""
    if not report:
        return ["nothing checked: the preflight playbook recorded no report (see its output)"]
    experiment = report.get("experiment", "?")
    nodes = list(report.get("nodes") or [])
    vms = nodes + list(report.get("monitoring") or [])
    if not nodes:
        if not _true(report.get("experiment_checked")):
            return ["nothing checked: no cloud inventory, and the experiment was not checked"]
        return [
            "checked the experiment only; no nodes to check (the inventory has no k8s_cluster "
            "hosts: `pulumi up` makes them, then `meshlab preflight` reads the stack's inventory)",
            f"checked: {experiment} against what the cloud testbed runs (design, arms, "
            "connection modes, placement)",
            "not checked: image digests, the VMs (reachability, cloud-init, CPUs, memory, kernel, "
            "cgroup v2) and every pod's budget on its node",
        ]
    lines = [f"checked: {experiment} against what the cloud testbed runs"]
    images = report.get("images") or {}
    lines += [
        f"checked: {key} image {img.get('image')}:{img.get('tag')} is {img.get('digest')}"
        for key, img in sorted(images.items())
    ] or ["not needed: no image digest (the experiment has no ebpf arm)"]
    lines.append(
        f"checked: {len(vms)} VMs answer over SSH with cloud-init done ({', '.join(vms)}), "
        "their vCPUs, memory, kernel and cgroup v2"
    )
    if _true(report.get("budgets_checked")):
        lines.append(
            f"checked: every pod's CPU, memory and exclusive CPUs on the {len(nodes)} Kubernetes "
            "nodes, steady and during an arm switch, with the largest flood"
        )
    lines.append(
        "not checked here: that Merbridge's programs attach on these kernels and every measured "
        "cgroup is in its mesh (checked on every node after each arm switch, before any trial)"
    )
    return lines
