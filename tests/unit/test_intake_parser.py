"""The intake parser's plan per contract: each field checked, and set on the record it belongs to."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from consentry.core.avro import AvroCodec
from consentry.core.errors import Reason, Rejected, SchemaError
from consentry.core.intake import INTAKE_TYPES, IntakeParser
from consentry.core.sealing import Personal
from tests.support import canary, codec, parser

PARSER = parser()
CODEC = codec()
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _value(name: str) -> Any:
    """A valid value of the field, different from every other field's."""
    if name == "subject_ref":
        return f"shop:{canary('ref')}"
    if name == "occurred_at":
        return WHEN.isoformat()
    if name == "expires_at":
        return WHEN.replace(year=2027).isoformat()
    if name == "fields":
        return {"email": f"{canary('email')}@example.com"}
    if name == "rectification":
        return True
    if name in ("data_categories", "field_names"):
        return [f"{name}-item"]
    return f"{name}-{canary('v')}"


def _plain(value: object) -> object:
    if isinstance(value, Personal):
        return value.reveal()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


@pytest.mark.parametrize("kind", sorted(INTAKE_TYPES))
def test_every_field_lands_on_its_own_attribute(kind: str) -> None:
    names = CODEC.intake_contract(kind).field_names
    given = {name: _value(name) for name in names}
    made = PARSER.from_json({"type": kind, **given})
    assert type(made) is INTAKE_TYPES[kind]
    assert {name: _plain(getattr(made, name)) for name in names} == given


@pytest.mark.parametrize("kind", sorted(INTAKE_TYPES))
def test_the_defaults_of_the_contract_fill_what_is_left_out(kind: str) -> None:
    contract = CODEC.intake_contract(kind)
    given = {name: _value(name) for name in contract.required_fields}
    made = PARSER.from_json({"type": kind, **given})
    for name, default in contract.defaults.items():
        expected = tuple(default) if isinstance(default, list) else default
        assert getattr(made, name) == expected


def test_the_first_bad_field_in_the_contracts_order_is_the_one_named() -> None:
    contract = CODEC.intake_contract("consent.grant")
    texts = [n for n in contract.field_names if n not in contract.pii and isinstance(_value(n), str)]
    texts = [n for n in texts if n not in ("occurred_at", "expires_at")]
    record = {name: _value(name) for name in contract.field_names} | dict.fromkeys(texts, " ")
    with pytest.raises(Rejected) as refused:
        PARSER.from_json({"type": "consent.grant", **record})
    assert refused.value.reason is Reason.INVALID_VALUE
    assert f"'{texts[0]}' must not be empty" in str(refused.value)


def test_a_contract_whose_fields_are_not_its_records_is_refused_when_the_parser_is_made() -> None:
    real = CODEC.intake_contract("consent.withdrawal")
    surplus = SimpleNamespace(
        name=real.name,
        intake_type=real.intake_type,
        field_names=(*real.field_names, "surplus"),
        required_fields=real.required_fields,
        defaults=real.defaults,
        pii=real.pii,
    )

    class Codec:
        def intake_contract(self, kind: str) -> object:
            return surplus if kind == "consent.withdrawal" else CODEC.intake_contract(kind)

    with pytest.raises(SchemaError, match="consent"):
        IntakeParser(cast(AvroCodec, Codec()), lambda: WHEN)


def test_each_record_class_is_what_its_contract_names() -> None:
    for kind, record in INTAKE_TYPES.items():
        fields = {f.name for f in dataclasses.fields(record)}
        assert fields == set(CODEC.intake_contract(kind).field_names)
