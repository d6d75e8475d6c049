"""Kernel and toolchain checks for the eBPF arm: fail early, naming what is missing.

Everything is checked before anything is attached, so a host without a needed feature gets
one error that names it and the testbed stays in whatever arm it was in. Parsers are pure
so they can be tested without root or a particular kernel.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from meshlab.errors import MeshlabError

BTF_PATH = Path("/sys/kernel/btf/vmlinux")
LIBBPF_HEADER = Path("/usr/include/bpf/bpf_helpers.h")
MIN_CLANG = 10  # BTF-defined maps and CO-RE relocations

# (bpftool probe key, what it is, why meshlab needs it)
PROG_TYPES = (
    ("have_cgroup_sock_addr_prog_type", "program type cgroup_sock_addr", "connect4 redirect"),
    ("have_cgroup_sockopt_prog_type", "program type cgroup_sockopt", "SO_ORIGINAL_DST answer"),
    ("have_sock_ops_prog_type", "program type sock_ops", "original-destination bookkeeping"),
    ("have_sk_msg_prog_type", "program type sk_msg", "sockhash stack bypass"),
)
MAP_TYPES = (
    ("have_sockhash_map_type", "map type sockhash", "sockhash stack bypass"),
    ("have_lru_hash_map_type", "map type lru_hash", "original-destination maps"),
    ("have_percpu_array_map_type", "map type percpu_array", "counters"),
)


@dataclass(frozen=True)
class Missing:
    feature: str
    hint: str

    def __str__(self) -> str:
        return f"{self.feature} ({self.hint})"


def format_missing(missing: Iterable[Missing]) -> str:
    items = list(missing)
    return "eBPF arm unavailable: missing " + "; missing ".join(str(m) for m in items)


def raise_if_missing(missing: Iterable[Missing]) -> None:
    items = list(missing)
    if items:
        raise MeshlabError(format_missing(items))


# --- pure parsers ----------------------------------------------------------------------------


def parse_clang_major(version_text: str) -> int | None:
    match = re.search(r"clang version (\d+)\.", version_text)
    return int(match.group(1)) if match else None


def missing_from_probe(probe: dict) -> list[Missing]:
    """Program and map types meshlab needs that `bpftool feature probe kernel -j` lacks.

    Helper availability is not taken from the probe: bpftool 7.1 misreads the verifier
    messages of newer kernels and reports every helper as available. Missing helpers
    surface at load time instead, through explain_load_error().
    """
    missing: list[Missing] = []
    for section, table in (("program_types", PROG_TYPES), ("map_types", MAP_TYPES)):
        have = probe.get(section, {})
        for key, feature, why in table:
            if not have.get(key, False):
                missing.append(Missing(f"kernel {feature}", f"needed for the {why}"))
    return missing


def fs_mounts(mountinfo: str, fstype: str) -> list[Path]:
    """Mount points of one filesystem type in a /proc/self/mountinfo text."""
    mounts: list[Path] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if sep and right.split(" ", 1)[0] == fstype:
            fields = left.split(" ")
            if len(fields) >= 5:
                mounts.append(Path(_unescape(fields[4])))
    return mounts


def cgroup2_mounts(mountinfo: str) -> list[Path]:
    return fs_mounts(mountinfo, "cgroup2")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


_LOAD_PATTERNS = (
    (re.compile(r"unknown func (bpf_\w+)"), "kernel BPF helper {0}"),
    (re.compile(r"program of this type cannot use helper (bpf_\w+)"), "kernel BPF helper {0}"),
    (re.compile(r"invalid func unknown#(\d+)"), "kernel BPF helper #{0}"),
    (re.compile(r"invalid bpf_context access"), "a context field this kernel does not expose"),
    (re.compile(r"failed to find BTF for kernel|vmlinux BTF is not found"), "kernel BTF"),
)


def explain_load_error(program: str, stderr: str) -> str:
    """One line naming the missing feature behind a failed `bpftool prog loadall`."""
    for pattern, what in _LOAD_PATTERNS:
        match = pattern.search(stderr)
        if match:
            return (
                f"eBPF arm unavailable: missing {what.format(*match.groups())} "
                f"(the kernel rejected {program})"
            )
    tail = " | ".join(line.strip() for line in stderr.strip().splitlines()[-3:])
    return f"eBPF arm unavailable: the kernel rejected {program}: {tail or 'no detail'}"


# --- checks against this host ----------------------------------------------------------------


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def toolchain_missing(
    which: Callable[[str], str | None] = shutil.which,
    run: Runner = _run,
    btf: Path = BTF_PATH,
    libbpf_header: Path = LIBBPF_HEADER,
) -> list[Missing]:
    """What the build (clang -target bpf against a vmlinux.h from BTF) lacks."""
    missing: list[Missing] = []
    if which("clang") is None:
        missing.append(Missing("clang", "C compiler for -target bpf; Debian package clang"))
    else:
        major = parse_clang_major(run(["clang", "--version"]).stdout)
        if major is None or major < MIN_CLANG:
            missing.append(
                Missing(f"clang >= {MIN_CLANG}", f"found {major}; CO-RE needs BTF-defined maps")
            )
    if which("bpftool") is None:
        missing.append(Missing("bpftool", "loads and pins the programs; Debian package bpftool"))
    if not libbpf_header.exists():
        missing.append(Missing(f"libbpf headers {libbpf_header}", "Debian package libbpf-dev"))
    if not btf.exists():
        missing.append(Missing(f"kernel BTF {btf}", "kernel built with CONFIG_DEBUG_INFO_BTF=y"))
    return missing


def kernel_missing(
    which: Callable[[str], str | None] = shutil.which,
    run: Runner = _run,
    mountinfo: Path = Path("/proc/self/mountinfo"),
    filesystems: Path = Path("/proc/filesystems"),
) -> list[Missing]:
    """Kernel features the eBPF arm needs: cgroup v2, bpffs, program and map types."""
    missing: list[Missing] = []
    if not cgroup2_mounts(mountinfo.read_text()):
        missing.append(Missing("cgroup v2", "a cgroup2 mount; cgroup programs attach to it"))
    if "\tbpf\n" not in filesystems.read_text() + "\n":
        missing.append(Missing("bpffs", "filesystem type bpf for pinning; CONFIG_BPF_SYSCALL"))
    if which("bpftool") is None:
        return missing  # reported by toolchain_missing; cannot probe without it
    result = run(["bpftool", "feature", "probe", "kernel", "-j"])
    try:
        probe = json.loads(result.stdout)
    except json.JSONDecodeError:
        missing.append(
            Missing("bpf() syscall", f"bpftool feature probe failed: {result.stderr.strip()}")
        )
        return missing
    missing.extend(missing_from_probe(probe))
    return missing


def require(build: bool = True) -> None:
    """Raise MeshlabError naming every missing feature (toolchain only if we must build)."""
    missing = toolchain_missing() if build else []
    missing += kernel_missing()
    raise_if_missing(missing)
