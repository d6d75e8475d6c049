"""Flood sizes (`PODSxSERVICES`); where their fake endpoints and VIPs live is the local
testbed's topology (meshlab/testbeds/local/topology.yml).

A flood travels through the code as a `Flood` (typed), and through files and command lines
as its label, `off` or `50x500`: `parse_flood` and `str()` are the only two conversions."""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshlab.errors import MeshlabError

MAX_PODS = 32_000
MAX_SERVICES = 60_000

_PXS = re.compile(r"^(\d+)x(\d+)$")


@dataclass(frozen=True)
class Flood:
    """P endpoint pods x S services, every service selecting every pod (the thesis' flooder)."""

    pods: int
    services: int

    @property
    def off(self) -> bool:
        return self.pods == 0 and self.services == 0

    def __str__(self) -> str:
        return "off" if self.off else f"{self.pods}x{self.services}"

    @property
    def size(self) -> int:
        """Endpoints x services: what sorts floods from small to large ('off' = 0)."""
        return self.pods * self.services

    def as_dict(self) -> dict[str, int | str]:
        """The form command lines and playbooks read: label, pods, services."""
        return {"label": str(self), "pods": self.pods, "services": self.services}


OFF = Flood(0, 0)


def parse_flood(text: str | Flood, *, field: str | None = "--flood") -> Flood:
    """Parse `PODSxSERVICES` (e.g. `50x500`) or `off`; errors name the field (unless `field`
    is None: a schema validator names it itself) and the form."""
    if isinstance(text, Flood):
        return text
    value = str(text).strip().lower()
    where = f"{field}: " if field else ""
    if value in ("off", "0x0", "none"):
        return OFF
    m = _PXS.match(value)
    if not m:
        raise MeshlabError(
            f"{where}{text!r} is not a flood size; expected PODSxSERVICES such as 50x500, or off"
        )
    pods, services = int(m.group(1)), int(m.group(2))
    if pods < 1 or services < 1:
        raise MeshlabError(
            f"{where}{text!r} needs at least 1 pod and 1 service (e.g. 50x500), or use off"
        )
    if pods > MAX_PODS or services > MAX_SERVICES:
        raise MeshlabError(
            f"{where}{text!r} is too large; at most {MAX_PODS} pods and {MAX_SERVICES} services"
        )
    return Flood(pods, services)
