"""A thin ctypes wrapper over bpf(2) for what bpftool does slowly or not at all here.

bpftool loads and pins the objects (it does the CO-RE relocation); everything after that —
map fills and flushes, entry counts, cgroup attach/detach/query with BPF_F_REPLACE for an
atomic arm switch, and sockhash verdict query — is a handful of syscalls, done directly so
the loader neither forks one bpftool per map entry nor parses its output.
Layouts follow `union bpf_attr` in include/uapi/linux/bpf.h; the kernel zero-extends a
shorter attr, so only the fields used are packed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

# enum bpf_cmd
MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_DELETE_ELEM = 3
MAP_GET_NEXT_KEY = 4
OBJ_GET = 7
PROG_ATTACH = 8
PROG_DETACH = 9
PROG_GET_FD_BY_ID = 13
OBJ_GET_INFO_BY_FD = 15
PROG_QUERY = 16

# enum bpf_attach_type (the ones meshlab uses)
CGROUP_SOCK_OPS = 3
SK_MSG_VERDICT = 7
CGROUP_INET4_CONNECT = 10
CGROUP_GETSOCKOPT = 21

ATTACH_TYPE_NAMES = {
    CGROUP_SOCK_OPS: "sock_ops",
    SK_MSG_VERDICT: "msg_verdict",
    CGROUP_INET4_CONNECT: "connect4",
    CGROUP_GETSOCKOPT: "getsockopt",
}

# attach flags
F_ALLOW_MULTI = 1 << 1
F_REPLACE = 1 << 2

MAP_TYPE_PERCPU_ARRAY = 6

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A failed bpf(2) call; errno is kept so callers can treat ENOENT etc. as answers."""


def _sys_bpf_nr() -> int:
    machine = platform.machine()
    if machine not in _SYS_BPF:
        raise BpfError(errno.ENOSYS, f"bpf(2) syscall number unknown for {machine}")
    return _SYS_BPF[machine]


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    ret = _libc.syscall(
        ctypes.c_long(_sys_bpf_nr()),
        ctypes.c_long(cmd),
        ctypes.byref(attr),
        ctypes.c_uint(len(attr)),
    )
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf({what}): {os.strerror(err)}")
    return ret


def _attr(fmt: str, *values: int) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(struct.pack("=" + fmt, *values), struct.calcsize("=" + fmt))


def _addr(buf: ctypes.Array[ctypes.c_char] | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


# --- objects ---------------------------------------------------------------------------------


def obj_get(path: Path) -> int:
    """fd of a pinned map or program (caller closes it)."""
    cpath = ctypes.create_string_buffer(os.fsencode(path))
    return _bpf(OBJ_GET, _attr("QII", _addr(cpath), 0, 0), f"obj_get {path}")


@contextmanager
def pinned(path: Path) -> Iterator[int]:
    fd = obj_get(path)
    try:
        yield fd
    finally:
        os.close(fd)


def prog_fd_by_id(prog_id: int) -> int:
    return _bpf(PROG_GET_FD_BY_ID, _attr("III", prog_id, 0, 0), f"prog_get_fd_by_id {prog_id}")


@dataclass(frozen=True)
class ProgInfo:
    type: int
    id: int
    name: str
    load_time_ns: int  # CLOCK_BOOTTIME at load


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    name: str


def _info(fd: int, size: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    _bpf(OBJ_GET_INFO_BY_FD, _attr("IIQ", fd, size, _addr(buf)), "obj_get_info_by_fd")
    return buf.raw


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def prog_info(fd: int) -> ProgInfo:
    raw = _info(fd, 80)  # through name[16] at offset 64 of struct bpf_prog_info
    ptype, pid = struct.unpack_from("=II", raw, 0)
    (load_time,) = struct.unpack_from("=Q", raw, 40)
    return ProgInfo(ptype, pid, _cstr(raw[64:80]), load_time)


def map_info(fd: int) -> MapInfo:
    raw = _info(fd, 40)  # through name[16] at offset 24 of struct bpf_map_info
    mtype, mid, ksz, vsz, maxe, _flags = struct.unpack_from("=6I", raw, 0)
    return MapInfo(mtype, mid, ksz, vsz, maxe, _cstr(raw[24:40]))


# --- maps ------------------------------------------------------------------------------------


def possible_cpus() -> int:
    """Number of possible CPUs (per-CPU map values have one slot each)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def map_keys(fd: int, key_size: int) -> list[bytes]:
    keys: list[bytes] = []
    cur: ctypes.Array[ctypes.c_char] | None = None
    while True:
        nxt = ctypes.create_string_buffer(key_size)
        try:
            _bpf(MAP_GET_NEXT_KEY, _attr("IIQQ", fd, 0, _addr(cur), _addr(nxt)), "get_next_key")
        except BpfError as err:
            if err.errno == errno.ENOENT:
                return keys
            raise
        keys.append(nxt.raw)
        cur = nxt


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    try:
        _bpf(MAP_LOOKUP_ELEM, _attr("IIQQQ", fd, 0, _addr(k), _addr(v), 0), "map_lookup_elem")
    except BpfError as err:
        if err.errno == errno.ENOENT:
            return None
        raise
    return v.raw


def map_update(fd: int, key: bytes, value: bytes) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    _bpf(MAP_UPDATE_ELEM, _attr("IIQQQ", fd, 0, _addr(k), _addr(v), 0), "map_update_elem")


def map_delete(fd: int, key: bytes) -> bool:
    """Delete one entry; False if it was already gone."""
    k = ctypes.create_string_buffer(key, len(key))
    try:
        _bpf(MAP_DELETE_ELEM, _attr("IIQ", fd, 0, _addr(k)), "map_delete_elem")
    except BpfError as err:
        if err.errno == errno.ENOENT:
            return False
        raise
    return True


# --- attachments -----------------------------------------------------------------------------


def prog_query(target_fd: int, attach_type: int) -> list[int]:
    """Ids of programs attached directly to a cgroup / sockmap for one attach type."""
    ids = (ctypes.c_uint32 * 64)()
    attr = _attr("IIIIQI", target_fd, attach_type, 0, 0, ctypes.addressof(ids), len(ids))
    _bpf(PROG_QUERY, attr, f"prog_query {ATTACH_TYPE_NAMES.get(attach_type, attach_type)}")
    (count,) = struct.unpack_from("=I", attr.raw, 24)
    return list(ids[: min(count, len(ids))])


def prog_attach(
    target_fd: int, prog_fd: int, attach_type: int, flags: int = 0, replace_fd: int = 0
) -> None:
    attr = _attr("IIIII", target_fd, prog_fd, attach_type, flags, replace_fd)
    _bpf(PROG_ATTACH, attr, f"prog_attach {ATTACH_TYPE_NAMES.get(attach_type, attach_type)}")


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    attr = _attr("IIIII", target_fd, prog_fd, attach_type, 0, 0)
    _bpf(PROG_DETACH, attr, f"prog_detach {ATTACH_TYPE_NAMES.get(attach_type, attach_type)}")


@contextmanager
def opened_dir(path: Path) -> Iterator[int]:
    """A cgroup directory fd, the attach target for cgroup programs."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)
