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
    """tests/cluster/render_manifests.yml into `out`, one file per rendered template."""
    proc = playbook(
        "-i", str(REPO / "tests/cluster/render_inventory.yml"),
        str(REPO / "tests/cluster/render_manifests.yml"), "-e", f"render_dir={out}", *extra,
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
