"""kube-proxy-shaped flood in the node namespace: the thesis' rule counts, and `off` cleans up."""

from __future__ import annotations

import pytest

from meshlab.testbeds.local import commands

pytestmark = [pytest.mark.root, pytest.mark.testbed, pytest.mark.slow]


def test_flood_50x500_matches_the_thesis_and_off_removes_it(iptables_arm):
    tb = iptables_arm
    node = tb.status["node"]["netns"]
    base = tb.status["flood"]["rules"]
    commands.set_flood("50x500")
    try:
        doc = tb.status
        # Thesis: 101,806 "iptables entries" for 50 pods x 500 services.
        assert doc["flood"] == {**doc["flood"], "spec": "50x500", "pods": 50, "services": 500}
        assert 100_000 <= doc["flood"]["rules"] <= 104_000
        nat = tb.host.check_output(f"ip netns exec {node} iptables-save -t nat")
        assert nat.count(":KUBE-SVC-") == 500 + 1  # the flood plus the real server service
        assert nat.count(":KUBE-SEP-") == 500 * 50 + 1
        # The real server is still reachable through the mesh with 100k rules on the path.
        assert tb.curl("client", doc["server_url"])[0] == "200"
    finally:
        commands.set_flood("off")
    doc = tb.status
    assert doc["flood"]["spec"] == "off"
    assert doc["flood"]["rules"] == base
    nat = tb.host.check_output(f"ip netns exec {node} iptables-save -t nat")
    assert nat.count(":KUBE-SEP-") == 1


def test_the_real_service_vip_is_dnated_by_the_kube_proxy_rules(iptables_arm):
    """A client outside the mesh (the node) reaches the server through the VIP's DNAT, and is
    then refused by STRICT mTLS — the kube-proxy path is exercised, the mesh still holds."""
    tb = iptables_arm
    node = tb.status["node"]["netns"]
    svc_chain = next(
        line.split()[-1]
        for line in tb.nat_rules(node)
        if line.startswith("-A KUBE-SERVICES") and "198.19.0.1/32" in line
    )
    before = tb.chain_packets(node, svc_chain)
    code, _, rc = tb.curl("node", tb.status["server_url"])
    assert code == "000" and rc != 0
    assert tb.chain_packets(node, svc_chain) == before + 1
