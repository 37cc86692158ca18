"""The distributed ledger's event store: eventsourcing's PostgreSQL recorder, reading subjects at once.

`PostgresLedgerRecorder` is eventsourcing's own `PostgresApplicationRecorder` (same table, same
statements, same transactions), selected through its `APPLICATION_RECORDER_TOPIC` setting. It adds
`select_events_after` (ledger/store.py): the events of all of a batch's subjects after the versions
the writer remembers, in one query instead of one round trip per subject.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Final

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL, Identifier

RECORDER_TOPIC: Final = "consentry.adapters.postgres_ledger:PostgresLedgerRecorder"


class PostgresLedgerRecorder(PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL application recorder, with one read for many subjects."""

    def select_events_after(
        self, versions: Mapping[uuid.UUID, int]
    ) -> dict[uuid.UUID, list[StoredEvent]]:
        """Each subject's events after its version, in version order: one query, each subject a
        lookup of the (subject, version) primary key."""
        statement = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::uuid[], %s::bigint[]) AS wanted(id, after) "
            "JOIN {schema}.{table} e ON e.originator_id = wanted.id "
            "AND e.originator_version > wanted.after "
            "ORDER BY e.originator_id, e.originator_version"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        found: dict[uuid.UUID, list[StoredEvent]] = {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, [list(versions), list(versions.values())], prepare=True)
            for row in curs.fetchall():
                subject_id = row["originator_id"]
                found.setdefault(subject_id, []).append(
                    StoredEvent(subject_id, row["originator_version"], row["topic"], bytes(row["state"]))
                )
        return found
