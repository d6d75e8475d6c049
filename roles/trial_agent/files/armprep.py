"""The arm check's two actions on a node, both decided on the controller before any trial.

Installed beside meshlab-trial-agent by the trial_agent role (standard library only).

- `rearm`: delete the cgroup_info_map entries meshlab.testbeds.cloud.arm_ready.rearm named (measured
  containers Merbridge 0.8.1 decided "not in mesh" at a first connect made before their sidecar
  listened on 15001; the entry is a cache Merbridge never re-checks).
- `probe`: GET the server through the k6 container's sidecar, a new connection each time, from a
  process of the k6 container, so every measured cgroup connects with the listeners up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nodesnap


def write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def rearm(args: Any, run: nodesnap.Run = nodesnap.run_command) -> int:
    """Delete the named cgroup_info_map entries, so that the cgroups decide again at their next
    connect; prints what was done. The entries come from the controller's decision."""
    plan = json.loads(args.plan_json)
    done: dict[str, Any] = {"deleted": [], "errors": []}
    if plan:
        state = nodesnap.bpf_state(run, args.bpftool, "/sys/fs/cgroup", [])
        ids = [
            m["id"] for m in state["map_show"] or [] if str(m.get("name", "")) == "cgroup_info_map"
        ]
        if len(ids) != 1:
            done["errors"].append(f"expected one cgroup_info_map, found ids {ids}")
        else:
            for entry in plan:
                argv = [
                    args.bpftool,
                    "map",
                    "delete",
                    "id",
                    str(ids[0]),
                    "key",
                    "hex",
                    *entry["key_hex"].split(),
                ]
                rc, _, err = run(argv)
                (done["deleted"] if rc == 0 else done["errors"]).append(
                    entry["key_hex"] if rc == 0 else f"{entry['key_hex']}: {err.strip()}"
                )
    print(json.dumps(done))
    return 0


def probe(args: Any, discover: Callable, parse_components: Callable, agent: Path) -> int:
    """Run `probe-requests` as a process of the k6 container (cgroup + network namespace)."""
    record: dict[str, Any] = {"ok": False, "codes": [], "error": ""}
    try:
        found = discover(
            args.crictl,
            args.namespace,
            parse_components(args.component),
            args.cgroup_root,
            args.host,
        )
        k6 = next((c for c in found if c["component"] == "k6" and c.get("pid")), None)
        if k6 is None:
            raise RuntimeError(f"no running k6 container in namespace {args.namespace} here")
        cgroup = Path(k6["cgroup"])

        def join_cgroup() -> None:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

        argv = [
            "nsenter",
            f"--net=/proc/{k6['pid']}/ns/net",
            "--",
            sys.executable,
            str(agent),
            "probe-requests",
            "--url",
            args.url,
            "--requests",
            str(args.requests),
            "--successes",
            str(args.successes),
        ]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            preexec_fn=join_cgroup,
            check=False,
            timeout=args.requests * 12,
        )
        record.update(json.loads(proc.stdout or "{}"))
        if proc.returncode != 0:
            record["error"] = proc.stderr.strip()[-300:]
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as err:
        record["error"] = str(err)
    write_json(Path(args.out), record)
    return 0


def probe_requests(url: str, requests: int, successes: int, pause: float = 0.5) -> dict:
    """GET url, each on a new connection, until `successes` 200s in a row (or `requests` tries).
    The first may fail: Merbridge rewrites a sidecar's first connect to its own pod to 15006
    until sockops learns the process (facts: merbridge legacy_sidecar_to_local_pod)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    codes: list[Any] = []
    streak = 0
    for _ in range(requests):
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
        try:
            conn.request("GET", parts.path or "/", headers={"Connection": "close"})
            code: Any = conn.getresponse().status
        except (OSError, http.client.HTTPException) as err:
            code = type(err).__name__
        finally:
            conn.close()
        codes.append(code)
        streak = streak + 1 if code == 200 else 0
        if streak >= successes:
            break
        time.sleep(pause)
    return {"ok": streak >= successes, "codes": codes}
