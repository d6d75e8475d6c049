"""Noise models for the calibration: paired log-ratios with a known truth, shaped like the noise
measured on this project's host kind (2-vCPU shared VMs; issue 19 and docs/methodology.md).

A simulated trial's log metric is the arm's effect, plus the host's slowness H_t times the
metric's loading, plus noise of the metric's own. H_t has two parts:
- a quiet wobble, heavier-tailed than normal (t(4)), that makes up `host_share` of each metric's
  quiet variance (issue 19: within an arm, log p50 and node CPU follow k6's CPU per request at
  r = 0.88-0.99, so the host's speed is most of the spread);
- storms: the host switches between a quiet and a slow state (a two-state Markov chain in
  continuous time, mean storm `dwell_s`, `share` of the time in storms), and a trial's slowdown is
  `slowdown` x the fraction of its window spent in a storm (issue 19, run 3: each arm's per-trial
  p50 jumped between two levels, ~20 % apart, from one trial to the next).
With `hits="random"` the host's state does not know which arm runs (the order within a round is
randomised, as RMIT does); with `hits="arm"` storms strike only the arm's own trials, a
systematic disturbance no statistic can tell from an effect.

Trial length. The quiet per-trial variance has a part that averages out within the window (k6's
gaps, sampling, second-scale wobble: variance ∝ 1/T) and a part that does not (slower level
shifts): `averaging_share` of it averages out at the 15-s reference trial. Storms act through
time: a shorter trial puts a pair's two trials closer together, so fewer pairs straddle a jump.

Outlier rounds: with probability `outlier_p` a round's three log-ratios move by
±`outlier_scale` x their quiet sd (the aa-duet round that ran +64 % on one CPU); a host-speed
probe does not see them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

METRICS = ("p50 latency", "node CPU", "sidecar CPU")
SDS = (0.02, 0.013, 0.015)  # quiet paired log-ratio sd per round at 15-s trials (A/A runs)
# How much each metric moves with the host's slowness, relative to p50 (issue 19: the pairs'
# log-ratio sds 0.129 / 0.091 / 0.107 under storms; the quiet sds above: 0.65 / 0.75).
LOADINGS = (1.0, 0.7, 0.8)
REFERENCE_S = 15.0


@dataclass(frozen=True)
class Storms:
    slowdown: float = 0.2  # log slowdown of p50 while the host is in a storm
    share: float = 0.3  # long-run fraction of time in a storm
    dwell_s: float = 60.0  # mean length of a storm
    hits: Literal["random", "arm"] = "random"


@dataclass(frozen=True)
class Timing:
    duration_s: float = REFERENCE_S  # the measured window
    overhead_s: float = 25.0  # per trial outside its window (issue 19: 37-41 s for 15 s measured)

    @property
    def slot_s(self) -> float:
        return self.duration_s + self.overhead_s


@dataclass(frozen=True)
class Noise:
    name: str = "quiet"
    sds: tuple[float, float, float] = SDS
    host_share: float = 0.8
    df: float = 4.0
    outlier_p: float = 0.03
    outlier_scale: float = 10.0
    storms: Storms | None = None
    averaging_share: float = 0.5


QUIET = Noise()
TODAY = Timing()


@dataclass(frozen=True)
class Draw:
    d: np.ndarray  # (simulations, 3, rounds) paired log-ratios ln(B/A)
    host: np.ndarray  # (simulations, rounds) the host-slowness log-ratio H_B - H_A (p50 units)


def _t(rng: np.random.Generator, df: float, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-variance t(df) draws (df = inf: normal)."""
    if math.isinf(df):
        return rng.standard_normal(shape)
    return rng.standard_t(df, shape) / math.sqrt(df / (df - 2))


def storm_exposure(
    rng: np.random.Generator, storms: Storms, timing: Timing, simulations: int, trials: int
) -> np.ndarray:
    """(simulations, trials): the fraction of each trial's window the host spent in a storm.
    Trials run back to back, one slot each (overhead first, then the window); the chain steps
    once a second from its stationary distribution."""
    leave = 1.0 - math.exp(-1.0 / storms.dwell_s)
    share = min(max(storms.share, 0.0), 0.999)
    enter = 1.0 - math.exp(-share / (1.0 - share) / storms.dwell_s)
    slot = max(1, round(timing.slot_s))
    window = max(1, round(timing.duration_s))
    state = rng.random(simulations) < share
    busy = np.empty((simulations, trials * slot), dtype=bool)
    for second in range(trials * slot):
        u = rng.random(simulations)
        state = np.where(state, u >= leave, u < enter)
        busy[:, second] = state
    per_trial = busy.reshape(simulations, trials, slot)[:, :, slot - window :]
    return per_trial.mean(axis=2)


def quiet_scale(noise: Noise, timing: Timing) -> float:
    """How the quiet per-trial sd scales with the window length (1 at the 15-s reference)."""
    a = noise.averaging_share
    return math.sqrt(a * REFERENCE_S / timing.duration_s + (1.0 - a))


def draw(
    rng: np.random.Generator,
    simulations: int,
    rounds: int,
    effects: tuple[float, float, float] = (0.0, 0.0, 0.0),
    noise: Noise = QUIET,
    timing: Timing = TODAY,
) -> Draw:
    """Paired log-ratios of `rounds` rounds per simulation; `effects` are the arm's true
    changes (fractions: -0.12 is 12 % lower)."""
    s, r = simulations, rounds
    trial_sd = np.array(noise.sds) / math.sqrt(2.0) * quiet_scale(noise, timing)
    load = np.array(LOADINGS)
    host_sd = math.sqrt(noise.host_share) * trial_sd[0]
    own_sd = np.sqrt(np.maximum(trial_sd**2 - (load * host_sd) ** 2, 0.0))
    # per trial: [:, :, 0] is arm A's trial of the round, [:, :, 1] arm B's
    host = host_sd * _t(rng, noise.df, (s, r, 2))
    if noise.storms is not None:
        st = noise.storms
        exposure = storm_exposure(rng, st, timing, s, 2 * r).reshape(s, r, 2)
        b_first = rng.random((s, r)) < 0.5  # the order within each round is randomised
        exposure = np.where(b_first[:, :, None], exposure[:, :, ::-1], exposure)
        if st.hits == "arm":
            exposure[:, :, 0] = 0.0
        host = host + st.slowdown * exposure
    own = own_sd[None, :, None, None] * _t(rng, noise.df, (s, 3, r, 2))
    trial = load[None, :, None, None] * host[:, None, :, :] + own
    d = trial[..., 1] - trial[..., 0]
    sd = np.array(noise.sds)[None, :, None]
    hit = rng.random((s, 1, r)) < noise.outlier_p
    d = d + hit * noise.outlier_scale * sd * rng.choice([-1.0, 1.0], (s, 1, r))
    d = d + np.log1p(np.array(effects))[None, :, None]
    return Draw(d=d, host=host[:, :, 1] - host[:, :, 0])
