"""Runs a `consentry` command whose shredder stops for good at one point: a crash waiting to happen.

    python tests/stop_in_shredder.py POINT SIGNAL_FILE consentry-arguments...

POINT is `issue` (the keys are destroyed, the certificate not yet issued) or `record` (the
certificate is issued, not yet recorded in the ledger). When a shredder thread reaches the point it
writes the subject id to SIGNAL_FILE and blocks forever, so the test can SIGKILL the process exactly
there. Nothing of this is in the product: the test runs the real command with this patch applied.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from consentry import cli
from consentry.core import events as ev
from consentry.shredder import certificates, service

HARNESS = Path(__file__).resolve()


def reached(signal_file: Path, timeout: float = 60) -> str:
    """Waits until the process is held at the stop point; the subject id it is shredding."""
    deadline = time.monotonic() + timeout
    while not signal_file.exists():
        assert time.monotonic() < deadline, "the shredder never reached the stop point"
        time.sleep(0.05)
    return signal_file.read_text()


def _stop_here(signal_file: Path, subject_id: uuid.UUID) -> None:
    partial = signal_file.with_suffix(".partial")
    partial.write_text(str(subject_id))
    partial.rename(signal_file)
    threading.Event().wait()  # until SIGKILL


def main() -> None:
    point, signal_file, *arguments = sys.argv[1:]
    target = Path(signal_file)

    def before_issue(**claims: Any) -> tuple[bytes, bytes]:
        _stop_here(target, claims["subject_id"])
        raise AssertionError("unreachable")

    def before_record(
        _: service.Shredder, request: ev.LedgerEvent, result: service.ShredResult, *, erased: bool
    ) -> service.ShredResult:
        _stop_here(target, result.subject_id)
        raise AssertionError("unreachable")

    if point == "issue":
        certificates.issue = before_issue
    elif point == "record":
        service.Shredder._record = before_record  # type: ignore[method-assign,assignment]  # the crash point
    else:
        raise SystemExit(f"unknown stop point {point}")
    sys.argv = ["consentry", *arguments]
    cli.main()


if __name__ == "__main__":
    main()
