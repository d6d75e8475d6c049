"""Benchmark (not a test) of the local testbed: `make bench-testbed`.

Prints the seconds `testbed up` takes from nothing (goal <= 60 s), the seconds `flood 50x500`
takes (goal <= 10 s; the thesis' kube-proxy spent >= 25 min in iptables-restore), and the
requests/s, p50 and p99 of a 10 s, 1000 req/s k6 run through both sidecars.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meshlab import ansible
from meshlab.record.spec import LoadPoint
from meshlab.testbeds.local import commands
from meshlab.testbeds.local import state as tb_state
from meshlab.trial.load import script


def _timed(fn, *args):
    started = time.monotonic()
    result = fn(*args)
    return time.monotonic() - started, result


def k6_through_mesh(rate: int = 1000, seconds: int = 10) -> dict[str, float]:
    tb = tb_state.load()
    lp = LoadPoint(name="bench", rate=rate, duration_s=seconds, warmup_s=2)
    with tempfile.TemporaryDirectory(prefix="meshlab-bench-") as tmp:
        js, summary = Path(tmp) / "load.js", Path(tmp) / "summary.json"
        js.write_text(script(lp, tb.server_url()))
        subprocess.run(
            [sys.prefix + "/bin/meshlab", "testbed", "exec", "client", "--", tb.k6_bin, "run",
             "--quiet", "--no-usage-report", "--summary-export", str(summary), str(js)],
            check=True, capture_output=True,
        )  # fmt: skip
        doc = json.loads(summary.read_text())["metrics"]
    duration = (
        doc["http_req_duration{scenario:measure}"]
        if "http_req_duration{scenario:measure}" in doc
        else doc["http_req_duration"]
    )
    return {
        "requests_per_s": doc["http_reqs{scenario:measure}"]["count"] / seconds,
        "p50_ms": duration["med"],
        "p99_ms": duration["p(99)"],
        "dropped": doc["dropped_iterations{scenario:measure}"]["count"]
        if "dropped_iterations{scenario:measure}" in doc
        else 0,
    }


def main() -> int:
    tb_state.require_root()
    commands.down()
    up_s, _ = _timed(commands.up)
    again_s, again = _timed(commands.up)
    flood_s, flood = _timed(commands.set_flood, "50x500")
    restore = ansible.set_fact(flood, "local_kube_proxy_result") or {}
    rules = tb_state.status(tb_state.load())["flood"]["rules"]
    load_flood = k6_through_mesh()
    off_s, _ = _timed(commands.set_flood, "off")
    load = k6_through_mesh()

    def k6_row(r: dict[str, float]) -> str:
        return (
            f"{r['requests_per_s']:.0f} req/s, p50 {r['p50_ms']:.3f} ms, "
            f"p99 {r['p99_ms']:.3f} ms, dropped {r['dropped']:.0f}"
        )

    rows = [
        ("testbed up from nothing", f"{up_s:.1f} s", "goal <= 60 s"),
        ("second testbed up", f"{again_s:.1f} s ({again.changed} changed)", "idempotent"),
        ("flood 50x500 (whole command)", f"{flood_s:.1f} s", "goal <= 10 s; thesis >= 25 min"),
        ("  of which iptables-restore", f"{restore.get('seconds', float('nan')):.2f} s", ""),
        ("  iptables-save lines", f"{rules}", "thesis 101,806"),
        ("flood off", f"{off_s:.1f} s", ""),
        ("k6 1000 req/s 10 s, no flood", k6_row(load), ""),
        ("k6 1000 req/s 10 s, flood 50x500", k6_row(load_flood), "keep-alive: NAT per connection"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<60} {note}")
    return 0
