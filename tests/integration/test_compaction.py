"""A page of view changes compacted (later puts replacing earlier ones, drops deleting earlier puts)
writes exactly the rows the whole page writes: checked with hypothesis on real SQLite files."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consentry.adapters.sqlite_views import SQLiteViewStore
from consentry.core.sealing import SealedValue
from consentry.core.views import (
    AccessRow,
    AddAccess,
    Change,
    ConsentRow,
    DropValues,
    ErasureRow,
    MarkApplied,
    PutConsent,
    PutErasure,
    PutSubject,
    PutValue,
)
from consentry.processors.projector import compact
from tests.integration.test_properties import bounded
from tests.support import T0

SUBJECTS = (uuid.UUID(int=1), uuid.UUID(int=2))
SCOPES = ("purpose:support", "purpose:marketing")
PURPOSES = ("support", "marketing")
FIELDS = ("email", "city")

subjects = st.sampled_from(SUBJECTS)
stamps = st.integers(0, 50).map(lambda n: T0 + timedelta(seconds=n))
ids = st.uuids()


def _value(
    subject: uuid.UUID, purpose: str, name: str, scope: str, n: int, event: uuid.UUID
) -> PutValue:
    sealed = SealedValue(scope, f"k-{n}", bytes([n]) * 12, bytes([n]) * 20)
    return PutValue(subject, purpose, name, sealed, event, T0 + timedelta(seconds=n))


changes = st.one_of(
    st.builds(
        _value,
        subjects,
        st.sampled_from(PURPOSES),
        st.sampled_from(FIELDS),
        st.sampled_from(SCOPES),
        st.integers(0, 255),
        ids,
    ),
    st.builds(
        DropValues,
        subjects,
        st.one_of(st.none(), st.lists(st.sampled_from(SCOPES), max_size=2, unique=True).map(tuple)),
    ),
    st.builds(
        PutConsent,
        subjects,
        st.builds(
            ConsentRow,
            st.sampled_from(PURPOSES),
            st.sampled_from(("granted", "withdrawn", "expired")),
            st.just("consent"),
            stamps,
            st.one_of(st.none(), stamps),
        ),
        ids,
    ),
    st.builds(
        AddAccess,
        subjects,
        st.builds(
            AccessRow,
            ids,
            st.just("alice-support"),
            st.just("support_agent"),
            st.sampled_from(PURPOSES),
            st.just(("email",)),
            st.just("profile"),
            st.booleans(),
            st.just(""),
            stamps,
        ),
    ),
    st.builds(
        PutSubject, subjects, st.sampled_from(("active", "erasing", "erased")), stamps, st.integers(1, 9)
    ),
    st.builds(
        PutErasure,
        subjects,
        st.builds(ErasureRow, st.sampled_from(("requested", "erased")), stamps, ids),
    ),
    st.builds(MarkApplied, subjects, st.integers(1, 99)),
)


@pytest.fixture(scope="module")
def stores(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SQLiteViewStore, SQLiteViewStore]]:
    root = tmp_path_factory.mktemp("compaction")
    whole, compacted = SQLiteViewStore(root / "whole.db"), SQLiteViewStore(root / "compacted.db")
    yield whole, compacted
    whole.close()
    compacted.close()


@bounded(150)
@given(before=st.lists(changes, max_size=8), page=st.lists(changes, max_size=30))
def test_a_compacted_page_writes_the_rows_the_whole_page_writes(
    stores: tuple[SQLiteViewStore, SQLiteViewStore], before: list[Change], page: list[Change]
) -> None:
    whole, compacted = stores
    for store in stores:
        store.reset("views")
        store.apply_at(before, {})  # rows already there, which a drop in the page also deletes

    whole.apply_at(page, {})
    compacted.apply_at(compact(page), {})

    assert compacted.dump() == whole.dump()


def test_compaction_keeps_a_rows_last_put_and_the_drops_and_what_they_spare() -> None:
    subject = SUBJECTS[0]
    first = _value(subject, "support", "email", SCOPES[0], 1, uuid.UUID(int=10))
    second = _value(subject, "support", "email", SCOPES[0], 2, uuid.UUID(int=11))
    other_scope = _value(subject, "marketing", "city", SCOPES[1], 3, uuid.UUID(int=12))
    drop = DropValues(subject, (SCOPES[0],))
    after = _value(subject, "support", "city", SCOPES[0], 4, uuid.UUID(int=13))

    assert compact([first, second, other_scope, drop, after]) == [other_scope, drop, after]
    assert compact([first, other_scope, DropValues(subject, None)]) == [DropValues(subject, None)]
    assert compact([first, DropValues(SUBJECTS[1], None)]) == [first, DropValues(SUBJECTS[1], None)]
