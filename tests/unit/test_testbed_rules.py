"""Rule rendering (no root): Istio capture per arm and kube-proxy's rule-count formula."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlab.core.flood import Flood, parse_flood
from meshlab.errors import MeshlabError
from meshlab.testbeds.local import rules
from meshlab.testbeds.local.iptables import _services, parse


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50x500", Flood(50, 500)),
        ("off", Flood(0, 0)),
        (" 1x1 ", Flood(1, 1)),
        ("OFF", Flood(0, 0)),
    ],
)
def test_parse_flood(text, expected):
    assert parse_flood(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("50x", "expected PODSxSERVICES such as 50x500, or off"),
        ("x500", "expected PODSxSERVICES"),
        ("0x10", "needs at least 1 pod and 1 service"),
        ("10x0", "needs at least 1 pod and 1 service"),
        ("99999x1", "too large"),
        ("-1x5", "expected PODSxSERVICES"),
    ],
)
def test_bad_flood_names_the_field_and_the_form(text, message):
    with pytest.raises(MeshlabError, match=message) as err:
        parse_flood(text, field="flood_sizes[0]")
    assert str(err.value).startswith("flood_sizes[0]: ")


def test_flood_addresses_stay_in_the_benchmark_range_and_apart_from_pods():
    pods, vips = rules.TOPOLOGY.flood_pod_ips(300), rules.TOPOLOGY.flood_vips(600)
    assert len(set(pods)) == 300 and len(set(vips)) == 600
    assert all(ip.startswith("198.18.") and int(ip.split(".")[2]) >= 128 for ip in pods)
    assert all(ip.startswith("198.19.") and ip.split(".")[2] != "0" for ip in vips)


@pytest.mark.parametrize(
    ("pods", "services"), [(1, 1), (2, 1), (10, 1), (1, 10), (2, 10), (10, 10)]
)
def test_kube_proxy_nat_matches_upstream_rule_counts(pods, services):
    """kube-proxy's own TestNumberIptablesRules: nat rules = 5 + S*(2 + 3E) (+3 jump rules)."""
    table = parse(rules.kube_proxy_nat(rules.flood_services(Flood(pods, services))))
    assert table.rule_count == 3 + 5 + services * (2 + 3 * pods)
    assert len(table.chains) == 4 + 4 + services * (1 + pods)


def test_thesis_flood_is_about_101k_iptables_save_lines():
    services = [rules.Service("meshlab", "server", "198.19.0.1", 80, 80, ("198.18.1.20",))]
    text = rules.kube_proxy_nat(services + rules.flood_services(Flood(50, 500)))
    lines = text.count("\n") + rules.kube_proxy_filter().count("\n")
    assert 100_000 <= lines <= 104_000


def test_large_clusters_drop_endpoint_comments_like_kube_proxy():
    small = rules.kube_proxy_nat(rules.flood_services(Flood(10, 10)))
    large = rules.kube_proxy_nat(rules.flood_services(Flood(50, 500)))
    assert "-> 198.18.128.1:8080" in small
    assert "-> 198.18.128.1:8080" not in large
    assert '"flood/svc-00000:http cluster IP"' in large  # KUBE-SERVICES keeps its comments


def test_statistic_probabilities_split_evenly():
    table = parse(rules.kube_proxy_nat(rules.flood_services(Flood(4, 1))))
    svc_chain = next(c for c in table.chains if c.startswith("KUBE-SVC-"))
    probs = [
        r.split("--probability ")[1].split()[0] for r in table.rules[svc_chain] if "statistic" in r
    ]
    assert probs == ["0.250000", "0.333333", "0.500000"]  # the last endpoint is a plain jump
    assert "statistic" not in table.rules[svc_chain][-1]


def test_iptables_arm_captures_both_directions():
    table = parse(rules.istio_capture("iptables"))
    assert table.rules["OUTPUT"] == ("-A OUTPUT -j ISTIO_OUTPUT",)
    assert table.rules["PREROUTING"] == ("-A PREROUTING -p tcp -j ISTIO_INBOUND",)
    assert table.rules["ISTIO_REDIRECT"][-1].endswith("REDIRECT --to-ports 15001")
    assert table.rules["ISTIO_IN_REDIRECT"][-1].endswith("REDIRECT --to-ports 15006")
    output = table.rules["ISTIO_OUTPUT"]
    assert output[0] == "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN"
    assert "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in output
    assert output[-1] == "-A ISTIO_OUTPUT -j ISTIO_REDIRECT"
    inbound = table.rules["ISTIO_INBOUND"]
    assert [r.split("--dport ")[1].split()[0] for r in inbound[:-1]] == [
        "15008",
        "15090",
        "15021",
        "15020",
    ]


@pytest.mark.parametrize("arm", ["ebpf", "ebpf-connect"])
def test_ebpf_arms_keep_only_the_inbound_capture(arm):
    table = parse(rules.istio_capture(arm))
    assert "OUTPUT" not in table.rules  # outbound is redirected by the cgroup programs
    assert table.rules["PREROUTING"] == ("-A PREROUTING -p tcp -j ISTIO_INBOUND",)


def test_canonical_parse_ignores_chain_order_counters_and_probability_rounding():
    rule = "-A A -m statistic --mode random --probability {} -j B"
    a = f"*nat\n:B - [0:0]\n:A - [3:4]\n{rule.format('0.0200000000')}\nCOMMIT\n"
    b = f"*nat\n:A - [0:0]\n:B - [0:0]\n{rule.format('0.02000000002')}\nCOMMIT\n"
    assert parse(a) == parse(b)
    c = a.replace("-j B", "-j A")
    assert parse(a) != parse(c)


def test_services_spec_from_the_role():
    (svc,) = _services("server=198.19.0.1:80>198.18.1.20:80")
    assert (svc.name, svc.vip, svc.port, svc.endpoints, svc.target_port) == (
        "server",
        "198.19.0.1",
        80,
        ("198.18.1.20",),
        80,
    )


def test_ebpf_raw_table_untracks_only_legs_between_meshed_pods():
    from meshlab.ebpf.capture import raw_table

    assert parse(raw_table("iptables", ["198.18.1.10"])).rule_count == 0
    table = parse(raw_table("ebpf", ["198.18.1.10", "198.18.1.20"]))
    sport_out = [r for r in table.rules["OUTPUT"] if "--sport 15006" in r]
    # Replies from :15006 to anyone else (a REDIRECTed client outside the bypass) stay tracked.
    assert sport_out == [
        "-A OUTPUT -d 198.18.1.10/32 -p tcp -m tcp --sport 15006 -j NOTRACK",
        "-A OUTPUT -d 198.18.1.20/32 -p tcp -m tcp --sport 15006 -j NOTRACK",
    ]
    assert all(" -s 198.18.1." in r for r in table.rules["PREROUTING"])


def test_the_topology_is_defined_once() -> None:
    """Issue 20: the rules, the playbooks and the eBPF programs read one topology. The
    playbooks' vars/topology.yml is the package's file, and the C programs' three sidecar
    numbers (compile-time constants) equal it."""
    import re

    from meshlab.testbeds.local.topology import FILE, topology

    repo = Path(__file__).resolve().parents[2]
    assert (repo / "playbooks/vars/topology.yml").resolve() == FILE.resolve()
    header = (repo / "bpf/headers/meshlab.h").read_text()
    found = {k: int(v) for k, v in re.findall(r"#define ML_(\w+) (\d+)", header)}
    t = topology()
    assert (found["SIDECAR_UID"], found["OUTBOUND_PORT"], found["INBOUND_PORT"]) == (
        t.envoy_uid, t.outbound_port, t.inbound_port,
    )  # fmt: skip
    assert t.envoy_uid == rules.ENVOY_UID and t.cluster_cidr == rules.CLUSTER_CIDR
    flood = rules.flood_services(parse_flood("3x2"))
    assert [s.vip for s in flood] == ["198.19.1.1", "198.19.1.2"]
    assert flood[0].endpoints == ("198.18.128.1", "198.18.128.2", "198.18.128.3")
