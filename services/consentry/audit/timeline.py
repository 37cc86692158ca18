"""Timelines: every event's clear metadata, without any personal value."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

from consentry.core.avro import AvroCodec
from consentry.core.events import LedgerEvent


def clear_metadata(codec: AvroCodec, event: LedgerEvent) -> dict[str, Any]:
    """The event's pseudonymous fields; personal fields appear only as field names."""
    contract = codec.contract(event.avro_name)
    meta = event.meta
    item: dict[str, Any] = {
        "type": event.type_name,
        "event_id": str(meta.event_id),
        "sequence": meta.sequence,
        "occurred_at": meta.occurred_at.isoformat(),
        "recorded_at": meta.recorded_at.isoformat(),
        "producer": meta.producer,
        "policy_version": meta.policy_version,
        "actor": None
        if meta.actor is None
        else {"actor_id": meta.actor.actor_id, "role": meta.actor.role},
        "correlation_id": meta.correlation_id,
    }
    for f in fields(event):
        if f.name == "meta" or f.name in ("certificate", "signature"):
            continue
        value = getattr(event, f.name)
        if f.name in contract.pii:
            if f.name in contract.pii_maps:
                item["field_names"] = sorted(value)
            continue
        item[f.name] = _jsonable(value)
    return item


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value
