"""Properties, checked with hypothesis on real SQLite files and the real ledger, projector and sealing.

1. Projections are idempotent and order-preserving under redelivery: a history delivered the way
   Kafka may deliver it (partitions interleaved, batches of any size, already applied offsets sent
   again, duplicates) builds exactly the views of a single delivery in log order.
2. Replay is deterministic: rebuilding the views from the log, with any page size, gives the same
   rows, byte for byte.
3. Sealing round-trips any text, and fails closed on any flipped byte of the sealed form, on any
   part of the associated data swapped (subject, scope, field, key id) and on a wrong key.
4. The ledger never stores a data field without an open consent or lawful basis for its purpose:
   random sequences of grants, withdrawals, updates and erasure requests against a small model.

`make test` runs a bounded, derandomized number of examples; `make soak` (CONSENTRY_SOAK=1) many
more with random seeds.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from consentry.adapters.sqlite_log import SQLiteSubjectLog
from consentry.adapters.sqlite_views import SQLiteViewStore
from consentry.cluster import project_batch
from consentry.core import events as ev
from consentry.core.errors import ConsentryError, SealError
from consentry.core.policy import LawfulBasis
from consentry.core.sealing import DataKey, SealedValue, open_sealed, seal
from consentry.ledger.application import Ledger
from consentry.ledger.commands import DenyAccess, RecordAccess, RequestErasure
from consentry.processors.rebuild import EVERY_SUBJECT, Span, spans
from consentry.processors.runner import EmbeddedRunner
from consentry.rebuild_helper import SQLiteSpanRebuilder
from consentry.shredder.service import Shredder
from tests.support import SCHEMAS, T0, canary, codec, fake_email, policy, record, sqlite_ledger, submit

SOAK = bool(os.environ.get("CONSENTRY_SOAK"))


def bounded(examples: int, *allowed: HealthCheck, shrink: bool = True) -> settings:
    """`examples` derandomized examples in `make test`; twenty times as many, random, in `make soak`.

    Without `shrink`, a failure reports the first failing example as found: shrinking examples
    that each write real files can take many minutes.
    """
    phases = [p for p in Phase if shrink or p is not Phase.shrink]
    return settings(
        max_examples=examples * 20 if SOAK else examples,
        derandomize=not SOAK,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, *allowed],
        phases=phases,
    )


# -- a varied history on real files, shared by the projection properties ---------------------------


@dataclass
class History:
    """A log (position, stored bytes), each entry's subject, and the views one delivery built."""

    log: list[tuple[int, bytes]]
    subjects: list[uuid.UUID]
    reference: dict[str, list[tuple[object, ...]]]
    store: SQLiteViewStore
    events_db: Path


def _build_history(ledger: Ledger) -> None:
    """Subjects with consents, data, reads, refusals, a withdrawal certified and an erasure."""
    shredder = Shredder(ledger, ledger.clock)
    refs = [f"shop:{canary('ref')}" for _ in range(4)]
    for ref in refs:
        submit(
            ledger,
            record("consent.grant", ref, evidence=canary("evidence")),
            record("consent.grant", ref, purpose="support"),
            record("data.update", ref, fields={"email": fake_email(), "first_name": canary("n")}),
            record("data.update", ref, purpose="support", fields={"phone": canary("p")}),
            record("data.update", ref, purpose="billing", fields={"city": canary("c")}),
            record("data.update", ref, purpose="support", fields={"street": canary("s")}),
        )
    found = [ledger.find_subject("shop", ref.removeprefix("shop:")) for ref in refs]
    subjects = [s for s in found if s is not None]
    assert len(subjects) == len(refs)
    actor = ev.Actor("alice-support", "support_agent")
    for subject in subjects:
        ledger.execute(
            [
                RecordAccess(subject, actor, "support", ("phone",)),
                DenyAccess(subject, actor, "marketing", "role_not_allowed"),
            ]
        )
    submit(
        ledger, record("consent.withdrawal", refs[0]), record("data.update", refs[1], purpose="support")
    )
    submit(ledger, record("consent.grant", refs[0]), record("data.update", refs[0]))
    ledger.execute([RequestErasure(subjects[2], ev.Actor("dana-dpo", "dsr"))])
    submit(ledger, record("erasure.request", refs[3]))
    shredder.run_pending()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    root = tmp_path_factory.mktemp("history")
    ledger = sqlite_ledger(root / "ledger")
    _build_history(ledger)
    log = list(ledger.notifications())
    subjects = [ev.event_from_record(*codec().decode(state)).meta.subject_id for _, state in log]
    reference = SQLiteViewStore(root / "reference.db")
    _deliver(reference, log, subjects, [list(range(len(log)))])
    store = SQLiteViewStore(root / "views.db")
    yield History(log, subjects, reference.dump(), store, root / "ledger" / "events.db")
    store.close()
    reference.close()
    ledger.keystore.close()


PARTITIONS = 3


def _deliver(
    store: SQLiteViewStore,
    log: list[tuple[int, bytes]],
    subjects: list[uuid.UUID],
    batches: list[list[int]],
) -> None:
    """Applies batches of log entries (by index) the way the processors worker applies Kafka batches."""
    order = sorted(set(subjects), key=subjects.index)
    partition_of = {s: order.index(s) % PARTITIONS for s in order}
    offsets = _offsets([partition_of[s] for s in subjects])
    for batch in batches:
        records = [(partition_of[subjects[i]], offsets[i], log[i][1]) for i in batch]
        project_batch(codec(), store, records)


def _offsets(partitions: list[int]) -> list[int]:
    """Each entry's offset within its partition."""
    seen: dict[int, int] = {}
    out = []
    for p in partitions:
        out.append(seen.get(p, 0))
        seen[p] = out[-1] + 1
    return out


@st.composite
def deliveries(draw: st.DrawFn, subjects: list[uuid.UUID]) -> list[list[int]]:
    """Batches as Kafka may deliver them: per-partition order kept, partitions interleaved, applied
    offsets delivered again after a crash, and records repeated; every entry delivered at least once."""
    order = sorted(set(subjects), key=subjects.index)
    lanes: list[list[int]] = [[] for _ in range(PARTITIONS)]
    for index, subject in enumerate(subjects):
        lanes[order.index(subject) % PARTITIONS].append(index)
    cursors = [0] * PARTITIONS
    batches: list[list[int]] = []
    while any(c < len(lane) for c, lane in zip(cursors, lanes, strict=True)):
        batch: list[int] = []
        for p in draw(st.lists(st.integers(0, PARTITIONS - 1), min_size=1, max_size=3)):
            if draw(st.integers(0, 5)) == 0:
                cursors[p] = max(0, cursors[p] - draw(st.integers(1, 8)))  # redelivery
            take = draw(st.integers(1, 6))
            chunk = lanes[p][cursors[p] : cursors[p] + take]
            cursors[p] += len(chunk)
            repeat = draw(st.booleans())
            if chunk and repeat:
                # A repeat comes after the record's first delivery, never before it.
                first = draw(st.integers(0, len(chunk) - 1))
                chunk.insert(draw(st.integers(first + 1, len(chunk))), chunk[first])
            batch += chunk
        if batch:
            batches.append(batch)
    return batches


# Every delivery covers the whole history, so even the smallest one draws a lot.
@bounded(15, HealthCheck.large_base_example, shrink=False)
@given(data=st.data())
def test_projections_are_idempotent_and_order_preserving_under_redelivery(
    history: History, data: st.DataObject
) -> None:
    batches = data.draw(deliveries(history.subjects))
    history.store.reset("kafka")

    _deliver(history.store, history.log, history.subjects, batches)

    assert history.store.dump() == history.reference


@bounded(15)
@given(page=st.integers(1, 64))
def test_replay_with_any_page_size_rebuilds_the_same_rows(history: History, page: int) -> None:
    first = EmbeddedRunner(_log_after(history), codec(), history.store, page)
    first.rebuild()
    once = history.store.dump()
    first.rebuild()

    assert history.store.dump() == once
    assert repr(once) == repr(_replayed_in_one_page(history))
    assert once == history.reference


@bounded(15)
@given(page=st.integers(1, 40))
def test_a_rebuild_subject_by_subject_with_any_page_size_builds_the_same_rows(
    history: History, page: int
) -> None:
    runner = _rebuilding(history, rebuild_page=page)

    assert runner.rebuild() == len(history.log)
    assert history.store.position("views") == history.log[-1][0]
    assert history.store.dump() == history.reference


def _rebuilding(
    history: History, subjects: SQLiteSubjectLog | None = None, **options: Any
) -> EmbeddedRunner:
    """A runner on the history whose rebuild reads the log subject by subject."""
    log = subjects or SQLiteSubjectLog(history.events_db)
    return EmbeddedRunner(_log_after(history), codec(), history.store, 7, subjects=log, **options)


# With 4 spans the helpers' three hold the history's 4 random subjects but for a (1/4)^4 chance, so
# a helper that did nothing would fail the count and the rows.
@pytest.mark.parametrize("count", [2, 4])
def test_helper_processes_rebuild_spans_of_subjects_beside_the_runner(
    history: History, count: int
) -> None:
    helper = SQLiteSpanRebuilder(history.events_db, history.store.path, SCHEMAS)
    runner = _rebuilding(history, helper=helper, processes=count, helpers_from=0)

    assert runner.rebuild() == len(history.log)
    assert history.store.dump() == history.reference


@dataclass(frozen=True)
class _NotingHelper:
    """The real helper, noting each span it rebuilds in a file (it runs in another process)."""

    helper: SQLiteSpanRebuilder
    notes: Path

    def __call__(self, span: Span, upto: int, page: int) -> int:
        (self.notes / f"{span[0]}-{span[1]}").touch()
        return self.helper(span, upto, page)


class _NotingLog(SQLiteSubjectLog):
    """The real log, noting each span this process reads."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.spans: list[Span] = []

    def by_subject(self, upto: int, page: int, span: Span = EVERY_SUBJECT) -> Iterator[list[bytes]]:
        self.spans.append(span)
        return super().by_subject(upto, page, span)


def test_the_runner_and_a_helper_claim_small_spans_until_none_is_left(
    history: History, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    helper = _NotingHelper(SQLiteSpanRebuilder(history.events_db, history.store.path, SCHEMAS), notes)
    log = _NotingLog(history.events_db)
    runner = _rebuilding(history, log, helper=helper, processes=2, helpers_from=0, span_events=1)

    assert runner.rebuild() == len(history.log)
    assert history.store.dump() == history.reference
    wanted = spans(min(256, len(history.log)))
    helped = sorted(
        tuple(None if end == "None" else end for end in n.name.split("-")) for n in notes.iterdir()
    )
    # Every span once, by one process or the other; the helper from the first, the runner from the
    # last (the runner's first is the last span).
    assert sorted(log.spans + [(start, end) for start, end in helped], key=str) == sorted(
        wanted, key=str
    )
    assert helped and log.spans and log.spans[0] == wanted[-1] and ("", wanted[0][1]) in helped


def test_a_helper_that_fails_fails_the_rebuild_and_the_next_catch_up_finishes_it(
    history: History, tmp_path: Path
) -> None:
    broken = SQLiteSpanRebuilder(history.events_db, history.store.path, tmp_path / "no-schemas")
    runner = _rebuilding(history, helper=broken, processes=2, helpers_from=0)

    with pytest.raises(ConsentryError):
        runner.rebuild()
    assert history.store.position("views") == 0
    runner.catch_up()
    assert history.store.dump() == history.reference


def test_the_spans_cover_every_subject_id_once() -> None:
    assert spans(1) == [("", None)]
    assert spans(2) == [("", "80"), ("80", None)]
    assert spans(3) == [("", "55"), ("55", "aa"), ("aa", None)]
    for count in range(1, 257):
        found = spans(count)
        assert len(found) == count
        assert [start for start, _ in found[1:]] == [end for _, end in found[:-1]]
        assert sorted(found[1:]) == found[1:] and found[-1][1] is None
    # Each id falls in exactly one span (its text from the start on, before the end).
    for _ in range(200):
        text = str(uuid.uuid4())
        held = [s for s in spans(37) if s[0] <= text and (s[1] is None or text < s[1])]
        assert len(held) == 1
    with pytest.raises(ValueError, match="spans"):
        spans(257)


class _CutShort(SQLiteSubjectLog):
    """The real log, whose reader fails after some pages (a crash in the middle of a rebuild)."""

    def __init__(self, path: Path, pages: int) -> None:
        super().__init__(path)
        self.pages = pages

    def by_subject(self, upto: int, page: int, span: Span = EVERY_SUBJECT) -> Iterator[list[bytes]]:
        for n, states in enumerate(super().by_subject(upto, page, span)):
            if n == self.pages:
                raise OSError("the rebuild was cut short")
            yield states


@bounded(15)
@given(page=st.integers(1, 40), pages=st.integers(0, 12))
def test_a_rebuild_cut_short_is_finished_by_the_next_catch_up(
    history: History, page: int, pages: int
) -> None:
    cut = _rebuilding(history, _CutShort(history.events_db, pages), rebuild_page=page)
    try:
        cut.rebuild()
    except OSError:
        assert history.store.position("views") == 0
    EmbeddedRunner(_log_after(history), codec(), history.store, 7).catch_up()

    assert history.store.dump() == history.reference


def _log_after(history: History) -> Callable[[int], Iterator[tuple[int, bytes]]]:
    """The notification log as the embedded runner reads it: the entries after a position."""
    return lambda after: (entry for entry in history.log if entry[0] > after)


def _replayed_in_one_page(history: History) -> dict[str, list[tuple[object, ...]]]:
    runner = EmbeddedRunner(_log_after(history), codec(), history.store, 10_000)
    runner.rebuild()
    return history.store.dump()


# -- sealing ---------------------------------------------------------------------------------------

TEXTS = st.text(st.characters(codec="utf-8"), max_size=200)
NAMES = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20)


def _key(
    secret: bytes, subject: uuid.UUID, scope: str = "purpose:support", key_id: str = "k-1"
) -> DataKey:
    return DataKey.build(key_id, subject, scope, 1, secret)


@bounded(200)
@given(value=TEXTS, name=NAMES, secret=st.binary(min_size=32, max_size=32), subject=st.uuids())
def test_sealing_round_trips_any_text(value: str, name: str, secret: bytes, subject: uuid.UUID) -> None:
    key = _key(secret, subject)
    assert open_sealed(key, name, seal(key, name, value)) == value


@bounded(200)
@given(
    value=TEXTS,
    secret=st.binary(min_size=32, max_size=32),
    subject=st.uuids(),
    where=st.integers(0, 10_000),
    mask=st.integers(1, 255),
)
def test_any_flipped_byte_of_a_sealed_value_fails_closed(
    value: str, secret: bytes, subject: uuid.UUID, where: int, mask: int
) -> None:
    key = _key(secret, subject)
    sealed = seal(key, "email", value)
    raw = bytearray(sealed.nonce + sealed.ciphertext)
    raw[where % len(raw)] ^= mask
    nonce, ciphertext = bytes(raw[: len(sealed.nonce)]), bytes(raw[len(sealed.nonce) :])
    with pytest.raises(SealError):
        open_sealed(key, "email", replace(sealed, nonce=nonce, ciphertext=ciphertext))


@bounded(200)
@given(
    value=TEXTS,
    secret=st.binary(min_size=32, max_size=32),
    other_secret=st.binary(min_size=32, max_size=32),
    subject=st.uuids(),
    other_subject=st.uuids(),
    name=NAMES,
    other_name=NAMES,
    part=st.sampled_from(["subject", "scope", "field", "key_id", "key"]),
)
def test_a_sealed_value_with_any_context_swapped_or_a_wrong_key_fails_closed(
    value: str,
    secret: bytes,
    other_secret: bytes,
    subject: uuid.UUID,
    other_subject: uuid.UUID,
    name: str,
    other_name: str,
    part: str,
) -> None:
    key = _key(secret, subject)
    sealed = seal(key, name, value)
    # The same secret under another context, so only the associated data (or the key) differs.
    opener, moved, field_name = key, sealed, name
    if part == "subject" and other_subject != subject:
        opener = _key(secret, other_subject)
    elif part == "scope":
        opener, moved = (
            _key(secret, subject, scope="purpose:marketing"),
            replace(sealed, scope="purpose:marketing"),
        )
    elif part == "field" and other_name != name:
        field_name = other_name
    elif part == "key_id":
        opener, moved = _key(secret, subject, key_id="k-2"), replace(sealed, key_id="k-2")
    elif part == "key" and other_secret != secret:
        opener = _key(other_secret, subject)
    else:
        return  # the drawn "other" equals the original: nothing was swapped
    with pytest.raises(SealError):
        open_sealed(opener, field_name, moved)


# -- the ledger against a model --------------------------------------------------------------------

PURPOSES = ("marketing", "support", "billing")
FIELDS = sorted({f for p in PURPOSES for f in policy().purposes[p].fields})


@dataclass
class Model:
    """What a subject's records should do: purpose status and expiry, erasure, existence."""

    exists: bool = False
    erasing: bool = False
    status: dict[str, str] = field(default_factory=dict)
    expires: dict[str, bool] = field(default_factory=dict)

    def may_store(self, purpose: str, names: list[str], late: bool) -> bool:
        declared = policy().purposes[purpose]
        if self.erasing or any(n not in declared.fields for n in names):
            return False
        current = self.status.get(purpose)
        if declared.lawful_basis != LawfulBasis.CONSENT:
            return current != "withdrawn"
        if current == "granted" and self.expires.get(purpose) and late:
            self.status[purpose] = "expired"
        return self.status.get(purpose) == "granted"


SOMETIMES = st.integers(0, 3).map(lambda n: n == 0)


def _fields_of(purpose: str) -> st.SearchStrategy[list[str]]:
    """Mostly the purpose's own fields, now and then one it does not declare."""
    own = st.sampled_from(sorted(policy().purposes[purpose].fields))
    return st.lists(
        st.one_of(own, own, own, st.sampled_from(FIELDS)), min_size=1, max_size=3, unique=True
    )


GRANT = st.tuples(st.just("grant"), st.sampled_from(PURPOSES), SOMETIMES)
WITHDRAW = st.tuples(st.just("withdraw"), st.sampled_from(PURPOSES), st.just(False))
UPDATE = st.sampled_from(PURPOSES).flatmap(
    lambda purpose: st.tuples(st.just("update"), st.just(purpose), SOMETIMES, _fields_of(purpose))
)
ERASE = st.tuples(st.just("erase"), st.just(""), st.just(False))
# An erasure request ends a subject's story, so it comes up less often than the rest.
COMMANDS = st.one_of(GRANT, GRANT, WITHDRAW, UPDATE, UPDATE, UPDATE, ERASE)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    opened = sqlite_ledger(tmp_path_factory.mktemp("model"))
    yield opened
    opened.keystore.close()


def _step(ledger: Ledger, ref: str, model: Model, command: tuple[object, ...]) -> None:
    kind, purpose = str(command[0]), str(command[1])
    if kind == "grant":
        expiry = {"expires_at": (T0 + timedelta(hours=1)).isoformat()} if command[2] else {}
        (outcome,) = submit(ledger, record("consent.grant", ref, purpose=purpose, **expiry))
        assert (outcome.status == "accepted") == (not model.erasing)
        if not model.erasing:
            model.exists, model.status[purpose], model.expires[purpose] = True, "granted", bool(expiry)
    elif kind == "withdraw":
        (outcome,) = submit(ledger, record("consent.withdrawal", ref, purpose=purpose))
        if not model.exists or model.erasing:
            assert outcome.status == "rejected"
        elif model.status.get(purpose) == "withdrawn":
            assert outcome.status == "duplicate"
        else:
            assert outcome.status == "accepted"
            model.status[purpose] = "withdrawn"
    elif kind == "erase":
        (outcome,) = submit(ledger, record("erasure.request", ref))
        expected = "duplicate" if model.erasing else "accepted" if model.exists else "rejected"
        assert outcome.status == expected
        model.erasing = model.exists
    else:
        names = list(command[3])  # type: ignore[call-overload]  # the tuple's fourth part is a list
        late = {"occurred_at": (T0 + timedelta(hours=2)).isoformat()} if command[2] else {}
        fields = {n: canary(n) for n in names}
        (outcome,) = submit(ledger, record("data.update", ref, purpose=purpose, fields=fields, **late))
        allowed = model.may_store(purpose, names, bool(late))
        if not model.exists and policy().purposes[purpose].lawful_basis == LawfulBasis.CONSENT:
            allowed = False  # data under consent never brings a new subject into being
        assert (outcome.status == "accepted") == allowed, (command, outcome.reason, model)
        model.exists |= allowed


@bounded(40, shrink=False)
@given(commands=st.lists(COMMANDS, min_size=1, max_size=12))
def test_the_ledger_never_stores_a_field_without_an_open_consent_or_basis(
    ledger: Ledger, commands: list[tuple[object, ...]]
) -> None:
    ref, model = f"shop:{canary('ref')}", Model()
    for command in commands:
        _step(ledger, ref, model, command)

    subject = ledger.find_subject("shop", ref.removeprefix("shop:"))
    if subject is None:
        return
    # Whatever the model says, the stored history itself never shows data without its basis.
    status: dict[str, str] = {}
    erasing = False
    for event in ledger.history(subject):
        match event:
            case ev.ConsentGranted():
                status[event.purpose] = "granted"
            case ev.ConsentWithdrawn():
                status[event.purpose] = "withdrawn"
            case ev.ConsentExpired():
                status[event.purpose] = "expired"
            case ev.ErasureRequested():
                erasing = True
            case ev.DataUpdated():
                basis = policy().purposes[event.purpose].lawful_basis
                assert not erasing
                assert set(event.fields) <= set(policy().purposes[event.purpose].fields)
                if basis == LawfulBasis.CONSENT:
                    assert status.get(event.purpose) == "granted"
                else:
                    assert status.get(event.purpose) != "withdrawn"
                assert all(isinstance(v, SealedValue) for v in event.fields.values())
