"""The SMP message classes, built at run time from the schema facts (facts/smp-<tag>.yml).

The Service Mesh Performance .proto files are upstream code and are not copied into meshlab:
their facts (names, numbers, types, labels) are kept as data, turned into FileDescriptorProtos
here, and compiled by protobuf's own descriptor pool into message classes. Every exported
document goes through `validate`, i.e. `json_format.ParseDict(..., ignore_unknown_fields=False)`:
an unknown field, a wrong type or an int64 that is not integral is an error naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    timestamp_pb2,
)
from google.protobuf.message import Message

from meshlab.errors import MeshlabError

FACTS_DIR = Path(__file__).resolve().parent / "facts"
TAG = "v0.6.1"  # the pinned SMP release (facts/smp-v0.6.1.yml)
TIMESTAMP = "google.protobuf.Timestamp"

_F = descriptor_pb2.FieldDescriptorProto
SCALARS: dict[str, int] = {
    "double": _F.TYPE_DOUBLE, "float": _F.TYPE_FLOAT, "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32, "uint64": _F.TYPE_UINT64,
    "sint32": _F.TYPE_SINT32, "sint64": _F.TYPE_SINT64, "fixed32": _F.TYPE_FIXED32,
    "fixed64": _F.TYPE_FIXED64, "sfixed32": _F.TYPE_SFIXED32, "sfixed64": _F.TYPE_SFIXED64,
    "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES,
}  # fmt: skip
# proto3 map keys: any integral or string scalar (not floating point, bytes, enums, messages)
MAP_KEYS = {k for k in SCALARS if k not in ("double", "float", "bytes")}
_MAP = re.compile(r"^map<\s*(\w+)\s*,\s*([\w.]+)\s*>$")
_LABELS = {"optional": _F.LABEL_OPTIONAL, "repeated": _F.LABEL_REPEATED}


@dataclass(frozen=True)
class Schema:
    """The facts file and the message classes compiled from it."""

    facts: dict[str, Any]
    source: Path
    pool: descriptor_pool.DescriptorPool

    @property
    def tag(self) -> str:
        return str(self.facts["tag"])

    @property
    def package(self) -> str:
        return str(self.facts["package"])

    def message_class(self, name: str) -> type[Message]:
        """`PerformanceTestResult`, `PerformanceTestResult.CPU`, ... (package implied)."""
        full = name if name.startswith(self.package + ".") else f"{self.package}.{name}"
        try:
            desc = self.pool.FindMessageTypeByName(full)
        except KeyError:
            raise MeshlabError(f"{self.source}: no message {full}") from None
        return message_factory.GetMessageClass(desc)

    def parse(self, name: str, doc: dict[str, Any], where: str) -> Message:
        """The message `name` from its JSON form; MeshlabError naming `where` if it is not one."""
        try:
            return json_format.ParseDict(
                doc, self.message_class(name)(), ignore_unknown_fields=False
            )
        except json_format.ParseError as err:
            raise MeshlabError(f"{where}: not a valid smp.{name} ({err})") from None

    def validate(self, name: str, doc: dict[str, Any], where: str) -> dict[str, Any]:
        """Parse, then print back in proto3 JSON (proto field names; int64 as strings, as the
        proto3 JSON mapping writes them): what is written is exactly what SMP holds."""
        msg = self.parse(name, doc, where)
        return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def facts_path(tag: str = TAG) -> Path:
    return FACTS_DIR / f"smp-{tag}.yml"


@cache
def load(tag: str = TAG) -> Schema:
    path = facts_path(tag)
    try:
        facts = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MeshlabError(f"{path}: no SMP schema facts for {tag}") from None
    pool = descriptor_pool.DescriptorPool()
    wkt = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(wkt)  # the one import SMP takes from protobuf
    pool.Add(wkt)
    for file_proto in file_protos(facts, str(path)):
        try:
            pool.Add(file_proto)
        except (TypeError, KeyError) as err:  # protobuf's own checks of the descriptors
            raise MeshlabError(f"{path}: {file_proto.name}: {err}") from None
    return Schema(facts, path, pool)


def file_protos(facts: dict[str, Any], source: str) -> list[descriptor_pb2.FileDescriptorProto]:
    """FileDescriptorProtos of every file in the facts, dependencies first (facts order)."""
    package = str(facts["package"])
    files = facts["files"]
    symbols = _symbols(package, files)
    out = []
    for path, f in files.items():
        fdp = descriptor_pb2.FileDescriptorProto(
            name=path, package=package, syntax=str(facts["syntax"]), dependency=f["imports"]
        )
        for name, msg in f["messages"].items():
            fdp.message_type.append(
                _message(name, msg, f"{package}.{name}", symbols, f"{source}: {path}")
            )
        out.append(fdp)
    return out


def _symbols(package: str, files: dict[str, Any]) -> dict[str, str]:
    """Full name -> "message" | "enum" for every type the facts declare (and Timestamp)."""
    out = {TIMESTAMP: "message"}

    def walk(prefix: str, messages: dict[str, Any]) -> None:
        for name, msg in messages.items():
            full = f"{prefix}.{name}"
            out[full] = "message"
            for enum in msg.get("enums") or {}:
                out[f"{full}.{enum}"] = "enum"
            walk(full, msg.get("messages") or {})

    for f in files.values():
        walk(package, f["messages"])
    return out


def resolve(name: str, scope: str, symbols: dict[str, str]) -> str | None:
    """protoc's lookup of a relative type name: the innermost enclosing scope first."""
    parts = scope.split(".")
    for i in range(len(parts), -1, -1):
        candidate = ".".join([*parts[:i], name])
        if candidate in symbols:
            return candidate
    return None


def _message(
    name: str, msg: dict[str, Any], full: str, symbols: dict[str, str], where: str
) -> descriptor_pb2.DescriptorProto:
    here = f"{where}: {full}"
    out = descriptor_pb2.DescriptorProto(name=name)
    for enum_name, values in (msg.get("enums") or {}).items():
        enum = out.enum_type.add(name=enum_name)
        for value_name, number in values.items():
            enum.value.add(name=value_name, number=int(number))
    for nested_name, nested in (msg.get("messages") or {}).items():
        out.nested_type.append(
            _message(nested_name, nested, f"{full}.{nested_name}", symbols, where)
        )
    for field_name, spec in (msg.get("fields") or {}).items():
        if not isinstance(spec, list) or len(spec) not in (2, 3):
            raise MeshlabError(f"{here}.{field_name}: expected [number, type(, label)]")
        number, typ = int(spec[0]), str(spec[1])
        label = str(spec[2]) if len(spec) == 3 else "optional"
        if label not in _LABELS:
            raise MeshlabError(f"{here}.{field_name}: unknown label {label!r}")
        field = out.field.add(name=field_name, number=number, label=_LABELS[label])
        field.json_name = _json_name(field_name)
        m = _MAP.match(typ)
        if m:  # a map is a repeated nested <Name>Entry message with map_entry set
            entry = _map_entry(field_name, m.group(1), m.group(2), full, symbols, here)
            out.nested_type.append(entry)
            field.label = _F.LABEL_REPEATED
            field.type = _F.TYPE_MESSAGE
            field.type_name = f".{full}.{entry.name}"
            continue
        _set_type(field, typ, full, symbols, f"{here}.{field_name}")
    return out


def _map_entry(
    field_name: str, key: str, value: str, scope: str, symbols: dict[str, str], where: str
) -> descriptor_pb2.DescriptorProto:
    if key not in MAP_KEYS:
        raise MeshlabError(f"{where}.{field_name}: {key!r} cannot be a map key")
    entry = descriptor_pb2.DescriptorProto(name=_entry_name(field_name))
    entry.options.map_entry = True
    k = entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, json_name="key")
    k.type = SCALARS[key]
    v = entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL, json_name="value")
    _set_type(v, value, scope, symbols, f"{where}.{field_name}")
    return entry


def _set_type(
    field: descriptor_pb2.FieldDescriptorProto,
    typ: str,
    scope: str,
    symbols: dict[str, str],
    where: str,
) -> None:
    if typ in SCALARS:
        field.type = SCALARS[typ]  # type: ignore[assignment]
        return
    full = resolve(typ, scope, symbols)
    if full is None:
        raise MeshlabError(f"{where}: type {typ!r} is neither a scalar nor a declared type")
    field.type = _F.TYPE_ENUM if symbols[full] == "enum" else _F.TYPE_MESSAGE
    field.type_name = f".{full}"


def _entry_name(field_name: str) -> str:
    """protoc's name of a map field's entry message: labels -> LabelsEntry."""
    return "".join(p[:1].upper() + p[1:] for p in field_name.split("_")) + "Entry"


def _json_name(field_name: str) -> str:
    """protoc's lowerCamelCase JSON name (parsers accept it and the proto name alike)."""
    head, *rest = field_name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)
