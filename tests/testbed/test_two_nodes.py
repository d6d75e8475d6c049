"""Cross-node placement: the server pod on node 2, a link between the nodes, each node with its
own kube-proxy rules and conntrack. A request crosses both nodes' netfilter hooks; in the eBPF
arm the sidecar-to-sidecar hop takes the plain path (no same-node bypass) while the
app <-> sidecar hops are still redirected and spliced."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshlab.testbeds.local import commands

pytestmark = [pytest.mark.root, pytest.mark.testbed, pytest.mark.slow]

REQUESTS = 5


@pytest.fixture(scope="module")
def cross_node(testbed) -> Iterator:
    """The testbed with its server pod on node 2 (iptables arm, no flood); moved back after.
    The tests run in file order, each from where the last one left it: every `up` that moves
    pods costs half a minute, so the module ends on the move back to one node."""
    commands.up(placement="cross-node")
    yield testbed
    doc = testbed.status
    if doc["placement"] != "same-node" or doc["duet"]:
        commands.up(placement="same-node")
    elif doc["dataplane"] != "iptables":
        commands.set_dataplane("iptables")


def forward_packets(tb, netns: str) -> int:
    """Packets through the node's kube-proxy forwarding chain (every forwarded packet)."""
    out = tb.host.check_output(f"ip netns exec {netns} iptables -t filter -L FORWARD -v -x -n")
    return sum(
        int(cols[0])
        for cols in (line.split() for line in out.splitlines())
        if len(cols) > 2 and cols[0].isdigit() and cols[2] == "KUBE-FORWARD"
    )


def requests_ok(tb, n: int = REQUESTS) -> None:
    url = tb.status["server_url"]
    for _ in range(n):
        assert tb.curl("client", url)[0] == "200"


def test_status_shows_which_node_each_pod_is_on(cross_node):
    doc = cross_node.status
    assert doc["placement"] == "cross-node"
    assert {name: pod["node"] for name, pod in doc["pods"].items()} == {
        "client": "meshlab-node",
        "server": "meshlab-node2",
    }
    assert doc["nodes"]["meshlab-node"]["pods"] == ["client"]
    assert doc["nodes"]["meshlab-node2"]["pods"] == ["server"]


def test_the_nodes_are_wired_like_two_hosts_and_route_nothing_off_the_machine(cross_node):
    host = cross_node.host
    node1 = host.check_output("ip -n meshlab-node -4 route")
    node2 = host.check_output("ip -n meshlab-node2 -4 route")
    assert "198.18.1.20 via 198.18.254.2 dev node2" in node1
    assert "198.18.1.10 via 198.18.254.1 dev node1" in node2
    assert "198.18.1.20 dev veth-server" in node2
    for table in (node1, node2):
        assert "default" not in table
        for line in table.splitlines():
            dest = line.split()[0]
            assert dest.startswith(("198.18.", "198.19.")), line  # 198.18.0.0/15 only
    # The server pod's gateway is its own node's address.
    assert "via 198.18.255.2" in host.check_output("ip -n meshlab-server -4 route")


def test_a_request_crosses_both_nodes_netfilter_hooks(cross_node):
    tb = cross_node
    before = {n: forward_packets(tb, n) for n in ("meshlab-node", "meshlab-node2")}
    requests_ok(tb)
    after = {n: forward_packets(tb, n) for n in ("meshlab-node", "meshlab-node2")}
    for netns in before:
        assert after[netns] > before[netns], netns
    # Each node tracks its own connections: the sidecar-to-sidecar one is in both.
    for netns in before:
        entries = tb.host.check_output(f"ip netns exec {netns} cat /proc/net/nf_conntrack")
        assert "dst=198.18.1.20" in entries, netns


def test_flood_rules_exist_in_both_nodes(cross_node):
    commands.set_flood("50x500")
    try:
        doc = cross_node.status
        for netns, node in doc["nodes"].items():
            assert 100_000 <= node["rules"] <= 104_000, netns
            nat = cross_node.host.check_output(f"ip netns exec {netns} iptables-save -t nat")
            assert nat.count(":KUBE-SEP-") == 500 * 50 + 1, netns
        requests_ok(cross_node, 1)
    finally:
        commands.set_flood("off")
    assert all(n["rules"] < 1000 for n in cross_node.status["nodes"].values())


def test_ebpf_arm_redirects_app_hops_but_never_bypasses_across_nodes(cross_node):
    tb = cross_node
    commands.set_dataplane("ebpf")
    try:
        doc = tb.status
        cgroups = {name: pod["cgroup"] for name, pod in doc["pods"].items()}
        assert doc["ebpf"]["nodes"] == {cgroups["client"]: 1, cgroups["server"]: 2}
        before = doc["ebpf"]["counters"]
        redirected = tb.chain_packets("meshlab-server", "ISTIO_IN_REDIRECT")
        requests_ok(tb)
        after = tb.status["ebpf"]["counters"]
        assert after["bypass"] == before["bypass"]  # the same-node bypass is not used
        assert after["out_redirect"] >= before["out_redirect"] + REQUESTS  # app -> sidecar is
        assert after["cross_node"] > before["cross_node"]  # the sidecar's connect was seen
        # ... and reached the server through its node's capture, as in the iptables arm.
        assert tb.chain_packets("meshlab-server", "ISTIO_IN_REDIRECT") > redirected
    finally:
        commands.set_dataplane("iptables")


def test_duet_keeps_working_across_nodes_then_pair_2_goes(cross_node):
    tb = cross_node
    commands.up(duet=True, placement="cross-node")
    try:
        doc = tb.status
        assert doc["pods"]["server2"]["node"] == "meshlab-node2"
        assert doc["pods"]["client2"]["node"] == "meshlab-node"
        for pair, client in ((1, "client"), (2, "client2")):
            url = f"http://198.19.0.{pair}/get"
            assert tb.curl(client, url)[0] == "200", client
    finally:
        commands.up(placement="cross-node")  # one pair again (local_up.yml tears a duet down)
    # Back to one pair: pair 2 goes, rather than idling outside the recorded state.
    netns = tb.host.check_output("ip netns list").split()
    assert "meshlab-client2" not in netns and "meshlab-server2" not in netns
    assert set(tb.status["pods"]) == {"client", "server"}
    requests_ok(tb, 1)


def test_moving_back_to_one_node_restores_the_bypass(cross_node):
    """The module's last test: its fixture puts the arm back."""
    tb = cross_node
    commands.up(dataplane="ebpf", placement="same-node")
    doc = tb.status
    assert {pod["node"] for pod in doc["pods"].values()} == {"meshlab-node"}
    assert set(doc["ebpf"]["nodes"].values()) == {1}
    # node 2 keeps no trace of the server: no veth, routed back over the link
    assert "veth-server" not in tb.host.check_output("ip -n meshlab-node2 link")
    before = doc["ebpf"]["counters"]["bypass"]
    requests_ok(tb)
    assert tb.status["ebpf"]["counters"]["bypass"] > before
