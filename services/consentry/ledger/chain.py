"""Verification of the per-subject hash chains over the stored bytes.

Each event carries the SHA-256 of the stored bytes of its subject's previous event. The chain is over
ciphertext, so it verifies without keys and still verifies after shredding; any flipped byte in a
stored event breaks the link of the event after it (or fails to decode at all).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from consentry.core.avro import AvroCodec
from consentry.core.errors import Rejected
from consentry.core.events import GENESIS
from consentry.ledger.application import chain_hash


@dataclass(frozen=True, slots=True)
class Break:
    """Where a chain is broken, and how."""

    subject_id: uuid.UUID | None
    position: int
    problem: str


@dataclass(slots=True)
class ChainReport:
    """The result of verifying every event in the log."""

    events: int = 0
    subjects: int = 0
    breaks: list[Break] = field(default_factory=list)
    heads: dict[uuid.UUID, bytes] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.breaks


def verify_chain(codec: AvroCodec, log: Iterable[tuple[int, bytes]]) -> ChainReport:
    """Checks sequence numbers and hash links of every subject in (position, bytes) log order."""
    report = ChainReport()
    last: dict[uuid.UUID, tuple[int, bytes]] = {}
    for position, state in log:
        report.events += 1
        try:
            _, record = codec.decode(state)
        except Rejected as exc:
            report.breaks.append(Break(None, position, f"undecodable event ({exc.reason.value})"))
            continue
        meta = record["meta"]
        subject_id: uuid.UUID = meta["subject_id"]
        sequence, prev = last.get(subject_id, (0, GENESIS))
        if meta["sequence"] != sequence + 1:
            report.breaks.append(
                Break(subject_id, position, f"sequence {meta['sequence']} follows {sequence}")
            )
        if meta["prev_hash"] != prev:
            report.breaks.append(
                Break(
                    subject_id,
                    position,
                    f"event {meta['sequence']} does not link to its predecessor",
                )
            )
        last[subject_id] = (meta["sequence"], chain_hash(state))
    report.subjects = len(last)
    report.heads = {s: h for s, (_, h) in last.items()}
    return report
