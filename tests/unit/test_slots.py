"""Slot-setting constructors against the dataclasses' own `__init__`."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field

import pytest

from consentry.core.events import EventMeta, evolve
from consentry.core.sealing import DataKey, SealedValue
from consentry.core.slots import NotPlain, maker, replacer
from consentry.core.views import PutValue
from tests.support import T0


def test_a_made_object_equals_the_one_init_builds_and_stays_frozen() -> None:
    sealed = SealedValue("purpose:support", uuid.uuid4().hex, b"n" * 12, b"c")
    assert maker(SealedValue)(*dataclasses.astuple(sealed)) == sealed
    args = (uuid.uuid4(), "support", "email", sealed, uuid.uuid4(), T0)
    made = maker(PutValue)(*args)
    assert type(made) is PutValue and made == PutValue(*args)
    assert made.sealed is sealed  # the values themselves, not copies
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.purpose = "other"  # type: ignore[misc]  # the point: frozen still
    with pytest.raises(TypeError):
        maker(PutValue)(*args[:-1])  # every field is required


@dataclass(frozen=True, slots=True)
class _Checked:
    a: str

    def __post_init__(self) -> None:
        raise AssertionError("never reached")


@dataclass(frozen=True)
class _Unslotted:
    a: str


@dataclass(frozen=True, slots=True)
class _Computed:
    a: str
    b: str = field(init=False, default="b")


@pytest.mark.parametrize("cls", [_Checked, _Unslotted, _Computed, object])
def test_a_class_whose_init_does_more_than_set_its_slots_is_refused(cls: type) -> None:
    with pytest.raises(NotPlain):
        maker(cls)


def test_a_replaced_object_equals_what_dataclasses_replace_builds() -> None:
    meta = EventMeta(uuid.uuid4(), uuid.uuid4(), 3, T0, T0, "p-1", "crm-example")
    changed = replacer(EventMeta)(meta, {"prev_hash": b"h" * 32, "sequence": 4})
    assert type(changed) is EventMeta
    assert changed == dataclasses.replace(meta, prev_hash=b"h" * 32, sequence=4)
    assert changed.subject_id is meta.subject_id and meta.prev_hash != changed.prev_hash
    assert replacer(EventMeta)(meta, {}) == meta
    with pytest.raises(TypeError):
        replacer(EventMeta)(meta, {"not_a_field": 1})
    with pytest.raises(NotPlain):
        replacer(_Checked)


@dataclass(frozen=True, slots=True)
class _Derived:
    name: str
    upper: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "upper", self.name.upper())


def test_evolve_copies_plain_classes_by_slot_and_others_through_init() -> None:
    meta = EventMeta(uuid.uuid4(), uuid.uuid4(), 3, T0, T0, "p-1")
    assert evolve(meta, producer="crm-example") == dataclasses.replace(meta, producer="crm-example")
    key = DataKey.build("k-1", uuid.uuid4(), "purpose:support", 1, b"s" * 32)
    moved = evolve(key, scope="purpose:billing")
    assert moved == dataclasses.replace(key, scope="purpose:billing")
    # The AAD follows the new scope: DataKey derives it from its fields at each use.
    assert moved.aad("email") != key.aad("email") and moved.aad_parts()[0].endswith(b"purpose:billing")
    derived = evolve(_Derived("a"), name="b")
    # A class with a __post_init__ goes through it, so what it derives follows the change.
    assert derived.upper == "B"
    for obj in (meta, key, derived):
        with pytest.raises(TypeError):
            evolve(obj, not_a_field=1)
