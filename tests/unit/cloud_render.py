"""Shared helpers of the cluster tests: the roles' offline render and a loopback registry."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = dict(
    os.environ,
    PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    ANSIBLE_NOCOLOR="1",
    NO_COLOR="1",
    PYTHONPATH=str(REPO),
)
VERSIONS = yaml.safe_load((REPO / "playbooks/group_vars/all/versions.yml").read_text())


def render(out: Path, *extra: str) -> Path:
    """tests/cloud/render_manifests.yml into `out`, one file per rendered template."""
    proc = playbook(
        "-i", str(REPO / "tests/cloud/render_inventory.yml"),
        str(REPO / "tests/cloud/render_manifests.yml"), "-e", f"render_dir={out}", *extra,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for name, text in json.loads((out / "rendered.json").read_text()).items():
        (out / name).write_text(text)
    return out


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def playbook(*args: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "ansible-playbook"), *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


DIGEST = "sha256:" + "0123456789abcdef" * 4


@contextmanager
def fake_registry(digest: str = DIGEST) -> Iterator[str]:
    """An OCI registry on 127.0.0.1 that wants an anonymous bearer token, as ghcr.io does:
    HEAD manifests -> 401 + WWW-Authenticate; GET /token -> {"token"}; HEAD with it -> digest."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def do_HEAD(self) -> None:
            seen.append(f"HEAD {self.path}")
            if self.headers.get("Authorization") != "Bearer t0ken":
                host, port = self.server.server_address[:2]
                self.send_response(401)
                self.send_header(
                    "WWW-Authenticate",
                    f'Bearer realm="http://{host}:{port}/token",service="ghcr.io",'
                    'scope="repository:merbridge/merbridge:pull"',
                )
                self.end_headers()
                return
            if "application/vnd.oci.image.index.v1+json" not in self.headers.get("Accept", ""):
                self.send_response(406)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Docker-Content-Digest", digest)
            self.send_header("Content-Type", "application/vnd.oci.image.index.v1+json")
            self.end_headers()

        def do_GET(self) -> None:
            seen.append(f"GET {self.path}")
            body = json.dumps({"token": "t0ken"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        fake_registry.seen = seen  # type: ignore[attr-defined]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()


# ---- node snapshots as the trial agent records them (meshlab/testbeds/cloud/node_snapshot.py)
# Built from Merbridge 0.8.1's C structs with struct.pack, independently of the decoder in
# meshlab/testbeds/cloud/merbridge_maps.py (which reads the layouts from the facts), in bpftool
# 7.1.0's
# JSON shapes: `map dump` entries as "0x%02hhx" strings, `cgroup show` with libbpf's attach names.

Z12 = b"\0" * 12
TARGET = ("10.96.0.20", 80)
POD_IP = {"k6": "10.244.1.10", "server": "10.244.2.20"}
# component -> (host, pod, container, cgroup id, pid, CPUs)
LAYOUT = {
    "k6": ("lt1", "k6-5f7c9-abcde", "k6", 1001, 4101, "2"),
    "client_sidecar": ("lt1", "k6-5f7c9-abcde", "istio-proxy", 1002, 4102, "3"),
    "app": ("w1", "server-6d8b7-fghij", "nginx", 2001, 5101, "2"),
    "server_sidecar": ("w1", "server-6d8b7-fghij", "istio-proxy", 2002, 5102, "3"),
}
ATTACH = [  # bpftool 7.1.0 attach type name, kernel program name (15 characters)
    ("cgroup_inet4_connect", "mb_sock_connect"), ("cgroup_sock_ops", "mb_sockops"),
    ("cgroup_getsockopt", "mb_get_sockopt"), ("cgroup_inet4_bind", "mb_bind"),
    ("cgroup_udp4_sendmsg", "mb_sendmsg4"), ("cgroup_udp4_recvmsg", "mb_recvmsg4"),
]  # fmt: skip
MAPS = [  # kernel name (15 characters), type, key, value
    ("cookie_original", "lru_hash", 8, 24), ("local_pod_ips", "hash", 16, 484),
    ("process_ip", "lru_hash", 4, 4), ("cgroup_info_map", "lru_hash", 8, 32),
    ("mark_pod_ips_ma", "hash", 4, 16), ("pair_original_d", "lru_hash", 36, 24),
    ("sock_pair_map", "sockhash", 36, 4),
]  # fmt: skip


def hexes(data: bytes) -> list[str]:
    return [f"0x{b:02x}" for b in data]


def _ip(text: str) -> bytes:
    import ipaddress

    return ipaddress.IPv4Address(text).packed


def cgroup_info_entry(cgroup_id: int, in_mesh: int) -> dict[str, Any]:
    import struct

    value = struct.pack("<QI16sHH", cgroup_id, in_mesh, b"\0" * 16, 0, 0)
    return {"key": hexes(struct.pack("<Q", cgroup_id)), "value": hexes(value)}


def process_ip_entry(tgid: int, ip: str) -> dict[str, Any]:
    import struct

    return {"key": hexes(struct.pack("<I", tgid)), "value": hexes(_ip(ip))}


def local_pod_entry(ip: str) -> dict[str, Any]:
    return {"key": hexes(Z12 + _ip(ip)), "value": hexes(b"\0" * 484)}


def pair_entry(sip: str, dip: str, sport: int, dport: int, origin: tuple[str, int],
               pid: int = 0, flags: int = 1) -> dict[str, Any]:  # fmt: skip
    import struct

    key = Z12 + _ip(sip) + Z12 + _ip(dip) + struct.pack(">HH", sport, dport)
    value = Z12 + _ip(origin[0]) + struct.pack("<I", pid) + struct.pack(">H", origin[1])
    return {"key": hexes(key), "value": hexes(value + struct.pack("<H", flags))}


def k6_pairs(first_port: int, n: int) -> list[dict[str, Any]]:
    """n k6 connections Merbridge's connect4 sent to 127.128.0.x:15001 (origin: the target)."""
    return [
        pair_entry("127.0.0.1", f"127.128.0.{i % 250 + 1}", first_port + i, 15001, TARGET)
        for i in range(n)
    ]


def app_pairs(n: int) -> list[dict[str, Any]]:
    """n server-sidecar -> nginx connections sockops spliced (from the passthrough 127.0.0.6)."""
    ip = POD_IP["server"]
    return [pair_entry("127.0.0.6", ip, 40000 + i, 80, (ip, 80)) for i in range(n)]


def nat_text(outbound: int, inbound: int, passthrough: int) -> str:
    """`iptables-save -c -t nat` of an injected pod (istio-init's rules, iptables 1.8.9)."""
    return "\n".join([
        "# Generated by iptables-nft-save v1.8.9 (nf_tables)", "*nat",
        ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":ISTIO_INBOUND - [0:0]",
        ":ISTIO_IN_REDIRECT - [0:0]", ":ISTIO_OUTPUT - [0:0]", ":ISTIO_REDIRECT - [0:0]",
        f"[{inbound}:{inbound * 60}] -A PREROUTING -p tcp -j ISTIO_INBOUND",
        "[0:0] -A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN",
        f"[{inbound}:{inbound * 60}] -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        f"[{inbound}:{inbound * 60}] -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        f"[{passthrough}:{passthrough * 60}] -A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
        f"[{outbound}:{outbound * 60}] -A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        f"[{outbound}:{outbound * 60}] -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "COMMIT", "",
    ])  # fmt: skip


PF_KTHREAD = 0x00200000


def task_rows(host: str, t: int) -> list[list[Any]]:
    """Every task of a node at second t: the measured containers busy on their CPUs, systemd's
    slices on the reserved CPU 0, a per-CPU kernel thread on a measured CPU."""
    rows = []
    for comp, (h, _, _, _, pid, cpus) in LAYOUT.items():
        if h == host:
            cg = f"/kubepods.slice/kubepods-pod{comp}.slice/cri-containerd-{comp}.scope"
            rows.append([pid, pid, comp[:15], 0x400100, 100 * t, int(cpus), cpus, cg])
    rows.append([700, 700, "kubelet", 0x400100, 3 * t, 0, "0", "/system.slice/kubelet.service"])
    rows.append([701, 701, "systemd-journal", 0x400100, t, 0, "0",
                 "/system.slice/systemd-journald.service"])  # fmt: skip
    rows.append([30, 30, "ksoftirqd/2", PF_KTHREAD, t, 2, "2", "/"])
    return rows


def snapshot(host: str, t: float, *, merbridge: bool, in_mesh: dict[str, int] | None = None,
             k6_pairs_n: int = 0, app_pairs_n: int = 0, nat: dict[str, tuple[int, int, int]]
             | None = None, tasks: bool = True) -> dict[str, Any]:  # fmt: skip
    """One node's snapshot; `in_mesh`: component -> is_in_mesh (missing: no entry)."""
    base = {"lt1": 10, "w1": 20, "cp1": 30}[host]
    containers = [
        {"component": comp, "pod": pod, "container": name, "id": f"c-{comp}",
         "cgroup": f"/sys/fs/cgroup/kubepods.slice/kubepods-pod{comp}.slice/"
                   f"cri-containerd-{comp}.scope",
         "cgroup_id": cid, "pid": pid, "cpus": cpus, "host": host,
         "pod_ip": POD_IP["k6" if pod.startswith("k6") else "server"]}
        for comp, (h, pod, name, cid, pid, cpus) in LAYOUT.items() if h == host
    ]  # fmt: skip
    bpf: dict[str, Any] = {"cgroup_show": [], "map_show": [], "dumps": {}, "errors": []}
    if merbridge:
        bpf["cgroup_show"] = [
            {"id": base * 10 + i, "attach_type": a, "attach_flags": "", "name": n,
             "attach_btf_obj_id": 0, "attach_btf_id": 0}
            for i, (a, n) in enumerate(ATTACH)
        ]  # fmt: skip
        bpf["map_show"] = [
            {"id": base + i, "type": ty, "name": n, "flags": 0, "bytes_key": k, "bytes_value": v,
             "max_entries": 1024}
            for i, (n, ty, k, v) in enumerate(MAPS)
        ]  # fmt: skip
        mine = [c for c in containers]
        dumps = {
            "cgroup_info_map": [cgroup_info_entry(c["cgroup_id"], (in_mesh or {})[c["component"]])
                                for c in mine if c["component"] in (in_mesh or {})],
            "process_ip": [process_ip_entry(7777, POD_IP["server"])] if host == "w1" else [],
            "local_pod_ips": [local_pod_entry(ip) for ip in {c["pod_ip"] for c in mine}],
            "pair_original_dst": (k6_pairs(33000, k6_pairs_n) if host == "lt1" else [])
            + (app_pairs(app_pairs_n) if host == "w1" else []),
        }  # fmt: skip
        ids = {n: base + i for i, (n, *_) in enumerate(MAPS)}
        short = {"pair_original_dst": "pair_original_d"}
        bpf["dumps"] = {
            name: [{"id": ids[short.get(name, name)], "entries": entries}]
            for name, entries in dumps.items()
        }
    pods = {c["pod"] for c in containers}
    doc = {
        "host": host, "t_begin": t, "t_end": t + 0.3, "containers": containers, "errors": [],
        "target": f"{TARGET[0]}:{TARGET[1]}", "bpf": bpf,
        "netfilter": {pod: {"legacy": "", "nft": nat_text(*(nat or {}).get(pod, (0, 0, 0))),
                            "errors": []} for pod in sorted(pods)},
    }  # fmt: skip
    if tasks:
        doc["tasks"] = {"clk_tck": 100, "rows": task_rows(host, int(t))}
    return doc


K6_POD, SERVER_POD = LAYOUT["k6"][1], LAYOUT["server_sidecar"][1]
IN_MESH = {"k6": 1, "client_sidecar": 1, "server_sidecar": 1}


def windows(dataplane: str, t0: float = 1_795_000_000.0, seconds: float = 25.0,
            **doctor: Any) -> dict[str, dict[str, Any]]:  # fmt: skip
    """host -> {"start", "end"} snapshots of a clean trial on the default cloud layout; keyword
    arguments replace a snapshot's parameters to doctor it (e.g. lt1_end={"merbridge": False})."""
    ebpf = dataplane == "ebpf"
    plan: dict[str, dict[str, Any]] = {}
    for host in ("lt1", "w1", "cp1"):
        for edge, t in (("start", t0 - 2), ("end", t0 + seconds + 1)):
            end = edge == "end"
            plan[f"{host}_{edge}"] = {
                "merbridge": ebpf,
                "in_mesh": dict(IN_MESH) if ebpf else None,
                "k6_pairs_n": (3 + 5 * end) if ebpf else 0,  # 3 from the probe, 5 from k6
                "app_pairs_n": 2 if ebpf else 0,  # pooled since the arm's restart
                "nat": {
                    K6_POD: (0 if ebpf else 2 + 5 * end, 0, 0),
                    SERVER_POD: (0, 4 + 2 * end, 2),
                },
                "t": t,
            }
    for key, change in doctor.items():
        plan[key].update(change)
    out: dict[str, dict[str, Any]] = {}
    for key, params in plan.items():
        host, edge = key.split("_")
        out.setdefault(host, {})[edge] = snapshot(host, **params)
    return out
