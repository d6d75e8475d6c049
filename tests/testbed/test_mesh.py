"""The mesh behaves like Istio's in every dataplane arm: mTLS between sidecars, RBAC, the
route timeout, STRICT mTLS against plaintext; and the iptables arm captures with iptables."""

from __future__ import annotations

import ipaddress
import json

import pytest

pytestmark = [pytest.mark.root, pytest.mark.testbed]

NEW_CONNECTION = ("-H", "x-meshlab-connection: new")


def test_get_goes_through_both_sidecars_over_mtls(arm):
    tb = arm
    url = tb.status["server_url"]
    before_srv, before_cli = tb.envoy_stats("server"), tb.envoy_stats("client")
    code, _, _ = tb.curl("client", url, *NEW_CONNECTION)
    after_srv, after_cli = tb.envoy_stats("server"), tb.envoy_stats("client")
    assert code == "200"
    # The server sidecar terminated a fresh TLS handshake and RBAC allowed the request ...
    assert (
        after_srv["listener.0.0.0.0_15006.ssl.handshake"]
        == before_srv.get("listener.0.0.0.0_15006.ssl.handshake", 0) + 1
    )
    assert after_srv["http.inbound_0.0.0.0_80.rbac.allowed"] == (
        before_srv.get("http.inbound_0.0.0.0_80.rbac.allowed", 0) + 1
    )
    # ... and the client sidecar originated it (upstream TLS to the server's identity).
    key = "cluster.outbound|80||server;new.ssl.handshake"
    assert after_cli[key] == before_cli.get(key, 0) + 1


def test_post_is_denied_by_rbac(arm):
    tb = arm
    before = tb.envoy_stats("server").get("http.inbound_0.0.0.0_80.rbac.denied", 0)
    code, _, _ = tb.curl("client", tb.status["server_url"], "-X", "POST", "-d", "x=1")
    assert code == "403"
    assert tb.envoy_stats("server")["http.inbound_0.0.0.0_80.rbac.denied"] == before + 1


def test_other_paths_are_denied(arm):
    url = arm.status["server_url"].replace("/get", "/headers")
    assert arm.curl("client", url)[0] == "403"


def test_route_timeout_is_two_seconds(arm):
    url = arm.status["server_url"].replace("/get", "/delay/3")
    code, seconds, _ = arm.curl("client", url)
    assert code == "504"
    assert 1.9 <= seconds <= 2.8


def test_plaintext_from_outside_the_mesh_fails(arm):
    server_ip = arm.status["pods"]["server"]["ip"]
    code, _, rc = arm.curl("node", f"http://{server_ip}/get")
    assert code == "000" and rc != 0  # STRICT mTLS: the inbound sidecar closes plaintext


def test_only_the_client_identity_is_authorized(arm):
    """A valid mesh certificate of another identity (the server's) is authenticated but denied."""
    tb = arm
    pki = "/run/meshlab/pki"
    server_ip = tb.status["pods"]["server"]["ip"]
    common = ("-k", "--cacert", f"{pki}/ca.crt")

    def as_identity(sa: str) -> str:
        cert = ("--cert", f"{pki}/{sa}.crt", "--key", f"{pki}/{sa}.key")
        return tb.curl("node", f"https://{server_ip}:80/get", *common, *cert)[0]

    assert as_identity("client") == "200"
    assert as_identity("server") == "403"
    # No client certificate at all: the TLS handshake itself is refused.
    assert tb.curl("node", f"https://{server_ip}:80/get", *common)[0] == "000"


def test_istio_chains_in_every_pod(iptables_arm):
    for pod in iptables_arm.status["pods"].values():
        rules = iptables_arm.nat_rules(pod["netns"])
        for chain in ("ISTIO_INBOUND", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT", "ISTIO_REDIRECT"):
            assert f"-N {chain}" in rules
        assert "-A OUTPUT -j ISTIO_OUTPUT" in rules
        assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in rules


def test_app_traffic_is_captured_by_the_outbound_redirect(iptables_arm):
    tb = iptables_arm
    netns = tb.status["pods"]["client"]["netns"]
    before = tb.chain_packets(netns, "ISTIO_REDIRECT")
    for _ in range(3):
        assert tb.curl("client", tb.status["server_url"])[0] == "200"
    assert tb.chain_packets(netns, "ISTIO_REDIRECT") == before + 3  # one SYN per connection


def test_sidecars_run_as_1337_in_their_cgroups(iptables_arm):
    tb = iptables_arm
    for name, pod in tb.status["pods"].items():
        procs = tb.host.file(f"{pod['cgroup']}/sidecar/cgroup.procs").content_string.split()
        assert procs, f"no process in {name}'s sidecar cgroup"
        status = tb.host.file(f"/proc/{procs[0]}/status").content_string
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["1337"] * 4
        assert tb.host.file(f"/proc/{procs[0]}/comm").content_string.strip() == "envoy"


def test_addresses_and_routes_stay_inside_the_benchmark_range(iptables_arm):
    tb = iptables_arm
    bench = ipaddress.ip_network("198.18.0.0/15")
    namespaces = [p["netns"] for p in tb.status["pods"].values()] + [tb.status["node"]["netns"]]
    for ns in namespaces:
        routes = tb.host.check_output(f"ip -n {ns} -4 route show")
        assert "default" not in routes, f"{ns} has a default route: {routes}"
        for line in tb.host.check_output(f"ip -n {ns} -4 -o addr show").splitlines():
            addr = ipaddress.ip_interface(line.split()[3])
            assert addr.ip.is_loopback or addr.ip in bench, f"{ns}: {addr}"


def test_host_root_namespace_is_untouched(iptables_arm):
    host = iptables_arm.host
    saved = host.run("iptables-save").stdout
    assert "KUBE-" not in saved and "ISTIO_" not in saved
    links = host.check_output("ip -o link show")
    assert "veth-" not in links
    assert "198.18." not in host.check_output("ip -4 addr show")
    assert "198.1" not in host.check_output("ip -4 route show")


def test_monitoring_scrapes_node_and_both_envoys(arm, wait_until):
    tb = arm
    gw = tb.status["node"]["gateway"]
    seen: dict = {}

    def all_up() -> bool:
        proc = tb.exec("node", "curl", "-sf", f"http://{gw}:9090/api/v1/targets")
        if proc.returncode != 0:
            return False
        targets = json.loads(proc.stdout)["data"]["activeTargets"]
        seen.clear()
        seen.update(
            {(t["labels"]["job"], t["labels"].get("pod", "")): t["health"] for t in targets}
        )
        return seen == {("node", ""): "up", ("envoy", "client"): "up", ("envoy", "server"): "up"}

    assert wait_until(all_up, timeout=30), seen
