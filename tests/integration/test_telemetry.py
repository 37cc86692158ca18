"""No request data reaches OpenTelemetry, even in a process that has a tracer provider set up.

FastAPI (0.165 on) records spans of its own as soon as any tracer provider is configured in the
process, with the URL query (where the subject look-up carries an external reference) among their
attributes. The platform's app turns that off; a bare FastAPI app in the same process shows the
channel exists, so the test cannot pass for want of a working provider.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from consentry.core.settings import load_settings
from consentry.platform import Platform, create_app
from tests.support import EXAMPLE_POLICY, canary

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    # The global provider can be set once per process; later tests' apps see it too, which is
    # the point: whatever the host process configures, the platform's app adds nothing to it.
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    return _EXPORTER


def _get(app: FastAPI, path: str, params: dict[str, str]) -> int:
    async def call() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answer = await client.get(path, params=params, headers={"Authorization": "Bearer x"})
            return answer.status_code

    return asyncio.run(call())


def test_the_platforms_app_records_no_span_while_a_bare_app_would_record_the_query(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    token = canary("ref")  # letters, digits and dashes: the same when URL-encoded
    ref = f"shop:{token}@example.com"
    bare = FastAPI()

    @bare.get("/v1/subjects")
    def lookup(ref: str) -> dict[str, str]:
        return {"ref_len": str(len(ref))}

    spans.clear()
    assert _get(bare, "/v1/subjects", {"ref": ref}) == 200
    exported = json.dumps([dict(s.attributes or {}) for s in spans.get_finished_spans()])
    assert token in exported  # the channel works: the query is a span attribute

    platform = Platform.open(load_settings(data_dir=tmp_path / "data", policy=EXAMPLE_POLICY))
    try:
        app = create_app(platform)
        spans.clear()
        assert _get(app, "/v1/subjects", {"ref": ref}) == 401  # refused, and still not traced
        assert _get(app, "/v1/subjects/not-a-uuid/profile", {"purpose": ref}) == 422
        assert spans.get_finished_spans() == ()
    finally:
        platform.close()
