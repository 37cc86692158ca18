"""A baseline's distributed services: `python -m bench.baseline_services serve VARIANT PORT | relay`.

The distributed API and relay exactly as `consentry serve` and `consentry relay` compose them, with
one change each:
- `serve`: the API's ledger stores with the baseline's mapper (`use_baseline`);
- `relay` (the whole-state cipher only): the log's states are decrypted as they are read, so the
  processors and shredder workers, started as they always are, get Avro bytes on Kafka. The
  plaintext baseline stores Avro bytes already, and runs the platform's own relay.
The whole-state cipher's key comes from BENCH_WHOLE_STATE_KEY, which the benchmark sets for both
processes of a stack. Only the benchmarks start these: a baseline drops guarantees the platform
must keep.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Final, cast

from eventsourcing.persistence import ApplicationRecorder

from bench.baselines import VARIANTS, Variant, use_baseline, whole_state_cipher
from consentry.cli import serve_api
from consentry.cluster import log_reader, open_api, run_relay
from consentry.core.runtime import tune_gc
from consentry.core.settings import load_settings
from consentry.relay.relay import EventLog, LogEntry

KEY_VARIABLE: Final = "BENCH_WHOLE_STATE_KEY"
BASELINES: Final = tuple(v for v in VARIANTS if v != "sealed")


def opened_pages(read: EventLog, open_state: Callable[[bytes], bytes]) -> EventLog:
    """The relay's pages with each stored state opened (to Avro bytes)."""

    def pages(after: int, limit: int) -> Sequence[LogEntry]:
        return [LogEntry(e.position, e.subject_id, open_state(e.state)) for e in read(after, limit)]

    return pages


def whole_state_key() -> str:
    key = os.environ.get(KEY_VARIABLE)
    if not key:
        raise SystemExit(f"{KEY_VARIABLE} is not set: the API and the relay must share the key")
    return key


def serve(variant: Variant, port: int) -> None:
    """The distributed API with the baseline's mapper, until SIGTERM."""
    settings = load_settings(port=port)
    platform = open_api(settings)
    use_baseline(platform.ledger, variant, whole_state_key() if variant == "aes_cipher" else None)
    serve_api(platform, settings)


def relay() -> None:
    """The relay of the whole-state cipher's stack: the log decrypted as it is read, until SIGTERM."""
    decrypt = whole_state_cipher(whole_state_key()).decrypt

    def pages(recorder: ApplicationRecorder) -> EventLog:
        return opened_pages(log_reader(recorder), decrypt)

    run_relay(load_settings(), pages=pages)


def main(argv: Sequence[str]) -> None:
    """serve VARIANT PORT, or relay."""
    tune_gc()  # as every `consentry` command sets up its process
    match argv:
        case ["serve", variant, port] if variant in BASELINES:
            serve(cast(Variant, variant), int(port))
        case ["relay"]:
            relay()
        case _:
            raise SystemExit(f"usage: serve {'|'.join(BASELINES)} PORT, or relay")


if __name__ == "__main__":
    main(sys.argv[1:])
