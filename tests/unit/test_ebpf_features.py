"""meshlab/ebpf/features.py: missing kernel/toolchain features are named in one error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from meshlab.ebpf import features
from meshlab.errors import MeshlabError

FULL_PROBE = {
    "program_types": {key: True for key, _f, _w in features.PROG_TYPES},
    "map_types": {key: True for key, _f, _w in features.MAP_TYPES},
}

MOUNTINFO = """\
25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
40 33 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
41 33 0:36 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
50 25 0:40 / /sys/fs/bpf rw,relatime - bpf bpf rw
51 25 0:41 / /mnt/with\\040space rw - cgroup2 cgroup2 rw
"""


def test_full_probe_misses_nothing() -> None:
    assert features.missing_from_probe(FULL_PROBE) == []


def test_probe_without_sk_msg_names_it() -> None:
    probe = {**FULL_PROBE, "program_types": {**FULL_PROBE["program_types"]}}
    probe["program_types"]["have_sk_msg_prog_type"] = False
    missing = features.missing_from_probe(probe)
    assert [m.feature for m in missing] == ["kernel program type sk_msg"]
    assert "sockhash stack bypass" in str(missing[0])


def test_empty_probe_names_every_type() -> None:
    missing = features.missing_from_probe({})
    assert len(missing) == len(features.PROG_TYPES) + len(features.MAP_TYPES)
    message = features.format_missing(missing)
    assert message.startswith("eBPF arm unavailable: missing kernel program type")
    assert "map type sockhash" in message


def test_mountinfo_parsing() -> None:
    assert features.cgroup2_mounts(MOUNTINFO) == [
        Path("/sys/fs/cgroup/unified"),
        Path("/mnt/with space"),
    ]
    assert features.fs_mounts(MOUNTINFO, "bpf") == [Path("/sys/fs/bpf")]
    assert features.cgroup2_mounts("") == []


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ("Debian clang version 14.0.6\nTarget: x86_64-pc-linux-gnu", 14),
        ("clang version 9.0.1-12", 9),
        ("gcc (Debian 12.2.0-14) 12.2.0", None),
    ],
)
def test_clang_version(text: str, major: int | None) -> None:
    assert features.parse_clang_major(text) == major


def _fake_run(stdout: str):
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 0, stdout, "")

    return run


def test_toolchain_missing_names_clang_and_bpftool(tmp_path: Path) -> None:
    btf = tmp_path / "vmlinux"
    header = tmp_path / "bpf_helpers.h"
    btf.touch()
    header.touch()
    missing = features.toolchain_missing(
        which=lambda _name: None, run=_fake_run(""), btf=btf, libbpf_header=header
    )
    assert [m.feature for m in missing] == ["clang", "bpftool"]
    with pytest.raises(MeshlabError, match=r"missing clang .*; missing bpftool"):
        features.raise_if_missing(missing)


def test_toolchain_old_clang_and_no_btf(tmp_path: Path) -> None:
    missing = features.toolchain_missing(
        which=lambda name: f"/usr/bin/{name}",
        run=_fake_run("clang version 9.0.1"),
        btf=tmp_path / "absent",
        libbpf_header=tmp_path / "absent.h",
    )
    names = [m.feature for m in missing]
    assert names[0] == f"clang >= {features.MIN_CLANG}"
    assert any("libbpf headers" in n for n in names)
    assert any(n.startswith("kernel BTF") for n in names)


def test_kernel_missing_cgroup2_and_bpffs(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO.replace("cgroup2", "cgroup"))
    filesystems = tmp_path / "filesystems"
    filesystems.write_text("nodev\tsysfs\nnodev\tcgroup2\n")
    missing = features.kernel_missing(
        which=lambda _n: None, mountinfo=mountinfo, filesystems=filesystems
    )
    assert [m.feature for m in missing] == ["cgroup v2", "bpffs"]


def test_kernel_missing_reads_the_probe(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(MOUNTINFO)
    filesystems = tmp_path / "filesystems"
    filesystems.write_text("nodev\tbpf\n")
    probe = '{"program_types": {}, "map_types": {}}'
    missing = features.kernel_missing(
        which=lambda n: n, run=_fake_run(probe), mountinfo=mountinfo, filesystems=filesystems
    )
    assert "kernel program type cgroup_sockopt" in [m.feature for m in missing]
    broken = features.kernel_missing(
        which=lambda n: n, run=_fake_run("not json"), mountinfo=mountinfo, filesystems=filesystems
    )
    assert [m.feature for m in broken] == ["bpf() syscall"]


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        (
            "libbpf: prog 'ml_connect4': BPF program load failed: Invalid argument\n"
            "unknown func bpf_get_current_ancestor_cgroup_id#123\n",
            "missing kernel BPF helper bpf_get_current_ancestor_cgroup_id (the kernel rejected "
            "mb_connect)",
        ),
        (
            "program of this type cannot use helper bpf_bind#64\n",
            "missing kernel BPF helper bpf_bind",
        ),
        ("libbpf: failed to find BTF for kernel\n", "missing kernel BTF"),
        ("something odd\nError: failed to load object file\n", "rejected mb_connect: something"),
    ],
)
def test_load_errors_name_the_feature(stderr: str, expected: str) -> None:
    message = features.explain_load_error("mb_connect", stderr)
    assert message.startswith("eBPF arm unavailable")
    assert expected in message
