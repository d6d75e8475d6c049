"""The program pulumi runs (Pulumi.yaml `main: infra/`): config, then resources, then outputs."""

import sys
from pathlib import Path

# Pulumi runs this directory with runpy, which puts infra/ itself on sys.path; the `infra.*`
# imports (the same ones the tests use) need the repository root instead.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra import config, lab

lab.export(lab.build(config.load()))
