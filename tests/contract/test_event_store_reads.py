"""`events_after` (ledger/store.py) on every event store the ledger runs on: one answer, however read.
And appends: positions in order, every byte kept, a taken version failing the whole batch (the
PostgreSQL recorder sends its rows as column arrays, not as eventsourcing's composite rows), and on
PostgreSQL an append that waits for every other writer of the table.

eventsourcing's in-memory recorder takes the fallback (one `select_events` per subject); the
embedded SQLite recorder and the distributed PostgreSQL recorder answer in one query (SQLite: one
per 400 subjects). The PostgreSQL case needs the cluster of infra/postgres and a fresh schema.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import ApplicationRecorder, IntegrityError, StoredEvent
from psycopg import sql

from consentry.adapters.postgres_ledger import RECORDER_TOPIC as POSTGRES_TOPIC
from consentry.adapters.postgres_ledger import PostgresLedgerRecorder
from consentry.adapters.sqlite_ledger import RECORDER_TOPIC as SQLITE_TOPIC
from consentry.adapters.sqlite_ledger import SUBJECTS_PER_READ, CheckpointedSQLiteRecorder
from consentry.cluster import recorder_env
from consentry.ledger.application import open_recorder
from consentry.ledger.store import ReadsManySubjects, events_after
from tests.services import pg_dsn, scratch_schema


def stored(subject: uuid.UUID, version: int) -> StoredEvent:
    return StoredEvent(subject, version, "bench.Fake", f"{subject.hex}:{version}".encode())


def versions_of(found: dict[uuid.UUID, list[StoredEvent]]) -> dict[uuid.UUID, list[int]]:
    return {subject: [e.originator_version for e in events] for subject, events in found.items()}


class EventStoreReads:
    """What every recorder must answer; `recorder` is a fixture of the subclass."""

    def test_each_subject_gets_its_events_after_its_version_in_order(
        self, recorder: ApplicationRecorder
    ) -> None:
        long, short, empty = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        # Interleaved, as batches append them; each subject's versions in order of their own.
        recorder.insert_events([stored(long, 1), stored(short, 1), stored(long, 2)])
        recorder.insert_events([stored(long, v) for v in (3, 4, 5)] + [stored(short, 2)])
        found = events_after(recorder, {long: 2, short: 0, empty: 0})
        assert versions_of(found) == {long: [3, 4, 5], short: [1, 2]}
        assert [e.state for e in found[long]] == [f"{long.hex}:{v}".encode() for v in (3, 4, 5)]
        assert all(e.originator_id == long for e in found[long])
        assert events_after(recorder, {long: 5, short: 2}) == {}
        assert events_after(recorder, {}) == {}

    def test_more_subjects_than_one_query_takes_are_all_answered(
        self, recorder: ApplicationRecorder
    ) -> None:
        subjects = [uuid.uuid4() for _ in range(SUBJECTS_PER_READ + 50)]
        recorder.insert_events([stored(s, v) for s in subjects for v in (1, 2)])
        found = events_after(recorder, {s: n % 2 for n, s in enumerate(subjects)})
        assert versions_of(found) == {s: [1, 2] if n % 2 == 0 else [2] for n, s in enumerate(subjects)}

    def test_an_appended_batch_gets_positions_in_order_and_keeps_every_byte(
        self, recorder: ApplicationRecorder
    ) -> None:
        # Bytes and topics that a text encoding must escape (the PostgreSQL recorder sends them
        # as arrays): every byte value, quotes, commas, braces, parentheses, backslashes, unicode.
        awkward = ['a"b', "c,d", "{e}", "(f)", "g\\h", "i j", "k\u00e9\u2603", "NULL", ""]
        subject = uuid.uuid4()
        events = [
            StoredEvent(subject, n + 1, topic, bytes(range(256)) + topic.encode() + bytes([n]))
            for n, topic in enumerate(awkward)
        ]
        first = recorder.insert_events([stored(uuid.uuid4(), 1)])
        positions = recorder.insert_events(events)
        assert first is not None and positions is not None
        assert positions == list(range(first[-1] + 1, first[-1] + 1 + len(events)))
        again = events_after(recorder, {subject: 0})[subject]
        assert [(e.originator_version, e.topic, e.state) for e in again] == [
            (e.originator_version, e.topic, e.state) for e in events
        ]
        notes = recorder.select_notifications(start=positions[0], limit=len(events))
        assert [(n.id, n.topic, n.state) for n in notes] == [
            (position, e.topic, e.state) for position, e in zip(positions, events, strict=True)
        ]

    def test_a_version_taken_fails_the_whole_batch(self, recorder: ApplicationRecorder) -> None:
        taken, other = uuid.uuid4(), uuid.uuid4()
        recorder.insert_events([stored(taken, 1)])
        with pytest.raises(IntegrityError):
            recorder.insert_events([stored(other, 1), stored(taken, 2), stored(taken, 1)])
        assert versions_of(events_after(recorder, {taken: 0, other: 0})) == {taken: [1]}


class TestInMemoryRecorder(EventStoreReads):
    @pytest.fixture
    def recorder(self) -> ApplicationRecorder:
        _, made = open_recorder({"PERSISTENCE_MODULE": "eventsourcing.popo"})
        assert not isinstance(made, ReadsManySubjects)  # the fallback, one read per subject
        return made


class TestSQLiteRecorder(EventStoreReads):
    @pytest.fixture
    def recorder(self, tmp_path: Path) -> Iterator[ApplicationRecorder]:
        factory, made = open_recorder(
            {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(tmp_path / "events.db"),
                "CREATE_TABLE": "y",
                "APPLICATION_RECORDER_TOPIC": SQLITE_TOPIC,
            }
        )
        assert isinstance(made, CheckpointedSQLiteRecorder)
        yield made
        made.close()
        factory.close()


@pytest.mark.postgres
class TestPostgresRecorder(EventStoreReads):
    @pytest.fixture
    def schema(self) -> Iterator[str]:
        with scratch_schema("ledger_test") as name:
            yield name

    @pytest.fixture
    def recorder(self, schema: str) -> Iterator[ApplicationRecorder]:
        env = recorder_env(pg_dsn("owner"), create=True) | {"POSTGRES_SCHEMA": schema}
        assert env["APPLICATION_RECORDER_TOPIC"] == POSTGRES_TOPIC
        factory, made = open_recorder(env)
        assert isinstance(made, PostgresLedgerRecorder)
        yield made
        factory.close()

    def test_an_append_waits_for_every_other_writer_of_the_table(
        self, recorder: ApplicationRecorder, schema: str
    ) -> None:
        """eventsourcing's EXCLUSIVE table lock: positions are handed out in commit order, so a
        reader of the log (the relay) never passes a position that a slower writer fills later."""
        table = sql.SQL("{}.stored_events").format(sql.Identifier(schema))
        with psycopg.connect(pg_dsn("owner")) as other:
            # Another writer's transaction, open: it holds the table's ROW EXCLUSIVE lock.
            other.execute(
                sql.SQL(
                    "INSERT INTO {} (originator_id, originator_version, topic, state) "
                    "VALUES (%s, 1, 'fake.Event', '')"
                ).format(table),
                (uuid.uuid4(),),
            )
            appending = threading.Thread(
                target=recorder.insert_events, args=([stored(uuid.uuid4(), 1)],)
            )
            appending.start()
            appending.join(0.5)
            assert appending.is_alive()  # waiting for the lock, not writing beside the other
            other.commit()
            appending.join(10)
            assert not appending.is_alive()
        notes = recorder.select_notifications(start=None, limit=10)
        assert [n.id for n in notes] == [1, 2]  # the waiting append came second
