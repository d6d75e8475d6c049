"""Progress as people read it: one line per engine message (the CLI prints them; the run's
progress.log holds them for `tail -f` under a plain ansible-playbook)."""

from __future__ import annotations

import time
from typing import Any

from meshlab.experiment.protocol import (
    NextStep,
    Planned,
    RunClosed,
    SegmentEnd,
    StepResult,
    TrialLine,
    Waiting,
)


def of_total(total: int, reruns: int) -> str:
    """'16', or '17 (1 re-run)' once a rejected trial has been queued again."""
    return f"{total}" + (f" ({reruns} re-run{'s' if reruns > 1 else ''})" if reruns else "")


def trial_line(position: int, total: int, t: TrialLine, so_far: list[str], reruns: int = 0) -> str:
    """One finished trial: 'trial 3/16 ebpf r02: p50 0.612 ms, steal max 0.0 %, valid | ...'."""
    p50 = f"{t.p50_ms:.3f} ms" if t.p50_ms is not None else "-"
    verdict = t.status if t.status == "valid" else f"REJECTED ({'; '.join(t.reasons)})"
    block = f" [{t.block}]" if t.block else ""
    line = (
        f"trial {position}/{of_total(total, reruns)} {t.arm} r{t.round:02d}{block}: "
        f"p50 {p50}, steal max {t.steal_max_percent:.1f} %, {verdict}"
    )
    return line + (f" | so far: {'; '.join(so_far)}" if so_far else "")


def share(msg: StepResult) -> str:
    """' | measuring 61 % of 7.2 min' (the run's wall time inside measured windows)."""
    if msg.measuring_share is None or msg.wall_s is None:
        return ""
    gap = f", {msg.overhead_s:.1f} s between windows" if msg.overhead_s is not None else ""
    return f" | measuring {100 * msg.measuring_share:.0f} % of {msg.wall_s / 60:.1f} min{gap}"


def line(msg: Any) -> str:
    stamp = time.strftime("%H:%M:%S")
    if isinstance(msg, Planned):
        return f"[{stamp}] run {msg.run_dir}: {msg.planned} trials planned, {msg.done} done"
    if isinstance(msg, NextStep):
        if msg.done:
            early = (
                f" (stopping rule met for {', '.join(msg.stopped_early)})"
                if msg.stopped_early
                else ""
            )
            return f"[{stamp}] plan done: {msg.reason}{early}"
        return f"[{stamp}] trial {msg.position}/{of_total(msg.total, msg.reruns)} {msg.label}"
    if isinstance(msg, StepResult):
        lines = [
            trial_line(msg.done - len(msg.trials) + i + 1, msg.total, t, msg.so_far, msg.reruns)
            for i, t in enumerate(msg.trials)
        ]
        lines[-1] += share(msg)
        return "\n".join(f"[{stamp}] {x}" for x in lines)
    if isinstance(msg, Waiting):
        return (
            f"[{stamp}] waiting for a quiet host: {msg.reason}, {msg.waited_s:.0f} s "
            f"(noise budget left {msg.budget_left_s / 60:.1f} min)"
        )
    if isinstance(msg, SegmentEnd):
        if msg.reason == "block-change":
            return f"[{stamp}] next block: {msg.placement}, flood {msg.flood}"
        return f"[{stamp}] {msg.detail or msg.reason}"
    if isinstance(msg, RunClosed):
        return f"[{stamp}] {msg.status}: {msg.answer}"
    return ""
