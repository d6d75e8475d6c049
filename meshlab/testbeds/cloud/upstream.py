"""Facts about the pinned upstream versions, as recorded with their source.

Each file in FACTS_DIR names one upstream repository, its tag (and commit) and, per fact, the path
the value was read from. Code and tests look facts up by name, so a value without a source cannot
be used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

FACTS_DIR = Path(__file__).resolve().parent / "facts"


@dataclass(frozen=True)
class Fact:
    project: str
    repository: str
    tag: str
    path: str
    value: Any

    def source(self) -> str:
        return f"{self.repository}@{self.tag}:{self.path}"


@cache
def _load(project: str) -> dict[str, Any]:
    matches = sorted(FACTS_DIR.glob(f"{project}-*.yml"))
    if len(matches) != 1:
        raise LookupError(f"expected one facts file for {project} in {FACTS_DIR}, got {matches}")
    return yaml.safe_load(matches[0].read_text())


def fact(project: str, name: str) -> Fact:
    doc = _load(project)
    entry = doc["facts"][name]
    return Fact(project, doc["repository"], str(doc["tag"]), entry["path"], entry["value"])


def value(project: str, name: str) -> Any:
    return fact(project, name).value
