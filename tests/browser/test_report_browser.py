"""report.html in a real browser: headless Chromium loads it offline, every figure decodes,
the verdict table is rendered, and a full-page screenshot is taken."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path
from typing import get_args

import pytest

from meshlab.analysis.report.report import build
from meshlab.record.spec import Metric
from meshlab.synthetic import SyntheticSpec, write_run

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
# Runs after load: writes what the page really rendered into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({
    alt: i.alt, ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, h: i.naturalHeight}));
  const table = document.getElementById('verdicts');
  const rows = table ? table.querySelectorAll('tbody tr:not(.group)').length : 0;
  const visible = table ? table.getBoundingClientRect().height > 0 : false;
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({imgs, rows, visible});
  document.body.appendChild(out);
});
</script>"""


def _chromium() -> str:
    path = shutil.which("chromium") or CHROMIUM
    if not Path(path).is_file():
        pytest.fail("chromium is not installed: run `make setup` (Debian package chromium)")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fixture run with every figure: raw k6 output, samples, two floods, a rejection."""
    spec = SyntheticSpec(
        seed=4,
        rounds=8,
        samples_per_trial=4000,
        floods=("off", "50x500"),
        reject=((3, "ebpf"),),
    )
    return build(write_run(tmp_path_factory.mktemp("browser"), spec))


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    return subprocess.run(
        [_chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_figure_decodes_and_the_verdict_table_renders(report: Path, tmp_path: Path) -> None:
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    proc = _run(["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"probe did not run; stderr: {proc.stderr[-2000:]}"
    probe = json.loads(unescape(found.group(1)))
    figures = sorted(p.stem for p in (report.parent / "figures").glob("*.png"))
    assert len(probe["imgs"]) == len(figures) == 8  # effects per placement and flood included
    assert "effects" in figures
    broken = [i["alt"] for i in probe["imgs"] if not i["ok"]]
    assert not broken, f"broken images: {broken}"
    assert all(i["w"] >= 800 and i["h"] >= 200 for i in probe["imgs"])
    metrics = len(get_args(Metric))  # every metric gets a row, primary or exploratory
    assert probe["visible"] and probe["rows"] == 2 * metrics  # 2 floods x every metric


def test_full_page_screenshot(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    proc = _run(
        ["--window-size=1400,6000", f"--screenshot={shot}", "--virtual-time-budget=10000",
         report.as_uri()],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 100_000  # a blank page is a few KB
    # keep it next to the report for a human to look at
    shutil.copy(shot, report.parent / "screenshot.png")
