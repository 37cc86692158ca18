"""The producer SDK over real HTTP: typed builders in, typed per-record results out."""

from __future__ import annotations

import uuid

import pytest

from consentry.client import (
    Producer,
    ProducerError,
    Reason,
    access_report,
    consent_grant,
    consent_withdrawal,
    contact_report,
    data_update,
    erasure_request,
)
from tests.e2e.api import SUPPORT, timeline
from tests.e2e.conftest import Server
from tests.support import canary, codec, fake_email

SHOP = "demo-shop-token"


def test_a_grant_and_an_update_are_accepted_and_a_resend_is_a_duplicate(server: Server) -> None:
    ref = "shop:" + canary("ref")
    grant = consent_grant(ref, "support", "web", "2026-11", evidence=canary("evidence"))
    update = data_update(ref, "support", {"email": fake_email(), "first_name": canary("name")})
    with Producer(SHOP, http_url=server.base) as shop:
        first = shop.send_http([grant, update])
        again = shop.send_http([grant, update])
    assert [r.status for r in first] == ["accepted", "accepted"]
    subject = first[0].subject_id
    assert isinstance(subject, uuid.UUID)
    assert first[1].subject_id == subject
    assert all(isinstance(r.event_id, uuid.UUID) and r.reason is None for r in first)
    assert [r.status for r in again] == ["duplicate", "duplicate"]
    assert all(r.subject_id == subject for r in again)


def test_a_resend_after_the_subject_was_erased_is_still_a_duplicate(server: Server) -> None:
    ref = "shop:" + canary("ref")
    grant = consent_grant(ref, "support", "web", "2026-11", evidence=canary("evidence"))
    update = data_update(ref, "support", {"email": fake_email()})
    erasure = erasure_request(ref)
    with Producer(SHOP, http_url=server.base) as shop:
        first = shop.send_http([grant, update])
        # The embedded platform shreds right after the request is written: the reference is gone.
        (requested,) = shop.send_http([erasure])
        subject = first[0].subject_id
        assert isinstance(subject, uuid.UUID) and requested.status == "accepted"
        events = timeline(server, str(subject))
        assert events[-1]["type"] == "SubjectErased"
        with server.client(SUPPORT) as support:
            assert support.get("/v1/subjects", params={"ref": ref}).status_code == 404
        again = shop.send_http([update, erasure, grant])
    assert [(r.status, r.subject_id) for r in again] == [("duplicate", subject)] * 3
    assert (again[0].event_id, again[1].event_id) == (first[1].event_id, requested.event_id)
    assert timeline(server, str(subject)) == events
    with server.client(SUPPORT) as support:
        assert support.get("/v1/subjects", params={"ref": ref}).status_code == 404


def test_a_field_outside_the_purpose_is_rejected_with_its_reason(server: Server) -> None:
    ref, value = "shop:" + canary("ref"), canary("size")
    with Producer(SHOP, http_url=server.base) as shop:
        results = shop.send_http(
            [
                consent_grant(ref, "support", "web", "2026-11"),
                data_update(ref, "support", {"shoe_size": value}),
            ]
        )
    assert results[0].status == "accepted"
    assert results[1].status == "rejected"
    assert results[1].reason is Reason.FIELD_NOT_ALLOWED
    assert "shoe_size" in results[1].detail
    assert value not in results[1].detail


def test_every_builder_speaks_the_intake_wire_format(server: Server) -> None:
    ref = "shop:" + canary("ref")
    records = [
        consent_grant(ref, "support", "web", "2026-11", data_categories=["email", "phone"]),
        data_update(ref, "support", {"phone": "+10000000000"}, rectification=True),
        contact_report(ref, "support", "email", correlation_id="c-" + uuid.uuid4().hex),
        access_report(ref, "support", "agent-1", "support_agent", ["phone"]),
        consent_withdrawal(ref, "support", "web"),
        erasure_request(ref),
    ]
    with Producer(SHOP, http_url=server.base, codec=codec()) as shop:
        results = shop.send_http(records)
    assert [(r.status, r.reason) for r in results] == [("accepted", None)] * len(records)


def test_an_unknown_token_is_refused_for_the_whole_batch(server: Server) -> None:
    token = canary("token")
    with Producer(token, http_url=server.base) as stranger, pytest.raises(ProducerError) as caught:
        stranger.send_http([erasure_request("shop:" + canary("ref"))])
    assert caught.value.status == 401
    assert token not in str(caught.value)
