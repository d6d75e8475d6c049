"""Compile bpf/*.c with clang against a vmlinux.h generated from this kernel's BTF.

Outputs go to bpf/build/ (git-ignored). Incremental: vmlinux.h is regenerated when the
running kernel changes, an object when its source, a header or vmlinux.h is newer.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
from pathlib import Path

from meshlab.ebpf import features
from meshlab.errors import MeshlabError

BPF_DIR = Path(__file__).resolve().parents[2] / "bpf"
OBJECTS = ("mb_connect", "mb_getsockopt", "mb_sockops", "mb_redir")
_TARGET_ARCH = {"x86_64": "x86", "aarch64": "arm64", "riscv64": "riscv", "s390x": "s390"}


def clang_argv(src: Path, out: Path, build_dir: Path, headers: Path, machine: str) -> list[str]:
    """The clang command line for one program (pure, so its flags are testable)."""
    arch = _TARGET_ARCH.get(machine)
    if arch is None:
        raise MeshlabError(f"eBPF arm unavailable: no BPF target arch mapping for {machine}")
    return [
        "clang",
        "-target",
        "bpf",
        "-O2",
        "-g",  # BTF for CO-RE and for bpftool's map/prog introspection
        "-Wall",
        "-Werror",
        f"-D__TARGET_ARCH_{arch}",
        f"-I{build_dir}",
        f"-I{headers}",
        "-c",
        str(src),
        "-o",
        str(out),
    ]


def _btf_stamp() -> str:
    st = features.BTF_PATH.stat()
    return f"{platform.release()} {st.st_size}\n"


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _vmlinux_h(build_dir: Path) -> Path:
    header = build_dir / "vmlinux.h"
    stamp = build_dir / "vmlinux.stamp"
    want = _btf_stamp()
    if header.exists() and stamp.exists() and stamp.read_text() == want:
        return header
    result = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(features.BTF_PATH), "format", "c"],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout:
        detail = result.stderr.decode(errors="replace").strip()
        raise MeshlabError(f"eBPF build: bpftool could not dump kernel BTF: {detail}")
    _write_atomic(header, result.stdout)
    _write_atomic(stamp, want.encode())
    return header


def _stale(out: Path, inputs: list[Path]) -> bool:
    if not out.exists():
        return True
    built = out.stat().st_mtime
    return any(p.stat().st_mtime > built for p in inputs)


def ensure_built(
    src_dir: Path = BPF_DIR, build_dir: Path | None = None, force: bool = False
) -> dict[str, Path]:
    """Compile what is stale; return {object stem: .o path}. Raises MeshlabError."""
    features.raise_if_missing(features.toolchain_missing())
    build_dir = build_dir or src_dir / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    headers = src_dir / "headers"
    vmlinux = _vmlinux_h(build_dir)
    common = [vmlinux, *sorted(headers.glob("*.h"))]
    objects: dict[str, Path] = {}
    for stem in OBJECTS:
        src = src_dir / f"{stem}.c"
        out = build_dir / f"{stem}.o"
        if force or _stale(out, [src, *common]):
            tmp = build_dir / f".{stem}.o.tmp"
            argv = clang_argv(src, tmp, build_dir, headers, platform.machine())
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise MeshlabError(
                    f"eBPF build: clang failed on {src.name}: {result.stderr.strip()}"
                )
            tmp.replace(out)
        objects[stem] = out
    return objects
