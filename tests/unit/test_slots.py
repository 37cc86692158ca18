"""Slot-setting constructors against the dataclasses' own `__init__`."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field

import pytest

from consentry.core.sealing import SealedValue
from consentry.core.slots import NotPlain, maker
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
