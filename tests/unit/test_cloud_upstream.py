"""The rendered roles against facts read from the pinned upstream versions' own source.

Every fact lives in meshlab/testbeds/cloud/facts/<project>-<version>.yml with the repository, tag
(and commit) and the path it was read from; meshlab.testbeds.cloud.upstream refuses a fact
without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cloud_render import VERSIONS, docs

from meshlab.testbeds.cloud import upstream

REPO = Path(__file__).resolve().parents[2]
FIXTURES = sorted(upstream.FACTS_DIR.glob("*.yml"))
VERSION_OF = {
    "merbridge": VERSIONS["meshlab_versions"]["merbridge"],
    "istio": VERSIONS["meshlab_versions"]["istio"],
    "calico": "v" + VERSIONS["meshlab_versions"]["calico"],
    "kubernetes": "v" + VERSIONS["meshlab_versions"]["kubernetes"],
    "containerd": "v" + VERSIONS["meshlab_versions"]["containerd"],
}
# Not pinned by meshlab but shipped by the VMs' OS, Debian 12 (bookworm, every cluster role's
# meta/main.yml platform): systemd 252, bpftool 7.1.0 (from Linux 6.1), iptables 1.8.9-2. proc(5)
# was read at man-pages-5.13 (the mirror's newest tag; Debian 12 ships 6.03, same /proc fields).
DEBIAN_12 = {
    "systemd": "v252.31",
    "bpftool": "v7.1.0",
    "iptables": "1.8.9-2",
    "manpages": "man-pages-5.13",
}


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_every_fact_names_repository_tag_and_path(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert doc["repository"].count("/") == 1 and doc["tag"] and doc["read"]
    for name, entry in doc["facts"].items():
        assert entry.get("path") and "value" in entry, f"{path.name}: {name}"


def test_the_facts_are_about_the_pinned_versions() -> None:
    projects = {p.name.split("-")[0]: p for p in FIXTURES}
    assert set(projects) == set(VERSION_OF) | set(DEBIAN_12)
    for project, path in projects.items():
        want = {**VERSION_OF, **DEBIAN_12}[project]
        assert str(yaml.safe_load(path.read_text())["tag"]) == want, project


def test_the_os_facts_are_about_the_os_the_roles_target() -> None:
    roles = [p.parent.parent for p in (REPO / "roles").glob("*/meta/main.yml")]
    cloud = [r for r in roles if not r.name.startswith("local_")]
    for role in cloud:
        meta = yaml.safe_load((role / "meta/main.yml").read_text())["galaxy_info"]
        assert meta["platforms"] == [{"name": "Debian", "versions": ["bookworm"]}], role.name


def daemonset(rendered: Path) -> dict[str, Any]:
    (ds,) = [d for d in docs(rendered / "merbridge__merbridge.yaml") if d["kind"] == "DaemonSet"]
    return ds["spec"]["template"]["spec"]


def flag_name(arg: str) -> str:
    """'--cni-mode=false' -> 'cni-mode', '-m' -> 'mode' (cobra shorthands of the release)."""
    name = arg.lstrip("-").split("=", 1)[0]
    return name if arg.startswith("--") else upstream.value("merbridge", "cli_shorthands")[name]


def test_merbridge_gets_only_flags_its_release_defines(rendered: Path) -> None:
    # Issue 15, defect 3: --hardware-checksum is not a flag of 0.8.1 and cobra exits 1 on it.
    (container,) = daemonset(rendered)["containers"]
    args = container["args"]
    assert args[0] == upstream.value("merbridge", "binary")
    flags = [flag_name(a) for a in args[1:] if a.startswith("-")]
    known = set(upstream.value("merbridge", "cli_flags"))
    assert [f for f in flags if f not in known] == []
    assert [f for f in flags if f in upstream.value("merbridge", "deprecated_flags")] == []


def test_merbridge_runs_as_its_release_ships_it(rendered: Path) -> None:
    spec = daemonset(rendered)
    (container,) = spec["containers"]
    assert container["args"] == upstream.value("merbridge", "upstream_daemonset_args")
    assert container["resources"] == upstream.value("merbridge", "upstream_resources")
    assert bool(spec.get("initContainers")) == upstream.value(
        "merbridge", "upstream_has_init_container"
    )


def test_istio_operator_sets_no_deprecated_value(rendered: Path) -> None:
    # values.global.proxy_init.resources is deprecated in 1.29 (and has no effect).
    (iop,) = docs(rendered / "istio__istio-operator.yaml")
    for dotted in upstream.value("istio", "deprecated_values"):
        node: Any = iop["spec"]["values"]
        for key in dotted.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        assert node is None, dotted


def native_sidecar(env: dict[str, Any], annotations: dict[str, str], kubelet_minor: int) -> bool:
    """Istio 1.29's decision (pkg/kube/inject/inject.go + webhook.go), from the facts."""
    note = upstream.value("istio", "native_sidecar_annotation")
    if annotations.get(note) in ("true", "false"):
        return annotations[note] == "true"
    mode = str(
        env.get("ENABLE_NATIVE_SIDECARS", upstream.value("istio", "native_sidecars_default"))
    )
    if mode == "auto":
        return kubelet_minor >= upstream.value("istio", "native_sidecars_auto_min_kubelet_minor")
    return mode == "true"


def test_no_measured_pod_gets_a_native_sidecar(rendered: Path) -> None:
    # Issue 15, defect 4: Merbridge 0.8.1 looks for istio-proxy in spec.containers only.
    assert upstream.value("merbridge", "sidecar_detection")["field"] == "containers"
    (iop,) = docs(rendered / "istio__istio-operator.yaml")
    env = iop["spec"]["values"].get("pilot", {}).get("env", {})
    minor = int(VERSIONS["meshlab_versions"]["kubernetes"].split(".")[1])
    assert native_sidecar({}, {}, minor), "the facts say the default would be native sidecars"
    for d in docs(rendered / "workload__workload-httpbin.yaml"):
        if d["kind"] == "Deployment":
            annotations = d["spec"]["template"]["metadata"].get("annotations", {})
            assert not native_sidecar(env, annotations, minor), d["metadata"]["name"]
    # Both knobs are set, so neither a pod without the annotation nor a changed flag flips it.
    assert env.get("ENABLE_NATIVE_SIDECARS") == "false"


def test_merbridge_and_istio_agree_on_ports_uid_and_passthrough_address() -> None:
    # The compatibility argument of docs/cluster.md, fact by fact: Merbridge 0.8.1's compiled-in
    # Istio constants (bpf/headers/mesh.h) are what Istio 1.29.2 uses.
    for name in ("outbound_port", "inbound_port", "inbound_passthrough_source"):
        assert upstream.value("merbridge", name) == upstream.value("istio", name), name
    assert upstream.value("merbridge", "sidecar_uid") == upstream.value("istio", "proxy_uid")
    assert upstream.value("merbridge", "sidecar_detection")["container"] == upstream.value(
        "istio", "proxy_container"
    )


def visible_services(sidecars: list[dict[str, Any]], namespace: str,
                     services: list[dict[str, Any]]) -> list[str]:  # fmt: skip
    """Services a sidecar in `namespace` gets config for (Istio Sidecar egress: 'ns/host', '.'
    the own namespace, '*' any; no Sidecar = every Service in the mesh)."""
    own = [s for s in sidecars if s["metadata"]["namespace"] == namespace]
    if not own:
        return [f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in services]
    hosts = [h for e in own[0]["spec"]["egress"] for h in e["hosts"]]
    seen = []
    for svc in services:
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        for host in hosts:
            want_ns, _, want_host = host.partition("/")
            ns_ok = want_ns in ("*", ns) or (want_ns == "." and ns == namespace)
            if ns_ok and want_host in ("*", name, f"{name}.{ns}.svc.cluster.local"):
                seen.append(f"{ns}/{name}")
                break
    return seen


def test_the_flood_stays_out_of_the_sidecars_config(rendered: Path) -> None:
    # The local testbed's flood exists only in kube-proxy's node tables; the cloud must not add
    # ~500 Envoy clusters (and 25k endpoints) per sidecar on top of it.
    sidecars = [d for d in docs(rendered / "istio__policies.yaml") if d["kind"] == "Sidecar"]
    services = [
        d
        for name in ("flooder__flooder.yaml", "workload__workload.yaml")
        for d in docs(rendered / name)
        if d["kind"] == "Service"
    ]
    assert sum(s["metadata"]["namespace"] == "meshlab-flood" for s in services) == 500
    seen = visible_services(sidecars, "meshlab", services)
    assert "meshlab/server" in seen
    assert [s for s in seen if s.startswith("meshlab-flood/")] == []
    assert len(visible_services([], "meshlab", services)) > 500  # what it was without a Sidecar


def test_calico_node_requests_are_upstreams(rendered: Path) -> None:
    (ds,) = [d for d in docs(rendered / "calico__calico.yaml") if d["kind"] == "DaemonSet"]
    node = ds["spec"]["template"]["spec"]["containers"][0]
    assert node["resources"]["requests"] == upstream.value("calico", "calico_node_requests")


def test_merbridge_unloads_in_its_prestop_as_its_release_does(rendered: Path) -> None:
    (container,) = daemonset(rendered)["containers"]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == upstream.value(
        "merbridge", "unload"
    )


def test_istio_writes_iptables_rules_the_agent_can_count(rendered: Path) -> None:
    # istio-init's rules land in the nat table (not native nftables), where `iptables-save -c`
    # reads ISTIO_REDIRECT and ISTIO_IN_REDIRECT's counters per trial.
    (iop,) = docs(rendered / "istio__istio-operator.yaml")
    native = iop["spec"]["values"].get("global", {}).get("nativeNftables")
    assert native in (None, False)
    assert upstream.value("istio", "iptables_native_nftables_default") is False
    assert set(upstream.value("istio", "iptables_output_returns")) == {
        "passthrough_source_over_lo",
        "non_proxy_uid_over_lo",
    }
    assert upstream.value("iptables", "save_counters_prefix").startswith("[packets:bytes] -A")
