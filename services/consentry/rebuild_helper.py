"""The embedded platform's rebuild helper: one span of subjects rebuilt in a process of its own.

The runner sends it to a spawned process, so it carries paths only and opens the stores there:
`events.db` read subject by subject, `views.db` written (SQLite takes the two processes' pages one
at a time), and the Avro schemas. It holds no key: the views are built from sealed values.
"""

from __future__ import annotations

import atexit
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
        log, store, codec = _opened(self.events_db, self.views_db, self.schema_dir)
        with store.bulk_writes():
            return rebuild_span(log, codec, store, upto, page, span)


@functools.cache
def _opened(
    events_db: Path, views_db: Path, schema_dir: Path
) -> tuple[SQLiteSubjectLog, SQLiteViewStore, AvroCodec]:
    """The log, views and schemas, opened once per helper process: a helper takes many spans in
    turn (opening the views writes a transaction of its own, which waits for the other process's
    page). They close when the process ends, at the end of its rebuild."""
    codec, log = AvroCodec(schema_dir), SQLiteSubjectLog(events_db)
    store = SQLiteViewStore(views_db)
    atexit.register(store.close)
    return log, store, codec
