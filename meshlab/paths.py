"""Where the project's files are (meshlab runs from its checkout, installed editable)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLAYBOOKS = REPO / "playbooks"
EXPERIMENTS = REPO / "experiments"
RESULTS = REPO / "results"
SCRATCH = REPO / ".meshlab"  # ansible-runner's private data dir and other throwaway state
VENV_BIN = Path(sys.prefix) / "bin"
