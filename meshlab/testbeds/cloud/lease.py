"""One run at a time on the cloud lab too: a `coordination.k8s.io/v1` Lease in the experiment
namespace names the run that holds the cluster. Two operators sharing one lab cannot interleave
trials: the second run's first step is refused, naming the holder, until the holder releases
it or stops renewing it (it renews before every step).

The decision is here (testable offline); playbooks/experiment_trials.yml reads the Lease with
kubectl, asks `meshlab engine cluster-lease`, and applies the manifest it prints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from meshlab.errors import MeshlabError

NAME = "meshlab-testbed"
DURATION_S = 1800  # a step (flood settle included) renews well within this


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # a MicroTime


def decide(
    current: dict[str, Any] | None,
    holder: str,
    namespace: str,
    now: datetime | None = None,
    release: bool = False,
) -> dict[str, Any] | None:
    """The Lease to apply for `holder` (acquire, renew, take over an expired one), None to
    delete it (release by its holder), or MeshlabError naming the live holder."""
    now = now or datetime.now(UTC)
    spec = (current or {}).get("spec") or {}
    other = spec.get("holderIdentity")
    renewed = _time(spec.get("renewTime")) or _time(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or DURATION_S)
    live = other and renewed is not None and now < renewed + timedelta(seconds=duration)
    if release:
        if other == holder:
            return None
        raise MeshlabError(f"cluster lease: {holder} does not hold it (held by {other})")
    if live and other != holder:
        since = _time(spec.get("acquireTime")) or renewed
        raise MeshlabError(
            f"testbed busy: {other} holds Lease {namespace}/{NAME} since "
            f"{since:%H:%M} UTC (renewed {renewed:%H:%M:%S} UTC, expires after "
            f"{duration} s without renewal)"
        )
    transitions = int(spec.get("leaseTransitions") or 0) + (0 if other in (None, holder) else 1)
    acquired = spec.get("acquireTime") if other == holder else _stamp(now)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": DURATION_S,
            "acquireTime": acquired,
            "renewTime": _stamp(now),
            "leaseTransitions": transitions,
        },
    }
