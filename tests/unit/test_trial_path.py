"""Which path each hop took, and the arm-integrity gate (issue 21), on counter snapshots shaped
like the local testbed's (testbeds/local/paths.py); the root tests read real ones."""

from __future__ import annotations

import pytest

from meshlab.trial import path

REQUESTS = 5000


def snap(programs: str = "off", **counters: int) -> dict:
    base = dict.fromkeys((*path.NAT_RULES, *path.EBPF_COUNTERS), 0)
    return {"counters": {**base, **counters}, "programs": {"client": programs, "server": programs}}


def grown(before: dict, **delta: int) -> dict:
    return {**before, "counters": {k: v + delta.get(k, 0) for k, v in before["counters"].items()}}


SIDECARS = {"client": 5200, "server": 5200}


def test_an_iptables_trial_shows_redirects_and_nothing_of_ebpf() -> None:
    start = snap(outbound_redirect=40, inbound_redirect=7)
    end = grown(start, outbound_redirect=250, inbound_redirect=3, inbound_delivery=3)
    ev, reasons = path.judge("iptables", True, start, end, SIDECARS, REQUESTS)
    assert reasons == []
    assert {h: x.carrier for h, x in ev.hops.items()} == {
        "k6->client_sidecar": "iptables-redirect",
        "client_sidecar->server_sidecar": "iptables-redirect",
        "server_sidecar->app": "none",
    }
    assert ev.hops["k6->client_sidecar"].connections == 250
    assert ev.counters["outbound_redirect"] == 250


def test_an_ebpf_trial_same_node_shows_rewrites_and_splices() -> None:
    start = snap("ebpf", out_redirect=900)
    end = grown(start, out_redirect=250, bypass=2, msg_outbound=10400, msg_bypass=10400,
                msg_inbound=10400)  # fmt: skip
    ev, reasons = path.judge("ebpf", True, start, end, SIDECARS, REQUESTS)
    assert reasons == []
    assert [h.carrier for h in ev.hops.values()] == ["ebpf-connect", "ebpf-connect", "sockmap"]
    assert ev.hops["server_sidecar->app"].messages == 10400


def test_across_nodes_the_ebpf_arm_leaves_the_inbound_hop_to_iptables() -> None:
    start = snap("ebpf")
    end = grown(start, out_redirect=250, inbound_redirect=2, cross_node=2, msg_outbound=9000,
                msg_inbound=9000)  # fmt: skip
    ev, reasons = path.judge("ebpf", False, start, end, SIDECARS, REQUESTS)
    assert (
        reasons == [] and ev.hops["client_sidecar->server_sidecar"].carrier == "iptables-redirect"
    )
    # the same counters on one node: the bypass should have joined the two sidecars
    _, reasons = path.judge("ebpf", True, start, end, SIDECARS, REQUESTS)
    assert any("hop client_sidecar->server_sidecar was carried by iptables-redirect" in r
               for r in reasons)  # fmt: skip


def test_ebpf_detached_during_the_trial_is_rejected() -> None:
    start = snap("ebpf")
    end = grown(start, out_redirect=250, bypass=2, msg_inbound=100)
    end = {**end, "programs": {"client": "off", "server": "off"}}
    _, reasons = path.judge("ebpf", True, start, end, SIDECARS, REQUESTS)
    assert (
        "arm integrity: a ebpf trial needs its pods' eBPF programs ebpf at the trial's end; "
        "found client in off, server in off"
    ) in reasons


def test_a_program_left_attached_in_the_iptables_arm_is_rejected() -> None:
    start = snap(outbound_redirect=0)
    start = {**start, "programs": {"client": "ebpf", "server": "off"}}
    end = grown(start, out_redirect=250, inbound_redirect=2)
    _, reasons = path.judge("iptables", True, start, end, SIDECARS, REQUESTS)
    assert any("found client in ebpf" in r for r in reasons)
    assert any(r.startswith("arm integrity: hop k6->client_sidecar was carried by ebpf-connect")
               for r in reasons)  # fmt: skip


def test_both_mechanisms_on_one_hop_is_mixed_and_rejected() -> None:
    start = snap("ebpf")
    end = grown(start, outbound_redirect=10, out_redirect=240, bypass=2, msg_inbound=10)
    ev, reasons = path.judge("ebpf", True, start, end, SIDECARS, REQUESTS)
    assert ev.hops["k6->client_sidecar"].carrier == "mixed" and reasons


def test_the_floor_has_no_sidecar_on_the_path() -> None:
    start = snap()
    ev, reasons = path.judge("no-mesh", True, start, start, {"client": 0, "server": 0}, REQUESTS)
    assert reasons == [] and {h.carrier for h in ev.hops.values()} == {"none"}
    _, reasons = path.judge("no-mesh", True, start, start, SIDECARS, REQUESTS)
    assert reasons == ["arm integrity: a no-mesh trial's sidecars logged 10400 requests"]
    # and a mesh arm whose sidecars saw no traffic went around them
    end = grown(start, outbound_redirect=250, inbound_redirect=2)
    _, reasons = path.judge("iptables", True, start, end, {"client": 0, "server": 5200}, REQUESTS)
    assert any("the client sidecar logged fewer than half" in r for r in reasons)


@pytest.mark.parametrize("dataplane", ["ebpf", "ebpf-connect"])
def test_in_a_duet_the_shared_ebpf_counters_decide_nothing(dataplane: str) -> None:
    start = snap(dataplane)
    ev, reasons = path.judge(
        dataplane, True, start, start, SIDECARS, REQUESTS, shared_counters=True
    )
    assert reasons == []  # the other pair's counters cannot be told apart: unknown, not wrong
    assert ev.hops["k6->client_sidecar"].carrier == "unknown"
    # but this pair's own nat counters still show a REDIRECT it should not have
    end = grown(start, outbound_redirect=250)
    _, reasons = path.judge(dataplane, True, start, end, SIDECARS, REQUESTS, shared_counters=True)
    assert any("carried by iptables-redirect" in r for r in reasons)
