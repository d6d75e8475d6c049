"""Read an SMP export back: every SMP file parsed by the pinned schema's message classes (unknown
fields refused), the extension checked for its format, and each embedded trial.json validated by
the run format's own model. What a tool that imports meshlab's export can rely on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from meshlab.errors import MeshlabError
from meshlab.export import extension as ext
from meshlab.export import schema, smp
from meshlab.record.format import TrialRecord
from meshlab.record.spec import validate_named


@dataclass(frozen=True)
class ExportedResult:
    name: str  # <load point>.<flood>.<placement>.<arm>
    messages: dict[str, Message]  # file name -> parsed SMP message
    extension: dict[str, Any]
    records: list[TrialRecord]  # the extension's trials, as the run format reads them

    @property
    def result(self) -> Message:
        return self.messages["result.json"]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MeshlabError(f"{path}: missing") from None
    except ValueError as err:
        raise MeshlabError(f"{path}: not valid JSON ({err})") from None


def read_smp(export_dir: Path | str) -> list[ExportedResult]:
    export_dir = Path(export_dir)
    index = _json(export_dir / "index.json")
    if index.get("export") != "smp":
        raise MeshlabError(f"{export_dir}/index.json: not an SMP export")
    sch = schema.load(index["smp"]["tag"])
    out = []
    for entry in index["results"]:
        rdir = export_dir / entry["name"]
        messages = {
            name: sch.parse(message, _json(rdir / name), str(rdir / name))
            for name, message in smp.FILES.items()
        }
        path = rdir / messages["result.json"].details_uri  # type: ignore[attr-defined]
        doc = _json(path)
        if doc.get("format") != ext.FORMAT or doc.get("version") != ext.VERSION:
            raise MeshlabError(f"{path}: not a {ext.FORMAT} version {ext.VERSION} document")
        records = [
            validate_named(TrialRecord, t["record"], f"{path}: trials[{i}].record")
            for i, t in enumerate(doc["trials"])
        ]
        out.append(ExportedResult(entry["name"], messages, doc, records))
    return out
