"""The sockops/sk_msg splice of the ebpf arm: the sk_msg verdict on the sockhash, the switch
that turns splicing on and off (ml_config), and draining the sockhash before sockets leave it
(the kernel drops what is still queued on a socket that leaves the map)."""

from __future__ import annotations

import errno
import time

from meshlab.ebpf import bpfsys, layouts
from meshlab.ebpf.bpfsys import BpfError
from meshlab.ebpf.pins import SOCKHASH, Pins

# How long readers get to consume data already redirected onto their ingress lists before the
# sockhash is emptied (the kernel discards what is still queued when a socket leaves it).
DRAIN_SECONDS = 0.25


def _splice_on_safe(pins: Pins) -> bool:
    return pins.map("ml_config").exists() and _splice_on(pins)


def _verdict_attached(pins: Pins) -> bool:
    if not (pins.map(SOCKHASH).exists() and pins.prog("ml_redir").exists()):
        return False
    with bpfsys.pinned(pins.map(SOCKHASH)) as map_fd, bpfsys.pinned(pins.prog("ml_redir")) as pfd:
        try:
            return bpfsys.prog_info(pfd).id in bpfsys.prog_query(map_fd, bpfsys.SK_MSG_VERDICT)
        except BpfError as err:
            if err.errno != errno.EINVAL:
                raise
            # Kernels before 6.0 cannot query a sockmap's programs. Report "not attached":
            # attaching again is harmless, and the verdict goes with the map on teardown.
            return False


def _attach_verdict(pins: Pins) -> None:
    if _verdict_attached(pins):
        return
    with bpfsys.pinned(pins.map(SOCKHASH)) as map_fd, bpfsys.pinned(pins.prog("ml_redir")) as pfd:
        bpfsys.prog_attach(map_fd, pfd, bpfsys.SK_MSG_VERDICT)


def _detach_verdict(pins: Pins) -> bool:
    try:
        if not _verdict_attached(pins):
            return False
        with (
            bpfsys.pinned(pins.map(SOCKHASH)) as map_fd,
            bpfsys.pinned(pins.prog("ml_redir")) as pfd,
        ):
            bpfsys.prog_detach(map_fd, pfd, bpfsys.SK_MSG_VERDICT)
    except BpfError as err:
        if err.errno == errno.ENOENT:
            return False
        raise
    return True


def _flush_sockhash(pins: Pins) -> int:
    with bpfsys.pinned(pins.map(SOCKHASH)) as fd:
        return sum(bpfsys.map_delete(fd, k) for k in bpfsys.map_keys(fd, layouts.Pair.SIZE))


def _splice_on(pins: Pins) -> bool:
    with bpfsys.pinned(pins.map("ml_config")) as fd:
        raw = bpfsys.map_lookup(fd, layouts.u32(0), 4)
    return bool(raw) and raw != b"\0" * 4


def _set_splice(pins: Pins, on: bool) -> None:
    with bpfsys.pinned(pins.map("ml_config")) as fd:
        bpfsys.map_update(fd, layouts.u32(0), layouts.u32(1 if on else 0))


def _unsplice(pins: Pins) -> int:
    """Take every connection off the stack bypass without losing or reordering a byte.

    1. splice off: the verdict stops redirecting (writes take the TCP path, which the
       reader consumes after what is already on its ingress list) and sockops stops
       inserting; 2. wait for readers to drain their ingress lists; 3. empty the sockhash.
    Returns the number of sockets removed.
    """
    if not (pins.map("ml_config").exists() and pins.map(SOCKHASH).exists()):
        return 0
    was_on = _splice_on(pins)
    _set_splice(pins, False)
    if was_on:
        time.sleep(DRAIN_SECONDS)
    return _flush_sockhash(pins)


def _enable_splice(pins: Pins) -> None:
    """Splice on, but only over an empty sockhash: a connection that ever used the TCP path
    while in the map must never start redirecting (later bytes could overtake earlier ones)."""
    if _splice_on(pins):
        return
    _flush_sockhash(pins)  # sockets that could only have been inserted before a drain
    _set_splice(pins, True)


def _sockhash_entries(pins: Pins) -> int:
    with bpfsys.pinned(pins.map(SOCKHASH)) as fd:
        return len(bpfsys.map_keys(fd, layouts.Pair.SIZE))
