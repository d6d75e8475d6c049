"""The cloud's arm checks on recorded node snapshots (issue 22): the in-mesh verification before
the trials, and every trial's path evidence and integrity gate, clean and doctored.

The snapshots are built by cloud_render (Merbridge 0.8.1's C structs packed with struct, in
bpftool 7.1.0's JSON shapes), independently of the decoder under test, which reads the layouts
from meshlab/testbeds/cloud/facts."""

from __future__ import annotations

import copy
from typing import Any

import cloud_render as cr
import pytest

from meshlab.testbeds.cloud import arm_check, arm_ready, merbridge_maps, netfilter, node_snapshot

T0, SECONDS = 1_795_000_000.0, 25.0
WINDOW = (T0, T0 + SECONDS)


def ready(dataplane: str, **doctor: Any) -> list[dict[str, Any]]:
    """The end snapshots of a clean trial, as the arm check after a switch would read them."""
    return [w["end"] for w in cr.windows(dataplane, **doctor).values()]


# ---- decoding: the facts' layouts against independently packed bytes ----------------------------


def test_the_decoder_reads_what_merbridges_structs_hold() -> None:
    from meshlab.testbeds.cloud import upstream

    # bpftool 7.1.0 prints raw bytes for maps without BTF (Merbridge's are made by `map create`)
    assert upstream.value("bpftool", "map_dump_json_entry")["key"] == "hex_byte_strings"
    assert {"bytes_key", "bytes_value", "name", "id"} <= set(
        upstream.value("bpftool", "map_show_json")
    )
    assert upstream.value("merbridge", "process_ip_layout") == {
        "key": "tgid_u32",
        "value": "ipv4_network_order",
    }
    info = merbridge_maps.cgroup_info([cr.cgroup_info_entry(0x1234_5678_9A, 1)])
    assert info[0x1234_5678_9A].is_in_mesh == 1
    assert info[0x1234_5678_9A].key_hex == "9a 78 56 34 12 00 00 00"
    assert merbridge_maps.process_ip([cr.process_ip_entry(4242, "10.244.2.20")]) == {
        4242: "10.244.2.20"
    }
    assert merbridge_maps.local_pod_ips([cr.local_pod_entry("10.244.1.10")]) == {"10.244.1.10"}
    ((pair, origin),) = merbridge_maps.pair_original_dst(
        [cr.pair_entry("127.0.0.1", "127.128.0.7", 33000, 15001, ("10.96.0.20", 80), pid=9)]
    ).items()
    assert pair == merbridge_maps.Pair("127.0.0.1", "127.128.0.7", 33000, 15001)
    assert (origin.ip, origin.port, origin.pid, origin.flags) == ("10.96.0.20", 80, 9, 1)
    assert merbridge_maps.in_rewrite_range("127.143.255.255")
    assert not merbridge_maps.in_rewrite_range("127.0.0.1")


def test_a_dump_whose_sizes_differ_from_the_facts_is_refused_not_misread() -> None:
    entry = cr.cgroup_info_entry(7, 1)
    entry["value"] = entry["value"][:-2]  # a 30-byte value: another Merbridge build's struct
    with pytest.raises(merbridge_maps.DumpError, match="cgroup_info_map entry 0 value: 30 bytes"):
        merbridge_maps.cgroup_info([entry])
    view = node_snapshot.read(
        {
            **cr.snapshot("lt1", T0, merbridge=True, in_mesh=cr.IN_MESH),
            "bpf": {
                **cr.snapshot("lt1", T0, merbridge=True)["bpf"],
                "dumps": {"cgroup_info_map": [{"id": 13, "entries": [entry]}]},
            },
        }
    )
    assert view.cgroup_info is None
    assert any("cgroup_info_map dump unreadable" in p for p in view.problems)


def test_only_merbridges_programs_and_maps_are_recognised() -> None:
    from meshlab.testbeds.cloud import upstream

    assert {"id", "attach_type", "name"} <= set(upstream.value("bpftool", "cgroup_show_json"))
    # bpftool shows the BTF name where the kernel cut it at 15 characters: both must match.
    assert upstream.value("bpftool", "prog_full_name") == "btf_func_name_when_truncated"
    rows = [
        {"id": 1, "attach_type": "cgroup_inet4_connect", "name": "mb_sock_connect"},
        {"id": 2, "attach_type": "cgroup_inet4_connect", "name": "mb_sock_connect4"},  # BTF name
        {"id": 3, "attach_type": "cgroup_device", "name": "sd_devices"},  # systemd's
        {"id": 4, "attach_type": "connect4", "name": "mb_sock_connect"},  # bpftool 5.4 names
    ]
    assert [a.merbridge for a in merbridge_maps.attachments(rows)] == [True, True, False, True]
    maps = merbridge_maps.find_maps(
        [
            {"id": 9, "name": "cgroup_info_map", "bytes_key": 8, "bytes_value": 32},
            {"id": 10, "name": "process_ip", "bytes_key": 8, "bytes_value": 8},  # not ours
        ]
    )
    assert maps == {"cgroup_info_map": [9]}


def test_istio_chain_counters_come_from_the_backend_that_holds_them() -> None:
    text = cr.nat_text(outbound=7, inbound=3, passthrough=2)
    assert netfilter.parse(text) == netfilter.Counters(7, 3, 2, True)
    assert netfilter.best({"legacy": "*nat\nCOMMIT\n", "nft": text}) == (
        "nft",
        netfilter.Counters(7, 3, 2, True),
    )
    assert netfilter.best({"legacy": "*nat\nCOMMIT\n", "nft": ""}) is None


# ---- before the trials: Merbridge ready, every measured cgroup in the mesh ----------------------


def test_a_clean_ebpf_cluster_is_ready_and_needs_no_rearm() -> None:
    snaps = ready("ebpf")
    assert arm_ready.verify(snaps, "ebpf") == []
    assert arm_ready.rearm(snaps) == {}


def test_sidecars_decided_not_in_mesh_are_rearmed_and_refused_until_they_are() -> None:
    from meshlab.testbeds.cloud import upstream

    assert upstream.value("merbridge", "in_mesh_decided_once")["rechecked"] is False  # why
    # What Merbridge 0.8.1 records when it is Ready before the workload restarts: istio-proxy's
    # first connect (pilot-agent, before LDS brings 15001) decides "not in mesh" for life.
    stale = {"k6": 1, "client_sidecar": 0, "server_sidecar": 0}
    snaps = ready("ebpf", lt1_end={"in_mesh": stale}, w1_end={"in_mesh": stale})
    plan = arm_ready.rearm(snaps)
    assert {h: [e["component"] for e in entries] for h, entries in plan.items()} == {
        "lt1": ["client_sidecar"],
        "w1": ["server_sidecar"],
    }
    assert plan["lt1"][0]["key_hex"] == "ea 03 00 00 00 00 00 00"  # cgroup id 1002, little-endian
    refusals = arm_ready.verify(snaps, "ebpf", probe={"ok": False, "codes": [503, 503]})
    assert (
        "node lt1: pod meshlab/k6-5f7c9-abcde container istio-proxy (client_sidecar): "
        "cgroup_info_map[1002] (key hex ea 03 00 00 00 00 00 00) is_in_mesh=0 after the re-arm "
        "and the probe: Merbridge bypasses this cgroup's connects for the rest of the pod's life"
    ) in refusals
    assert any(
        line.startswith("node w1: pod meshlab/server-6d8b7-fghij container istio-proxy")
        for line in refusals
    )
    assert refusals[-1].startswith("the probe through k6's sidecar got [503, 503]")


def test_an_undecided_k6_cgroup_and_an_unlearned_server_envoy_are_refused() -> None:
    snaps = ready("ebpf", lt1_end={"in_mesh": {"client_sidecar": 1}})
    for s in snaps:
        if s["host"] == "w1":
            s["bpf"]["dumps"]["process_ip"][0]["entries"] = []
    refusals = arm_ready.verify(snaps, "ebpf")
    assert any("(k6): cgroup_info_map has no entry for its cgroup (id 1001" in r for r in refusals)
    assert any("process_ip has no process with IP 10.244.2.20" in r for r in refusals)
    assert arm_ready.rearm(snaps) == {}  # nothing to delete: k6 is undecided, not "not in mesh"


def test_merbridge_that_never_attached_refuses_the_ebpf_arm() -> None:
    snaps = ready("ebpf")
    snaps[0]["bpf"]["cgroup_show"] = snaps[0]["bpf"]["cgroup_show"][1:]  # connect4 missing
    (line,) = arm_ready.verify(snaps, "ebpf")
    assert line.startswith(
        "node lt1: Merbridge's mb_sock_connect4 is not attached to the root cgroup as connect4"
    )


def test_programs_left_attached_refuse_the_iptables_arm_naming_node_and_program() -> None:
    snaps = ready("iptables")
    leftover = cr.snapshot("w1", T0, merbridge=True, in_mesh={})
    w1 = next(s for s in snaps if s["host"] == "w1")
    w1["bpf"]["cgroup_show"] = leftover["bpf"]["cgroup_show"][:1]
    refusals = arm_ready.verify(snaps, "iptables")
    assert refusals == [
        "node w1: Merbridge's mb_sock_connect (program id 200) is still attached to the root "
        "cgroup as connect4 in the iptables arm: a Merbridge pod ended without its preStop "
        "`make -k clean`; detach it (`bpftool cgroup detach /sys/fs/cgroup connect4 id 200`) "
        "or reboot the node"
    ]
    assert arm_ready.verify(ready("iptables"), "iptables") == []


# ---- every trial: the path each hop took, and the integrity gate --------------------------------


def test_a_clean_ebpf_trial_passes_with_each_hops_carrier() -> None:
    from meshlab.testbeds.cloud import upstream

    # sockops records a pair only for a connect connect4 rewrote (the k6 hop, the sidecar's to
    # nginx): what the carriers below are read from.
    assert upstream.value("merbridge", "sockops_pairs")["pair_original_dst"] == (
        "connect_rewritten_only"
    )
    evidence, reasons = arm_check.judge(cr.windows("ebpf"), "ebpf", WINDOW)
    assert reasons == []
    assert {h: e["carrier"] for h, e in evidence["hops"].items()} == {
        "k6->client_sidecar": "ebpf-connect",
        "client_sidecar->server_sidecar": "iptables-redirect",
        "server_sidecar->app": "sockmap",
    }
    k6 = evidence["hops"]["k6->client_sidecar"]
    assert k6["node"] == "lt1" and k6["expected"] == "ebpf-connect"
    assert [(c["start"], c["end"], c["delta"]) for c in k6["counters"]] == [(0, 0, 0), (3, 8, 5)]
    assert evidence["placement"] == "cross-node" and evidence["target"] == "10.96.0.20:80"
    assert evidence["in_mesh"]["server_sidecar"] == {"start": 1, "end": 1}


def test_a_clean_iptables_trial_passes_with_each_hops_carrier() -> None:
    evidence, reasons = arm_check.judge(cr.windows("iptables"), "iptables", WINDOW)
    assert reasons == []
    assert {h: e["carrier"] for h, e in evidence["hops"].items()} == {
        "k6->client_sidecar": "iptables-redirect",
        "client_sidecar->server_sidecar": "iptables-redirect",
        "server_sidecar->app": "none",
    }
    assert evidence["merbridge_programs"]["w1"] == {"start": [], "end": []}


def test_an_ebpf_trial_whose_k6_traffic_went_through_iptables_is_rejected() -> None:
    # Merbridge detached during the window (its pod died): k6's new connections hit REDIRECT.
    nat = {cr.K6_POD: (0, 0, 0), cr.SERVER_POD: (0, 6, 2)}
    doctored = cr.windows(
        "ebpf", lt1_end={"merbridge": False, "nat": {**nat, cr.K6_POD: (5, 0, 0)}}
    )
    evidence, reasons = arm_check.judge(doctored, "ebpf", WINDOW)
    assert evidence["hops"]["k6->client_sidecar"]["carrier"] == "unknown"
    assert (
        "arm check: ISTIO_REDIRECT in pod k6-5f7c9-abcde's netns counted 5 connections during an "
        "ebpf trial: k6's traffic went through iptables"
    ) in reasons
    assert any(
        "connect4, getsockopt, recvmsg4, sendmsg4, sock_ops not attached to lt1's root "
        "cgroup at the window's end of an ebpf trial" in r
        for r in reasons
    )


def test_an_ebpf_trial_with_no_redirected_k6_connection_is_rejected() -> None:
    doctored = cr.windows("ebpf", lt1_end={"k6_pairs_n": 3})  # nothing new since the start
    _, reasons = arm_check.judge(doctored, "ebpf", WINDOW)
    assert any(
        r.startswith(
            "arm check: hop k6->client_sidecar was carried by unknown, not "
            "ebpf-connect as the ebpf arm needs (ISTIO_REDIRECT packets in pod "
            "k6-5f7c9-abcde's netns: 0 -> 0; pair_original_dst entries "
            "10.96.0.20:80 -> 127.128.0.0/12:15001: 3 -> 3)"
        )
        for r in reasons
    )


def test_an_iptables_trial_with_merbridge_left_attached_is_rejected() -> None:
    doctored = cr.windows("iptables", w1_start={"merbridge": True, "in_mesh": {}})
    evidence, reasons = arm_check.judge(doctored, "iptables", WINDOW)
    assert any(
        "arm check: Merbridge's connect4 mb_sock_connect (id 200), " in r
        and "attached to w1's root cgroup at the window's start of an iptables trial" in r
        for r in reasons
    )
    assert evidence["merbridge_programs"]["w1"]["start"][0] == {
        "attach": "connect4",
        "id": 200,
        "name": "mb_sock_connect",
    }


def test_a_server_sidecar_out_of_the_mesh_is_rejected_naming_the_pod_and_entry() -> None:
    stale = {"k6": 1, "client_sidecar": 1, "server_sidecar": 0}
    doctored = cr.windows(
        "ebpf",
        w1_end={"in_mesh": stale, "app_pairs_n": 0},
        w1_start={"in_mesh": stale, "app_pairs_n": 0},
    )
    evidence, reasons = arm_check.judge(doctored, "ebpf", WINDOW)
    assert evidence["hops"]["server_sidecar->app"]["carrier"] == "none"
    assert (
        "arm check: pod meshlab/server-6d8b7-fghij container istio-proxy (server_sidecar) on w1 "
        "is not in Merbridge's mesh at the window's end (cgroup_info_map[2002] is_in_mesh=0)"
    ) in reasons


def test_programs_replaced_mid_window_and_unbracketed_snapshots_are_rejected() -> None:
    doctored = cr.windows("ebpf")
    for row in doctored["w1"]["end"]["bpf"]["cgroup_show"]:
        row["id"] += 1000  # a Merbridge pod restarted: new program ids
    doctored["lt1"]["start"]["t_end"] = T0 + 1.5  # the snapshot ran into the window
    _, reasons = arm_check.judge(doctored, "ebpf", WINDOW)
    assert any("Merbridge's programs on w1 were replaced during the window" in r for r in reasons)
    assert (
        "arm check: lt1's first snapshot ended 1.5 s into the measured window (it must "
        "precede it)" in reasons
    )


def test_missing_or_broken_snapshots_reject_with_a_reason() -> None:
    _, reasons = arm_check.judge({}, "ebpf", WINDOW)
    assert reasons == [
        "arm check: no node snapshots were fetched, so the path the trial took is unknown"
    ]
    doctored = cr.windows("iptables")
    doctored["w1"]["end"]["bpf"] = {
        "cgroup_show": None,
        "map_show": None,
        "dumps": {},
        "errors": ["bpftool: rc -1: No such file"],
    }
    evidence, reasons = arm_check.judge(doctored, "iptables", WINDOW)
    assert (
        "arm check: no record of what was attached to w1's root cgroup at the window's end"
        in reasons
    )
    assert "w1: bpftool: rc -1: No such file" in evidence["problems"]


def test_same_node_ebpf_expects_connect4_to_carry_the_sidecar_hop() -> None:
    assert arm_check.expected("ebpf", same_node=True)["client_sidecar->server_sidecar"] == (
        "ebpf-connect"
    )
    doctored = copy.deepcopy(cr.windows("ebpf"))
    # Move the server pod onto lt1: a same-node trial whose sidecar hop only iptables carried.
    for edge in ("start", "end"):
        doctored["lt1"][edge]["containers"] += doctored["w1"][edge]["containers"]
        doctored["lt1"][edge]["netfilter"].update(doctored["w1"][edge]["netfilter"])
        doctored["w1"][edge]["containers"] = []
    evidence, reasons = arm_check.judge(doctored, "ebpf", WINDOW)
    assert evidence["placement"] == "same-node"
    assert evidence["hops"]["client_sidecar->server_sidecar"]["carrier"] == "iptables-redirect"
    assert any(
        "hop client_sidecar->server_sidecar was carried by iptables-redirect, not ebpf-connect" in r
        for r in reasons
    )


# ---- Merbridge Ready before the workload restarts (rendered manifest, role and playbook order) --

REPO = cr.REPO


def _daemonset(rendered: Any) -> dict[str, Any]:
    (ds,) = [d for d in cr.docs(rendered / "merbridge__merbridge.yaml") if d["kind"] == "DaemonSet"]
    return ds


def _probe_command(rendered: Any) -> list[str]:
    (container,) = _daemonset(rendered)["spec"]["template"]["spec"]["containers"]
    return container["readinessProbe"]["exec"]["command"]


def _fake_bpftool(tmp_path: Any, attached: dict[str, int], pinned: dict[str, int]) -> dict:
    """A bpftool on PATH that answers `-j cgroup show` and `-j prog show pinned P` as bpftool
    does (JSON ids), from `attached` (attach type -> id) and `pinned` (pin -> id)."""
    import json

    tool = tmp_path / "bin" / "bpftool"
    tool.parent.mkdir(exist_ok=True)
    rows = [
        {"id": i, "attach_type": a, "attach_flags": "", "name": "x"} for a, i in attached.items()
    ]
    pins = {f"/sys/fs/bpf/{p}": {"id": i, "type": "cgroup_sock_addr"} for p, i in pinned.items()}
    tool.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"rows, pins = {json.dumps(rows)!r}, {json.dumps(pins)!r}\n"
        "a = sys.argv[1:]\n"
        "out = lambda doc: print(json.dumps(doc, separators=(',', ':')))\n"
        "if a[1:3] == ['cgroup', 'show']:\n    out(json.loads(rows))\n"
        "elif a[1:4] == ['prog', 'show', 'pinned'] and a[4] in json.loads(pins):\n"
        "    out(json.loads(pins)[a[4]])\n"
        "else:\n    sys.exit(255)\n"
    )
    tool.chmod(0o755)
    import os

    return {**os.environ, "PATH": f"{tool.parent}{os.pathsep}{os.environ['PATH']}"}


def test_merbridge_is_ready_only_once_its_own_programs_are_attached(
    rendered: Any, tmp_path: Any
) -> None:
    import subprocess

    from meshlab.testbeds.cloud import upstream

    command = _probe_command(rendered)
    # Nothing marks Merbridge Ready once `make attach` is done: the probe is ours.
    assert upstream.value("merbridge", "attach_after_watcher") is True
    assert upstream.value("bpftool", "json_compact").startswith('{"id":')  # what it greps
    # The probe checks exactly what `make attach` puts on the root cgroup, and the sk_msg pin.
    cgroup_pins = [a["pin"] for a in upstream.value("merbridge", "cgroup_attachments")]
    other_pins = [a["pin"] for a in upstream.value("merbridge", "map_attachments")]
    script = command[-1]
    assert script.count(f"{upstream.value('merbridge', 'prog_mount_path')}/$p") == 2
    assert f"for p in {' '.join(cgroup_pins)}; do" in script
    assert f"for p in {' '.join(other_pins)}; do" in script
    assert set(command[0:1]) <= set(upstream.value("merbridge", "image_tools"))
    ids = {pin: 40 + i for i, pin in enumerate(cgroup_pins + other_pins)}
    attached = {
        a["attach"]: ids[a["pin"]] for a in upstream.value("merbridge", "cgroup_attachments")
    }

    def probe(attached: dict[str, int], pinned: dict[str, int]) -> int:
        env = _fake_bpftool(tmp_path, attached, pinned)
        return subprocess.run(command, env=env, capture_output=True, timeout=30).returncode

    assert probe(attached, ids) == 0
    # make load still compiling: nothing pinned, nothing attached.
    assert probe({}, {}) != 0
    # A stale program of a Merbridge pod that died is attached, not this pod's (other id).
    assert probe({**attached, "connect4": 999}, ids) != 0
    # attach finished but the sk_msg program was never pinned.
    assert probe(attached, {p: i for p, i in ids.items() if p != "redir"}) != 0


def test_rollout_status_waits_for_that_readiness(rendered: Any) -> None:
    from meshlab.testbeds.cloud import upstream

    fact = upstream.value("kubernetes", "daemonset_rollout_status")
    ds = _daemonset(rendered)
    strategy = ds["spec"].get("updateStrategy", {}).get("type", "RollingUpdate")  # apps/v1 default
    assert strategy == fact["strategy"]  # else `kubectl rollout status` returns at once
    assert "numberAvailable" in fact["done_when"]  # available = Ready: the probe above
    assert _probe_command(rendered)


def _argv(task: dict[str, Any]) -> list[str]:
    """A command task's argv; an argv built in Jinja from the task's list vars counts them."""
    for module in ("ansible.builtin.command", "command"):
        if module in task:
            argv = task[module].get("argv") or []
            if isinstance(argv, str):
                return [
                    str(a)
                    for v in (task.get("vars") or {}).values()
                    if isinstance(v, list)
                    for a in v
                ]
            return [str(a) for a in argv]
    return []


def test_the_workload_restarts_only_after_merbridge_is_ready() -> None:
    import yaml
    from test_cloud_versions import iter_tasks

    tasks = iter_tasks(yaml.safe_load((REPO / "roles/merbridge/tasks/main.yml").read_text()))
    waits = [
        i for i, t in enumerate(tasks) if "daemonset/merbridge" in _argv(t) and "status" in _argv(t)
    ]
    restarts = [i for i, t in enumerate(tasks) if "restart" in _argv(t)]
    assert waits and restarts and max(waits) < min(restarts)
    wait = tasks[waits[0]]
    assert wait.get("when") == "merbridge_state == 'present'" and "ignore_errors" not in wait


def test_the_arm_is_checked_after_the_switch_and_before_any_trial_starts() -> None:
    import yaml
    from test_cloud_versions import iter_tasks

    tasks = iter_tasks(yaml.safe_load((REPO / "playbooks/tasks/trial_cloud.yml").read_text()))
    names = [t.get("name", "") for t in tasks]

    def index(pred: Any) -> int:
        return next(i for i, t in enumerate(tasks) if pred(t))

    switch = index(lambda t: t.get("ansible.builtin.include_role", {}).get("name") == "merbridge")
    check = index(
        lambda t: t.get("ansible.builtin.include_role", {}).get("tasks_from") == "arm_ready"
    )
    sampler = index(lambda t: "sample" in _argv(t))
    assert switch < check < sampler, names
    role = yaml.safe_load((REPO / "roles/trial_agent/tasks/arm_ready.yml").read_text())
    steps = [" ".join(_argv(t)) for t in iter_tasks(role)]
    order = [
        next(i for i, s in enumerate(steps) if word in s)
        for word in ("--rearm", " rearm", " probe", "--probe-dir")
    ]
    assert order[0] < order[1] < order[2] < order[3] == max(order)
    refuse = iter_tasks(role)[-1]
    assert "ansible.builtin.fail" in refuse and refuse["when"] == "__trial_agent_ready.rc != 0"


# ---- ingest: the evidence beside trial.json, the reasons in its verdict --------------------------


@pytest.fixture
def cloud_run(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from test_experiment_cloud import _prepared

    from meshlab.experiment import provenance

    monkeypatch.setattr(provenance, "git", lambda: {"sha": "abc1234", "dirty": False})
    monkeypatch.setattr(provenance, "versions", lambda: {"k6": "local", "kernel": "local"})
    return lambda: _prepared(tmp_path)


def test_ingest_writes_the_path_evidence_and_rejects_a_doctored_trial(cloud_run: Any) -> None:
    import json
    from pathlib import Path

    from meshlab.experiment import cloud_steps
    from meshlab.record.rundir import RunDir

    run_dir, prep, lp = cloud_run()
    raw = Path(prep["raw_dir"])
    # The trial's arm with Merbridge's connect4 left attached on w1 at the window's start (for an
    # iptables trial), or k6 not redirected (for an ebpf one): either way not the arm it claims.
    other = "iptables" if prep["dataplane"] == "ebpf" else "ebpf"
    start = json.loads((raw / "k6-run.json").read_text())["started"] + lp.warmup_s
    for host, window in cr.windows(other, start, lp.duration_s + 3).items():
        (raw / f"{host}.node-window.json").write_text(json.dumps(window))
    trial = cloud_steps.ingest(run_dir, 0, raw).model_dump()["trials"][0]
    assert trial["status"] == "rejected"
    assert any(
        r.startswith("arm check: hop k6->client_sidecar was carried by ") for r in trial["reasons"]
    )
    evidence = json.loads((Path(prep["dir"]) / "path-evidence.json").read_text())
    assert evidence["dataplane"] == prep["dataplane"] and set(evidence["hops"]) == set(
        arm_check.HOPS
    )
    assert RunDir(run_dir).load_manifest().plan[-1].requeue_of == 0  # re-queued like any rejection


def test_ingest_rejects_a_trial_whose_exclusive_cpus_had_company(cloud_run: Any) -> None:
    import json
    from pathlib import Path

    from meshlab.experiment import cloud_steps

    run_dir, prep, _ = cloud_run()
    raw = Path(prep["raw_dir"])
    window = json.loads((raw / "lt1.node-window.json").read_text())
    for edge, ticks in (("start", 100), ("end", 180)):
        window[edge]["tasks"]["rows"].append(
            [900, 900, "unattended-upgr", 0x400100, ticks, 2, "0-3", "/system.slice/apt.service"]
        )
    (raw / "lt1.node-window.json").write_text(json.dumps(window))
    trial = cloud_steps.ingest(run_dir, 0, raw).model_dump()["trials"][0]
    assert trial["status"] == "rejected"
    assert (
        "exclusive CPUs: lt1: unattended-upgr (pid 900, /system.slice/apt.service) used 0.8 CPU-s "
        "during the window and was last on CPU 2 (allowed 0,1,2,3); the measured CPUs are 2,3"
    ) in trial["reasons"]
    cpus = json.loads((Path(prep["dir"]) / "host-cpus.json").read_text())
    assert cpus["lt1"]["intruders"][0]["comm"] == "unattended-upgr"
    assert [k["comm"] for k in cpus["lt1"]["kernel"]] == ["ksoftirqd/2"]  # listed, not gated
