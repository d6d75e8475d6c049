#!/usr/bin/python3
"""Keep IRQs on the housekeeping CPUs and set the cpufreq governor; write a JSON report.

Installed by the node_prep role and run once per boot by meshlab-cpu-tuning.service. Standard
library only (runs with Debian's python3). Some IRQs (per-CPU or managed ones) refuse a new
affinity; they are counted, not treated as errors, because the kernel owns them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def parse_cpulist(text: str) -> list[int]:
    """Parse kernel cpulist syntax ("0", "0-2,5") into sorted CPU numbers."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return sorted(cpus)


def cpulist_to_mask(cpus: list[int]) -> str:
    """Hex mask in /proc/irq/default_smp_affinity format (32-bit groups, comma separated)."""
    value = 0
    for cpu in cpus:
        value |= 1 << cpu
    groups = []
    while True:
        groups.append(f"{value & 0xFFFFFFFF:08x}")
        value >>= 32
        if value == 0:
            break
    return ",".join(reversed(groups))


def steer_irqs(proc_irq: Path, cpulist: str) -> dict[str, int]:
    moved = refused = 0
    for entry in sorted(proc_irq.iterdir()):
        target = entry / "smp_affinity_list"
        if not entry.name.isdigit() or not target.exists():
            continue
        try:
            if target.read_text().strip() != cpulist:
                target.write_text(cpulist)
            moved += 1
        except OSError:
            refused += 1
    return {"irqs_on_housekeeping": moved, "irqs_refused": refused}


def set_governor(cpu_root: Path, governor: str) -> dict[str, object]:
    found = set_count = 0
    for gov in sorted(cpu_root.glob("cpu[0-9]*/cpufreq/scaling_governor")):
        found += 1
        available = (gov.parent / "scaling_available_governors").read_text().split()
        if governor in available:
            if gov.read_text().strip() != governor:
                gov.write_text(governor)
            set_count += 1
    return {"cpufreq_exposed": found > 0, "cpus_with_governor": set_count, "governor": governor}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--housekeeping-cpus", required=True)
    parser.add_argument("--governor", default="performance")
    parser.add_argument("--report", required=True)
    parser.add_argument("--proc", default="/proc")
    parser.add_argument("--sys-cpu", default="/sys/devices/system/cpu")
    args = parser.parse_args(argv)

    cpus = parse_cpulist(args.housekeeping_cpus)
    cpulist = ",".join(str(c) for c in cpus)
    proc_irq = Path(args.proc) / "irq"
    report: dict[str, object] = {"housekeeping_cpus": cpulist}
    default_affinity = proc_irq / "default_smp_affinity"
    try:
        default_affinity.write_text(cpulist_to_mask(cpus))
        report["default_affinity_set"] = True
    except OSError:
        report["default_affinity_set"] = False
    report.update(steer_irqs(proc_irq, cpulist))
    report.update(set_governor(Path(args.sys_cpu), args.governor))

    out = Path(args.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, sort_keys=True) + "\n")
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
