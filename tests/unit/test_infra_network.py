"""LabNetwork under mocks: network, router, security groups and their rules, floating IP."""

from __future__ import annotations

import pytest
from infra_mocks import (
    EXTERNAL_NET_ID,
    FLOATING_IP,
    NODE_SLUGS,
    SEC_GROUP_RULE,
    SG,
    run_lab,
)


def ingress(run) -> set[tuple]:
    """(group id, protocol, min, max, source) of every rule; source is a CIDR or a group id."""
    rules = run.mocks.of_type(SEC_GROUP_RULE)
    assert all(r.inputs["direction"] == "ingress" for r in rules)
    return {
        (
            r.inputs["securityGroupId"],
            r.inputs["protocol"],
            r.inputs.get("portRangeMin"),
            r.inputs.get("portRangeMax"),
            r.inputs.get("remoteIpPrefix") or r.inputs.get("remoteGroupId"),
        )
        for r in rules
    }


def test_network_subnet_router() -> None:
    run = run_lab({"dnsNameservers": '["9.9.9.9"]'})
    assert run.mocks.named("network-net").inputs["name"] == "meshlab-dev-net"
    subnet = run.mocks.named("network-subnet").inputs
    assert subnet["cidr"] == "10.42.0.0/24"
    assert subnet["ipVersion"] == 4
    assert subnet["networkId"] == "network-net-id"
    assert subnet["dnsNameservers"] == ["9.9.9.9"]
    assert run.mocks.named("network-router").inputs["externalNetworkId"] == EXTERNAL_NET_ID
    router_if = run.mocks.named("network-router-if").inputs
    assert router_if == {"routerId": "network-router-id", "subnetId": "network-subnet-id"}
    (lookup,) = [c for c in run.mocks.calls if c.token.endswith("getNetwork")]
    assert lookup.args == {"name": "public", "external": True}


def test_ingress_rules_default() -> None:
    op = "198.51.100.0/24"
    assert ingress(run_lab()) == {
        (SG["ssh"], "tcp", 22, 22, op),
        (SG["kube-api"], "tcp", 6443, 6443, op),
        (SG["monitoring"], "tcp", 3000, 3000, op),
        (SG["monitoring"], "tcp", 9090, 9090, op),
        (SG["internal"], "tcp", 1, 65535, SG["internal"]),
        (SG["internal"], "udp", 1, 65535, SG["internal"]),
        (SG["internal"], "icmp", None, None, SG["internal"]),
        (SG["internal"], "tcp", 179, 179, SG["internal"]),
        (SG["internal"], "ipip", None, None, SG["internal"]),
    }


def test_no_ingress_is_open_to_the_world_by_default() -> None:
    run = run_lab({"operatorCidrs": '["198.51.100.0/24", "2001:db8::/48"]'})
    for rule in run.mocks.of_type(SEC_GROUP_RULE):
        source = rule.inputs.get("remoteIpPrefix")
        if source is None:
            assert rule.inputs["remoteGroupId"] == SG["internal"], rule.name
            continue
        assert source in ("198.51.100.0/24", "2001:db8::/48"), rule.name
        assert rule.inputs["ethertype"] == ("IPv6" if ":" in source else "IPv4"), rule.name
        assert rule.inputs["protocol"] == "tcp" and rule.inputs["portRangeMin"] in (
            22,
            6443,
            3000,
            9090,
        )


def test_world_is_open_only_when_allowed() -> None:
    run = run_lab({"operatorCidrs": '["0.0.0.0/0"]', "allowWorld": "true"})
    world = [r for r in run.mocks.of_type(SEC_GROUP_RULE) if r.inputs.get("remoteIpPrefix")]
    assert {r.inputs["remoteIpPrefix"] for r in world} == {"0.0.0.0/0"}
    assert len(world) == 4


@pytest.mark.parametrize(
    ("mode", "calico"),
    [
        ("vxlan", {(SG["internal"], "udp", 4789, 4789, SG["internal"])}),
        ("none", {(SG["internal"], "tcp", 179, 179, SG["internal"])}),
    ],
)
def test_calico_rules_follow_encapsulation(mode: str, calico: set) -> None:
    rules = ingress(run_lab({"calicoEncapsulation": mode}))
    base = {
        (SG["internal"], "tcp", 1, 65535, SG["internal"]),
        (SG["internal"], "udp", 1, 65535, SG["internal"]),
        (SG["internal"], "icmp", None, None, SG["internal"]),
    }
    assert {r for r in rules if r[-1] == SG["internal"]} == base | calico


def test_ports_carry_their_roles_security_groups() -> None:
    run = run_lab()
    expected = {
        "control-plane-0": [SG["internal"], SG["ssh"], SG["kube-api"]],
        "worker-0": [SG["internal"], SG["ssh"]],
        "loadtest-0": [SG["internal"], SG["ssh"]],
        "monitoring-0": [SG["internal"], SG["ssh"], SG["monitoring"]],
    }
    for slug, groups in expected.items():
        port = run.mocks.named(f"nodes-{slug}-port").inputs
        assert port["securityGroupIds"] == groups, slug
        assert port["networkId"] == "network-net-id"
        assert port["fixedIps"] == [{"subnetId": "network-subnet-id"}]
        assert "allowedAddressPairs" not in port


def test_unencapsulated_calico_allows_pod_ips_on_cluster_ports_only() -> None:
    run = run_lab({"calicoEncapsulation": "none"})
    for slug in NODE_SLUGS:
        pairs = run.mocks.named(f"nodes-{slug}-port").inputs.get("allowedAddressPairs")
        if slug.startswith("monitoring"):
            assert pairs is None
        else:
            assert pairs == [{"ipAddress": "10.244.0.0/16"}], slug


def test_floating_ip_only_on_the_bastion() -> None:
    run = run_lab()
    (fip,) = run.mocks.of_type(FLOATING_IP)
    assert fip.inputs["pool"] == "public"  # the provider wants the network *name*
    assert fip.inputs["portId"] == "nodes-monitoring-0-port-id"
