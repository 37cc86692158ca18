"""The embedded platform's rebuild helper: one span of subjects rebuilt in a process of its own.

The runner sends it to a spawned process, so it carries paths only and opens the stores there:
`events.db` read subject by subject, `views.db` written (SQLite takes the two processes' pages one
at a time), and the Avro schemas. It holds no key: the views are built from sealed values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from consentry.adapters.sqlite_log import SQLiteSubjectLog
from consentry.adapters.sqlite_views import SQLiteViewStore
from consentry.core.avro import AvroCodec
from consentry.processors.rebuild import Span, rebuild_span


@dataclass(frozen=True)
class SQLiteSpanRebuilder:
    """Rebuilds a span of subjects of an embedded data directory's log into its views."""

    events_db: Path
    views_db: Path
    schema_dir: Path

    def __call__(self, span: Span, upto: int, page: int) -> int:
        store = SQLiteViewStore(self.views_db)
        try:
            log = SQLiteSubjectLog(self.events_db)
            with store.bulk_writes():
                return rebuild_span(log, _codec(self.schema_dir), store, upto, page, span)
        finally:
            store.close()


@functools.cache
def _codec(schema_dir: Path) -> AvroCodec:
    # A helper process takes several spans in turn: the schemas are read and compiled once.
    return AvroCodec(schema_dir)
