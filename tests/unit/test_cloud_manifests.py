"""Offline checks of everything the cluster roles render (tests/cloud/render_manifests.yml).

Built-in kinds are validated with kubernetes-validate (strict: unknown fields fail) for the pinned
Kubernetes version; Istio resources against their vendored CRD schemas (tests/cloud/crds), with
the API server's structural pruning emulated; then the facts the experiment depends on.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cloud_render import playbook

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "tests" / "cloud" / "crds"
VERSIONS = yaml.safe_load((REPO / "playbooks/group_vars/all/versions.yml").read_text())
K8S_MINOR = ".".join(VERSIONS["meshlab_versions"]["kubernetes"].split(".")[:2])
BIN = Path(sys.executable).parent
# Kinds that are not API objects: inputs of kubeadm/istioctl, checked field by field below.
NON_API_KINDS = {
    "InitConfiguration",
    "ClusterConfiguration",
    "JoinConfiguration",
    "KubeletConfiguration",
    "KubeProxyConfiguration",
    "IstioOperator",
}


def test_argument_specs_reject_a_bad_input(tmp_path: Path) -> None:
    # The render playbook validates every role's defaults against meta/argument_specs.yml;
    # an input outside its choices must fail there, as it would before a real run.
    proc = playbook(
        "-i", str(REPO / "tests/cloud/render_inventory.yml"),
        str(REPO / "tests/cloud/render_manifests.yml"),
        "-e", f"render_dir={tmp_path}", "-e", "merbridge_state=maybe",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "merbridge_state" in proc.stdout


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_docs(rendered: Path) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(rendered.glob("*.yaml")):
        found += [(path.name, d) for d in docs(path) if "kind" in d]
    return found


def by_kind(rendered: Path, name: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs(rendered / name) if d.get("kind") == kind]


# ---- schema validation ---------------------------------------------------------------------


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in CRD_DIR.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


def pruned_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the API server would drop silently: not declared by a structural schema."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                found += pruned_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += pruned_fields(value, extra, f"{path}.{key}")
            elif props is not None and path == "" and key in ("apiVersion", "kind", "metadata"):
                continue
            elif props is not None:
                found.append(f"{path}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            found += pruned_fields(item, schema["items"], f"{path}[{i}]")
    return found


def crd_errors(doc: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    schema = schemas[(doc["apiVersion"], doc["kind"])]
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]
    errors += [
        f"{field}: unknown field (pruned by the API server)" for field in pruned_fields(doc, schema)
    ]
    return errors


def test_every_builtin_object_is_valid_for_the_pinned_kubernetes(rendered: Path) -> None:
    schemas = crd_schemas()
    checked = 0
    seen: set[str] = set()
    for name, doc in all_docs(rendered):
        if doc["kind"] in NON_API_KINDS or (doc["apiVersion"], doc["kind"]) in schemas:
            continue
        # The flood's 500 services differ only in their (valid) names: validate each shape once.
        shape = json.dumps({**doc, "metadata": {**doc["metadata"], "name": "x"}}, sort_keys=True)
        if shape in seen:
            continue
        seen.add(shape)
        try:
            kubernetes_validate.validate(doc, K8S_MINOR, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            pytest.fail(
                f"{name} {doc['kind']}/{doc['metadata'].get('name')}: {where}: {exc.message}"
            )
        checked += 1
    # Calico, the Istio namespace, Merbridge, flooder, workload, monitoring RBAC: all kinds seen.
    assert checked >= 35
    kinds = {json.loads(s)["kind"] for s in seen}
    assert {
        "DaemonSet",
        "Deployment",
        "Service",
        "ClusterRole",
        "ConfigMap",
        "Namespace",
        "Secret",
    } <= kinds


def test_every_istio_resource_matches_its_vendored_crd(rendered: Path) -> None:
    schemas = crd_schemas()
    istio = [(n, d) for n, d in all_docs(rendered) if (d["apiVersion"], d["kind"]) in schemas]
    assert {d["kind"] for _, d in istio} == {
        "PeerAuthentication",
        "AuthorizationPolicy",
        "VirtualService",
        "Sidecar",
    }
    for name, doc in istio:
        assert crd_errors(doc, schemas) == [], f"{name} {doc['kind']}"


def test_the_crd_check_catches_bad_values_and_typos(rendered: Path) -> None:
    schemas = crd_schemas()
    policy = by_kind(rendered, "istio__policies.yaml", "AuthorizationPolicy")[0]
    route = by_kind(rendered, "istio__policies.yaml", "VirtualService")[0]
    bad_action = json.loads(json.dumps(policy))
    bad_action["spec"]["action"] = "PERMIT"
    assert any("PERMIT" in e for e in crd_errors(bad_action, schemas))
    typo = json.loads(json.dumps(route))
    typo["spec"]["http"][0]["timout"] = typo["spec"]["http"][0].pop("timeout")
    assert any("timout" in e for e in crd_errors(typo, schemas))


def test_the_builtin_check_catches_unknown_fields() -> None:
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_MINOR, strict=True)


# ---- what the experiment relies on ---------------------------------------------------------


def test_mtls_strict_policy_allows_only_k6_get_on_port_80_and_route_timeout(rendered: Path) -> None:
    (peer,) = by_kind(rendered, "istio__policies.yaml", "PeerAuthentication")
    assert peer["metadata"]["namespace"] == "istio-system"  # root namespace = mesh-wide
    assert peer["spec"]["mtls"]["mode"] == "STRICT"
    (policy,) = by_kind(rendered, "istio__policies.yaml", "AuthorizationPolicy")
    assert policy["spec"]["action"] == "ALLOW"
    assert policy["spec"]["selector"]["matchLabels"] == {"app": "server"}
    (rule,) = policy["spec"]["rules"]
    assert rule["from"] == [{"source": {"principals": ["cluster.local/ns/meshlab/sa/k6"]}}]
    assert rule["to"] == [{"operation": {"methods": ["GET"], "paths": ["/get"], "ports": ["80"]}}]
    (route,) = by_kind(rendered, "istio__policies.yaml", "VirtualService")
    assert route["spec"]["http"][0]["timeout"] == "2s"
    (namespace,) = by_kind(rendered, "istio__namespace.yaml", "Namespace")
    assert namespace["metadata"]["labels"]["istio-injection"] == "enabled"


def containers_guaranteed(pod_spec: dict[str, Any]) -> None:
    for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        res = container["resources"]
        assert res["requests"] == res["limits"], container["name"]
        assert set(res["limits"]) >= {"cpu", "memory"}, container["name"]


def test_measured_pods_are_guaranteed_with_integer_cpus_sidecar_included(rendered: Path) -> None:
    iop = docs(rendered / "istio__istio-operator.yaml")[0]
    glob = iop["spec"]["values"]["global"]
    assert glob["proxy"]["resources"]["requests"] == glob["proxy"]["resources"]["limits"]
    # istio-init is injected with the proxy's resources (tests/unit/test_cloud_upstream.py).
    deployments = {
        d["metadata"]["name"]: d
        for d in by_kind(rendered, "workload__workload-httpbin.yaml", "Deployment")
    }
    assert set(deployments) == {"server", "httpbin", "k6"}
    for name, dep in deployments.items():
        template = dep["spec"]["template"]
        containers_guaranteed(template["spec"])
        ann = template["metadata"]["annotations"]
        assert ann["sidecar.istio.io/proxyCPU"] == ann["sidecar.istio.io/proxyCPULimit"], name
        assert ann["sidecar.istio.io/proxyMemory"] == ann["sidecar.istio.io/proxyMemoryLimit"], name
        cpu = template["spec"]["containers"][0]["resources"]["limits"]["cpu"]
        assert cpu.isdigit() and ann["sidecar.istio.io/proxyCPU"].isdigit(), (
            f"{name}: static CPU manager needs integer CPUs"
        )
    assert deployments["k6"]["spec"]["template"]["spec"]["nodeSelector"] == {
        "meshlab.io/role": "loadtest"
    }
    assert deployments["k6"]["spec"]["template"]["spec"]["serviceAccountName"] == "k6"
    assert deployments["server"]["spec"]["template"]["spec"]["nodeSelector"] == {
        "meshlab.io/role": "workload"
    }


def test_nginx_answers_get_with_small_json(rendered: Path) -> None:
    (conf,) = [
        d
        for d in by_kind(rendered, "workload__workload.yaml", "ConfigMap")
        if d["metadata"]["name"] == "nginx-conf"
    ]
    text = conf["data"]["nginx.conf"]
    assert "location = /get" in text and "application/json" in text and "return 200" in text
    assert "access_log off" in text
    services = {
        d["metadata"]["name"] for d in by_kind(rendered, "workload__workload.yaml", "Service")
    }
    assert services == {"server", "server-envoy-stats", "k6-envoy-stats"}


def test_flooder_has_p_pods_and_s_services_each_selecting_every_pod(rendered: Path) -> None:
    (dep,) = by_kind(rendered, "flooder__flooder.yaml", "Deployment")
    services = by_kind(rendered, "flooder__flooder.yaml", "Service")
    assert dep["spec"]["replicas"] == 50
    assert len(services) == 500
    assert len({s["metadata"]["name"] for s in services}) == 500
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    for svc in services:
        assert svc["spec"]["selector"].items() <= pod_labels.items()
    (ns,) = by_kind(rendered, "flooder__flooder.yaml", "Namespace")
    assert ns["metadata"]["labels"]["istio-injection"] == "disabled"


def test_merbridge_is_pinned_by_digest(rendered: Path) -> None:
    (ds,) = by_kind(rendered, "merbridge__merbridge.yaml", "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    for container in spec["containers"] + spec.get("initContainers", []):
        assert "@sha256:" in container["image"], container["name"]
        assert container["imagePullPolicy"] == "IfNotPresent"
    assert {"/host/opt/cni/bin", "/host/etc/cni/net.d", "/host/var/run"} <= {
        m["mountPath"] for m in spec["containers"][0]["volumeMounts"]
    }


def test_calico_pool_matches_kubeadm_pod_subnet_and_uses_iptables(rendered: Path) -> None:
    (ds,) = by_kind(rendered, "calico__calico.yaml", "DaemonSet")
    node = ds["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in node["env"]}
    cluster = next(
        d
        for d in docs(rendered / "kubernetes__kubeadm-init.yaml")
        if d["kind"] == "ClusterConfiguration"
    )
    assert env["CALICO_IPV4POOL_CIDR"] == cluster["networking"]["podSubnet"]
    assert env["FELIX_BPFENABLED"] == "false"
    images = [
        c["image"]
        for c in ds["spec"]["template"]["spec"]["containers"]
        + ds["spec"]["template"]["spec"]["initContainers"]
    ]
    assert all(i.endswith(":v" + VERSIONS["meshlab_versions"]["calico"]) for i in images)


@pytest.mark.parametrize("encapsulation", ["ipip", "vxlan", "none"])
def test_calico_pool_encapsulation_agrees_with_the_security_groups(
    rendered: Path, encapsulation: str
) -> None:
    import infra_mocks  # noqa: F401  (puts the repository root on sys.path for infra.*)

    from infra.config import CALICO_ENCAPSULATIONS
    from infra.network import CALICO_RULES

    assert encapsulation in CALICO_ENCAPSULATIONS
    name = f"calico__calico-{encapsulation}.yaml"
    (ds,) = by_kind(rendered, name, "DaemonSet")
    (config,) = [
        d for d in by_kind(rendered, name, "ConfigMap") if d["metadata"]["name"] == "calico-config"
    ]
    node = ds["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in node["env"]}
    backend = config["data"]["calico_backend"]
    opened = {(protocol, port) for _, protocol, port in CALICO_RULES[encapsulation]}
    # The pool encapsulates exactly what the security group lets through, and BIRD (BGP) runs
    # exactly where TCP 179 is open.
    assert (env["CALICO_IPV4POOL_IPIP"] != "Never") == (("ipip", None) in opened)
    assert (env["CALICO_IPV4POOL_VXLAN"] != "Never") == (("udp", 4789) in opened)
    assert (backend == "bird") == (("tcp", 179) in opened)
    assert backend in ("bird", "vxlan")
    live = node["livenessProbe"]["exec"]["command"]
    ready = node["readinessProbe"]["exec"]["command"]
    assert ("-bird-live" in live) == ("-bird-ready" in ready) == (backend == "bird")


def test_calico_defaults_to_the_stacks_default_encapsulation(rendered: Path) -> None:
    assert (rendered / "calico__calico.yaml").read_text() == (
        rendered / "calico__calico-ipip.yaml"
    ).read_text()


def test_kubeadm_pins_the_version_iptables_proxy_and_static_cpu_manager(rendered: Path) -> None:
    init = {d["kind"]: d for d in docs(rendered / "kubernetes__kubeadm-init.yaml")}
    assert init["ClusterConfiguration"]["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert (
        init["ClusterConfiguration"]["kubernetesVersion"]
        == "v" + VERSIONS["meshlab_versions"]["kubernetes"]
    )
    assert init["KubeProxyConfiguration"]["mode"] == "iptables"
    assert init["KubeletConfiguration"]["cgroupDriver"] == "systemd"
    join = docs(rendered / "kubernetes__kubeadm-join.yaml")[0]
    assert join["kind"] == "JoinConfiguration" and join["patches"]["directory"]
    extra = {a["name"]: a["value"] for a in join["nodeRegistration"]["kubeletExtraArgs"]}
    assert extra["node-labels"] == "meshlab.io/role=loadtest"
    patch = yaml.safe_load((rendered / "kubernetes__kubeletconfiguration+merge.yaml").read_text())
    assert patch == {"cpuManagerPolicy": "static", "reservedSystemCPUs": "0"}


def test_containerd_uses_systemd_cgroups_and_the_pinned_sandbox(rendered: Path) -> None:
    conf = tomllib.loads((rendered / "containerd__config.toml").read_text())
    assert conf["version"] == 3
    runc = conf["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is True
    sandbox = conf["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"]
    assert sandbox.endswith(":" + VERSIONS["meshlab_versions"]["pause"])


def test_prometheus_config_is_accepted_by_promtool(rendered: Path, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make setup` installs Debian's prometheus package"
    # promtool checks that the referenced token and CA files exist.
    (tmp_path / "k8s-token").write_text("token\n")
    (tmp_path / "k8s-ca.crt").write_text("")
    text = (
        (rendered / "monitoring__prometheus.yml")
        .read_text()
        .replace("/etc/prometheus/", f"{tmp_path}/")
    )
    (tmp_path / "prometheus.yml").write_text(text)
    proc = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load(text)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"node", "envoy", "cadvisor"}
    assert len(jobs["node"]["static_configs"]) == 4  # every VM, monitoring included
    paths = [t["labels"]["__metrics_path__"] for t in jobs["envoy"]["static_configs"]]
    assert all(p.endswith(":15090/proxy/stats/prometheus") for p in paths)


def test_grafana_dashboard_shows_latency_cpu_modes_with_steal_and_per_container_cpu() -> None:
    dash = json.loads((REPO / "roles/monitoring/files/meshlab-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    assert "istio_request_duration_milliseconds_bucket" in exprs
    assert 'mode="steal"' in exprs and "node_cpu_seconds_total" in exprs
    assert "container_cpu_usage_seconds_total" in exprs
    assert all(t["datasource"]["uid"] == "prometheus" for p in dash["panels"] for t in p["targets"])


def test_grafana_gets_a_generated_password_kept_private_outside_the_repository(
    rendered: Path,
) -> None:
    secret = rendered / "private" / "grafana-admin-password"
    password = secret.read_text().strip()
    assert len(password) == 24 and password.isalnum()
    assert secret.stat().st_mode & 0o777 == 0o600
    assert secret.parent.stat().st_mode & 0o077 == 0  # made 0700 when created
    override = (rendered / "monitoring__grafana-override.conf").read_text()
    assert f"Environment=GF_SECURITY_ADMIN_PASSWORD={password}\n" in override
    defaults = yaml.safe_load((REPO / "roles/monitoring/defaults/main.yml").read_text())
    assert "ansible.builtin.password" in defaults["monitoring_grafana_admin_password"]
    assert "HOME" in defaults["monitoring_grafana_admin_password_file"]  # not the repository
    tasks = yaml.safe_load((REPO / "roles/monitoring/tasks/main.yml").read_text())
    (provision,) = [t for t in tasks if "grafana-override.conf.j2" in json.dumps(t)]
    assert provision.get("no_log") is True


def test_prometheus_comes_from_upstreams_release_with_its_published_sums(rendered: Path) -> None:
    version = VERSIONS["meshlab_versions"]["prometheus"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "an upstream release, not a Debian revision"
    url = VERSIONS["meshlab_artifacts"]["prometheus"]["url"]
    assert "/prometheus/prometheus/releases/download/v' ~ meshlab_versions.prometheus" in url
    assert "debian" not in url
    checksum = VERSIONS["meshlab_checksums"]["prometheus"][version]
    assert f"/releases/download/v{version}/sha256sums.txt" in checksum
    unit = (rendered / "monitoring__prometheus.service").read_text()
    assert "User=prometheus" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "EnvironmentFile=-/etc/default/prometheus" in unit and "$ARGS" in unit


# ---- containerd's docker.io origin --------------------------------------------------------------


def test_a_mirrored_registry_falls_back_to_its_own_origin(rendered: Path) -> None:
    from meshlab.testbeds.cloud import upstream

    fact = upstream.value("containerd", "docker_io_origin")
    for registry in ("docker.io", "quay.io"):
        doc = tomllib.loads((rendered / f"containerd__hosts__{registry}.toml").read_text())
        want = fact.get(registry, fact["default"].format(host=registry))
        assert doc["server"] == want, registry
        assert doc["host"]["https://mirror.example"]["capabilities"] == ["pull", "resolve"]
