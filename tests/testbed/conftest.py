"""The local testbed, brought up once per session through the same code path as the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import testinfra
from devlab import wait_for

from meshlab.testbeds.local import commands
from meshlab.testbeds.local import state as tb_state

# The real command line of this checkout's environment, whatever PATH says.
MESHLAB = [str(Path(sys.prefix) / "bin" / "meshlab")]


@dataclass
class Testbed:
    """Handles for the tests: the status document and helpers that run things inside pods."""

    host: Any  # testinfra host (local://)

    @property
    def status(self) -> dict[str, Any]:
        return tb_state.status(tb_state.load())

    def exec(self, pod: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MESHLAB, "testbed", "exec", pod, "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def curl(self, pod: str, url: str, *extra: str) -> tuple[str, float, int]:
        """(HTTP status, seconds, curl exit code) of one request from a pod."""
        proc = self.exec(
            pod,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "10",
            "-w",
            "%{http_code} %{time_total}",
            *extra,
            url,
        )
        code, seconds = [*proc.stdout.split(), "000", "0"][:2]
        return code, float(seconds), proc.returncode

    def envoy_stats(self, pod: str) -> dict[str, int]:
        proc = self.exec(pod, "curl", "-sf", "http://127.0.0.1:15000/stats")
        assert proc.returncode == 0, proc.stderr
        out = {}
        for line in proc.stdout.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    def nat_rules(self, netns: str) -> list[str]:
        return self.host.check_output(f"ip netns exec {netns} iptables -t nat -S").splitlines()

    def chain_packets(self, netns: str, chain: str) -> int:
        """Packets that entered `chain` = the counters of the rules that jump to it."""
        out = self.host.check_output(f"ip netns exec {netns} iptables -t nat -L -v -x -n")
        total = 0
        for line in out.splitlines():
            cols = line.split()
            if len(cols) > 2 and cols[0].isdigit() and cols[2] == chain:
                total += int(cols[0])
        return total


@pytest.fixture
def wait_until() -> Callable[..., bool]:
    """Poll a predicate until it holds or the timeout passes."""
    return lambda predicate, timeout=10.0: wait_for(predicate, timeout, every=0.2)


def meshlab_cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHLAB, *argv], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    commands.up()
    yield Testbed(host=testinfra.get_host("local://"))
    commands.down()  # the suite leaves the host as it found it


ARMS = ("iptables", "ebpf", "ebpf-connect")


@pytest.fixture(scope="module", params=ARMS)
def arm_name(request: pytest.FixtureRequest) -> str:
    """Module scope makes pytest group the tests by arm: three switches, not three per test."""
    return request.param


@pytest.fixture
def arm(arm_name: str, testbed: Testbed) -> Testbed:
    """The testbed in each dataplane arm in turn (no flood): the mesh must behave the same."""
    doc = testbed.status
    if doc["dataplane"] != arm_name:
        commands.set_dataplane(arm_name)
    if doc["flood"]["spec"] != "off":
        commands.set_flood("off")
    return testbed


@pytest.fixture
def ebpf_arm(testbed: Testbed) -> Testbed:
    if testbed.status["dataplane"] != "ebpf":
        commands.set_dataplane("ebpf")
    return testbed


@pytest.fixture
def iptables_arm(testbed: Testbed) -> Testbed:
    """The testbed in the iptables arm with no flood, whatever an earlier test left."""
    doc = testbed.status
    if doc["dataplane"] != "iptables":
        commands.set_dataplane("iptables")
    if doc["flood"]["spec"] != "off":
        commands.set_flood("off")
    return testbed


class Load:
    """A bounded k6 load from the client pod, in the background (stops by itself)."""

    def __init__(self, rate: int, seconds: int, mode: str, out: Path) -> None:
        from meshlab.record.spec import LoadPoint
        from meshlab.trial.load import script

        tb = tb_state.load()
        lp = LoadPoint(name="t", rate=rate, duration_s=seconds, warmup_s=0, connection_mode=mode)
        (out / "load.js").write_text(script(lp, tb.server_url()))
        self.csv, self.summary = out / "raw.csv.gz", out / "summary.json"
        self.proc = subprocess.Popen(
            [*MESHLAB, "testbed", "exec", "client", "--", tb.k6_bin, "run", "--quiet",
             "--no-usage-report", "--out", f"csv={self.csv}", "--summary-export",
             str(self.summary), str(out / "load.js")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={"K6_CSV_TIME_FORMAT": "unix_micro", "PATH": "/usr/bin:/bin"},
        )  # fmt: skip

    def wait(self, timeout: float = 120) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, out[-2000:]
        return json.loads(self.summary.read_text())["metrics"]

    def failures(self) -> list[float]:
        """Unix times of failed requests (k6's http_req_failed rows with value 1)."""
        import csv
        import gzip

        with gzip.open(self.csv, "rt") as fh:
            return [
                int(row["timestamp"]) / 1e6
                for row in csv.DictReader(fh)
                if row["metric_name"] == "http_req_failed" and float(row["metric_value"]) > 0
            ]


@pytest.fixture
def load(tmp_path: Path) -> Callable[..., Load]:
    def start(rate: int = 200, seconds: int = 5, mode: str = "keepalive") -> Load:
        return Load(rate, seconds, mode, tmp_path)

    return start


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real `meshlab` command line."""
    return meshlab_cli
