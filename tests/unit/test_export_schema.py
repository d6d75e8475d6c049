"""The SMP schema facts (meshlab/export/facts/smp-<tag>.yml) and the classes built from them."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from meshlab.errors import MeshlabError
from meshlab.export import schema

FACTS = yaml.safe_load(schema.facts_path().read_text())
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def _messages(msgs: dict[str, Any], prefix: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, msg in msgs.items():
        out.append((f"{prefix}.{name}", msg))
        out += _messages(msg.get("messages") or {}, f"{prefix}.{name}")
    return out


def _all_messages() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, full, msg)
        for path, f in FACTS["files"].items()
        for full, msg in _messages(f["messages"], FACTS["package"])
    ]


def test_the_facts_name_their_source_exactly() -> None:
    assert FACTS["repository"] == "service-mesh-performance/service-mesh-performance"
    assert FACTS["tag"] == schema.TAG and re.fullmatch(r"[0-9a-f]{40}", FACTS["commit"])
    assert FACTS["syntax"] == "proto3" and FACTS["package"] == "smp"
    assert set(FACTS["files"]) == {
        "protos/metadata.proto",
        "protos/service_mesh.proto",
        "protos/service_mesh_performance.proto",
    }
    assert all(re.fullmatch(r"[0-9a-f]{40}", f["blob"]) for f in FACTS["files"].values())


def test_every_message_has_unique_field_numbers_and_names_in_range() -> None:
    for path, full, msg in _all_messages():
        fields = msg.get("fields") or {}
        numbers = [spec[0] for spec in fields.values()]
        assert len(numbers) == len(set(numbers)), f"{path} {full}: field number used twice"
        for name, spec in fields.items():
            assert SNAKE.match(name), f"{full}.{name}"
            # protobuf's valid range, without the numbers it reserves for itself
            assert 1 <= spec[0] <= 536_870_911 and not 19_000 <= spec[0] <= 19_999, name
            assert len(spec) == 2 or spec[2] == "repeated", f"{full}.{name}: label {spec[2:]}"
        assert PASCAL.match(full.rsplit(".", 1)[1]), full


def test_every_enum_is_a_valid_proto3_enum() -> None:
    for _path, full, msg in _all_messages():
        for name, values in (msg.get("enums") or {}).items():
            numbers = list(values.values())
            assert numbers[0] == 0, f"{full}.{name}: proto3 enums start at 0"
            assert len(numbers) == len(set(numbers)), f"{full}.{name}: a value used twice"
            assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", v) for v in values), f"{full}.{name}"


def test_every_type_is_a_scalar_a_map_or_a_declared_type_its_file_imports() -> None:
    declared = schema._symbols(FACTS["package"], FACTS["files"])
    owner = {
        full: path
        for path, f in FACTS["files"].items()
        for full, _ in _messages(f["messages"], FACTS["package"])
    }
    owner[schema.TIMESTAMP] = "google/protobuf/timestamp.proto"
    for path, full, msg in _all_messages():
        for name, spec in (msg.get("fields") or {}).items():
            typ = spec[1]
            m = schema._MAP.match(typ)
            if m:
                assert m.group(1) in schema.MAP_KEYS, f"{full}.{name}: map key {m.group(1)}"
                typ = m.group(2)
            if typ in schema.SCALARS:
                continue
            resolved = schema.resolve(typ, full, declared)
            assert resolved is not None, f"{path} {full}.{name}: unknown type {typ}"
            top = resolved if declared[resolved] == "message" else resolved.rsplit(".", 1)[0]
            while top not in owner:  # a nested type lives in its outermost message's file
                top = top.rsplit(".", 1)[0]
            home = owner[top]
            assert home == path or home in FACTS["files"][path]["imports"], (
                f"{path} {full}.{name}: {resolved} is in {home}, which it does not import"
            )


def test_the_compiled_classes_hold_exactly_the_facts() -> None:
    sch = schema.load()
    for _path, full, msg in _all_messages():
        desc = sch.pool.FindMessageTypeByName(full)
        fields = msg.get("fields") or {}
        assert {f.name: f.number for f in desc.fields} == {n: s[0] for n, s in fields.items()}
        for name, spec in fields.items():
            f = desc.fields_by_name[name]
            if spec[1] in schema.SCALARS:
                assert f.type == schema.SCALARS[spec[1]], f"{full}.{name}"
            is_map = bool(schema._MAP.match(spec[1]))
            repeated = f.is_repeated
            assert repeated == (is_map or spec[2:] == ["repeated"]), f"{full}.{name}"
            if is_map:
                assert f.message_type.GetOptions().map_entry, f"{full}.{name}"


def test_validation_refuses_unknown_fields_and_wrong_types_naming_the_file() -> None:
    sch = schema.load()
    ok = sch.validate(
        "PerformanceTestResult",
        {"latencies_ms": {"p50": 0.3}, "start_time": "2026-11-25T10:00:00.000001Z"},
        "r.json",
    )
    assert ok == {"latencies_ms": {"p50": 0.3}, "start_time": "2026-11-25T10:00:00.000001Z"}
    with pytest.raises(MeshlabError, match=r"r\.json: not a valid smp\.PerformanceTestResult"):
        sch.validate("PerformanceTestResult", {"latencies_ms": {"p999": 1.0}}, "r.json")
    with pytest.raises(MeshlabError, match=r"x\.json: .*rps"):
        sch.validate("PerformanceTestConfig", {"clients": [{"rps": 10.5}]}, "x.json")
    with pytest.raises(MeshlabError, match=r"no message smp\.Nope"):
        sch.message_class("Nope")


def test_a_fact_naming_an_undeclared_type_is_refused_with_its_place() -> None:
    facts = yaml.safe_load(schema.facts_path().read_text())
    fields = facts["files"]["protos/metadata.proto"]["messages"]["TrafficMetadata"]["fields"]
    fields["user_agent"] = [6, "Agent"]
    with pytest.raises(MeshlabError, match=r"smp\.TrafficMetadata\.user_agent: type 'Agent'"):
        schema.file_protos(facts, "facts.yml")
