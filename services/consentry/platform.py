"""Composition root of the embedded platform: one process, SQLite files under one data directory.

`events.db` (eventsourcing's SQLite recorder: the ledger), `keystore.db` (wrapped keys and the blind
index), `views.db` (read models) and `keys.json` (the KEK file, 0600, unless a master key is set).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Protocol

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException

from consentry import __version__
from consentry.adapters.sqlite_keystore import SQLiteKeystore
from consentry.adapters.sqlite_ledger import RECORDER_TOPIC, CheckpointedSQLiteRecorder
from consentry.adapters.sqlite_log import SQLiteSubjectLog
from consentry.adapters.sqlite_views import SQLiteViewStore
from consentry.audit.anomalies import AnomalyWatch
from consentry.audit.http import audit_router
from consentry.core.avro import AvroCodec
from consentry.core.clock import Clock, SystemClock
from consentry.core.errors import ConflictError, ConsentryError, Reason
from consentry.core.intake import IntakeParser
from consentry.core.keys import KeyProvider, LocalKeyFileProvider
from consentry.core.keystore import Keystore
from consentry.core.policy import Policy, load_policy
from consentry.core.problems import Problem, invalid_request
from consentry.core.runtime import collecting_after
from consentry.core.settings import Settings
from consentry.core.views import ViewStore
from consentry.intake.http import intake_router
from consentry.intake.limits import App, BodyLimit, Message, Receive, Scope, Send
from consentry.ledger.application import Ledger, open_recorder
from consentry.processors.runner import EmbeddedRunner
from consentry.query.http import query_router
from consentry.rebuild_helper import SQLiteSpanRebuilder
from consentry.shredder import certificates
from consentry.shredder.retention import RetentionSchedule
from consentry.shredder.service import Shredder, ShredResult

log = logging.getLogger("consentry")


class ViewsRuntime(Protocol):
    """How a process keeps its read models current: in-process runner or remote workers."""

    def refresh(self, subject_id: uuid.UUID | None = None, version: int | None = None) -> None:
        """Returns once the views hold everything the ledger has (for the subject, if given;
        with `version`, the subject's events up to that sequence)."""

    def rebuild(self, progress: Callable[[int], None] | None = None) -> int:
        """Empties the views and projects the whole log again; None-capable runtimes raise."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Platform:
    """Everything one process runs, wired together (embedded, or the distributed API service)."""

    settings: Settings
    policy: Policy
    provider: KeyProvider
    keystore: Keystore
    ledger: Ledger
    views: ViewStore
    runner: ViewsRuntime
    shredder: Shredder
    embedded: bool = True
    _shredded_to: int = field(default=0, init=False, repr=False)
    _shred_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    retention: RetentionSchedule = field(default_factory=RetentionSchedule, init=False, repr=False)
    anomalies: AnomalyWatch = field(default_factory=AnomalyWatch, init=False, repr=False)
    _watch_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _sweepers: list[threading.Thread] = field(default_factory=list, init=False, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    @classmethod
    def open(cls, settings: Settings, clock: Clock | None = None) -> Platform:
        """Opens (creating if needed) the data directory's stores; fails fast on bad settings."""
        the_clock = clock or SystemClock()
        policy = load_policy(settings.policy)
        data = settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        provider = key_provider(settings)
        # One process writes the embedded stores (maintenance commands only re-wrap keys).
        keystore = SQLiteKeystore(data / "keystore.db", provider, the_clock, sole_writer=True)
        factory, recorder = open_recorder(
            {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(data / "events.db"),
                "CREATE_TABLE": "y",
                "APPLICATION_RECORDER_TOPIC": RECORDER_TOPIC,
            }
        )
        if not isinstance(recorder, CheckpointedSQLiteRecorder):
            raise TypeError("eventsourcing ignored the recorder topic")

        def close_store() -> None:
            try:
                recorder.close()
            finally:
                factory.close()

        codec = AvroCodec(settings.schema_dir)
        ledger = Ledger(
            recorder,
            codec,
            keystore,
            lambda: policy,
            the_clock,
            on_close=close_store,
            sole_writer=True,
        )
        views = SQLiteViewStore(data / "views.db")
        runner = EmbeddedRunner(
            ledger.notifications,
            codec,
            views,
            recent=ledger.recent,
            subjects=SQLiteSubjectLog(data / "events.db"),
            helper=SQLiteSpanRebuilder(data / "events.db", data / "views.db", settings.schema_dir),
        )
        return cls(
            settings, policy, provider, keystore, ledger, views, runner, Shredder(ledger, the_clock)
        )

    def recover(self) -> None:
        """Finishes shredding a crash interrupted, then brings the views up to date."""
        if self.embedded:
            with self._shred_lock:
                self.shredder.run_pending()
                self._shredded_to = self.ledger.recorder.max_notification_id() or 0
        self.runner.refresh()

    def erase(self, subject_id: uuid.UUID) -> dict[str, Any]:
        """Shreds an erased subject now and answers with its certificate document.

        In distributed mode the shredder worker reacts to the request on `consentry.events`; the
        answer then only confirms the request, and the certificate follows in the erasure register.
        """
        if not self.embedded:
            return {"subject_id": str(subject_id), "status": "requested"}
        result = self.shredder.erase(subject_id)
        self.runner.refresh()
        document = self.certificate(subject_id)
        return {
            "subject_id": str(subject_id),
            "status": "erased",
            "key_ids_destroyed": len(result.key_ids),
            "certificate": document,
        }

    def certificate(self, subject_id: uuid.UUID) -> dict[str, Any] | None:
        """The subject's erasure certificate as a self-contained, verifiable document."""
        row = self.views.erasure(subject_id)
        if row is None or row.certificate is None or row.signature is None:
            return None
        return certificates.certificate_document(
            row.certificate, row.signature, self.provider.signing_key().public_key()
        )

    def after_write(self) -> None:
        """Shreds what new withdrawals ask for, and projects new events (read-your-writes).

        Distributed mode leaves both to the shredder and processor workers.
        """
        if self.embedded:
            with collecting_after():
                with self._shred_lock:
                    self._shredded_to = self.shredder.follow(self._shredded_to)
                self.runner.refresh()

    def sweep_retention(self) -> list[ShredResult]:
        """Shreds every purpose whose retention ran out, with a `retention` certificate each."""
        with self._shred_lock:
            results = self.shredder.sweep(self.retention)
        if results:
            self.runner.refresh()
        return results

    def sweep_anomalies(self) -> int:
        """Flags the new reads that break the policy's anomaly rules; answers how many."""
        with self._watch_lock:
            return self.anomalies.sweep(self.ledger)

    def start_background(self) -> None:
        """Retention and anomaly sweeps, now and then every CONSENTRY_RETENTION_INTERVAL and
        CONSENTRY_ANOMALY_INTERVAL seconds, each in a daemon thread."""
        work = (
            ("retention", self.sweep_retention, self.settings.retention_interval),
            ("anomalies", self.sweep_anomalies, self.settings.anomaly_interval),
        )
        for name, sweep, interval in work:
            thread = threading.Thread(
                target=self._every, args=(name, sweep, interval), name=f"consentry-{name}", daemon=True
            )
            self._sweepers.append(thread)
            thread.start()

    def _every(self, name: str, sweep: Callable[[], object], interval: float) -> None:
        while not self._stopping.is_set():
            try:
                done = sweep()
                if done:
                    log.info("%s sweep: %s", name, len(done) if isinstance(done, list) else done)
            except ConsentryError:
                log.exception("the %s sweep failed; it runs again at the next interval", name)
            self._stopping.wait(interval)

    def close(self) -> None:
        """Stops the runner and closes every store; safe to call twice."""
        self._stopping.set()
        for thread in self._sweepers:
            if thread is not threading.current_thread():
                thread.join(timeout=30)
        self.runner.stop()
        self.views.close()
        self.keystore.close()
        self.ledger.close()


def key_provider(settings: Settings) -> LocalKeyFileProvider:
    """The master key's derived secrets if one is set, else the key file (created if absent)."""
    if settings.master_key:
        return LocalKeyFileProvider.from_master_key(settings.master_key.get_secret_value())
    return LocalKeyFileProvider.open(settings.key_path)


def open_keystore(settings: Settings) -> Keystore:
    """The embedded keystore alone, for maintenance such as `consentry keys rotate`."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteKeystore(settings.data_dir / "keystore.db", key_provider(settings))


_NO_TELEMETRY: Final[TelemetryConfig] = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}


class Measured:
    """ASGI middleware: counts requests by route and status and times them, for `/metrics`.

    Plain ASGI rather than Starlette's `BaseHTTPMiddleware`, which costs every request an extra
    task and a streamed copy of the response.
    """

    def __init__(self, app: App, requests: Counter, latency: Histogram) -> None:
        self.app, self.requests, self.latency = app, requests, latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.requests.labels(route, str(status)).inc()
            self.latency.labels(route).observe(time.perf_counter() - started)


def create_app(platform: Platform) -> FastAPI:
    """The HTTP API of the embedded platform."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn re-raises SIGTERM once it has shut down, so this is the last code that runs:
        # the stores close here (SQLite checkpoints and removes its write-ahead logs).
        platform.close()

    app = FastAPI(
        title="Consentry",
        version=__version__,
        description="Consent-first customer data: every read is an event, erasure destroys keys.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry, once a tracer, meter or logger provider is set up in the
        # process (or FASTAPI_OTEL_AUTO_CONFIGURE=true), records URL queries (an external
        # reference is one) and validation failures with their messages. Personal data never goes
        # to telemetry: the platform's metrics are its own (/metrics, route templates only).
        telemetry=_NO_TELEMETRY,
    )
    registry = CollectorRegistry()
    requests = Counter(
        "consentry_http_requests", "HTTP requests", ["route", "status"], registry=registry
    )
    latency = Histogram("consentry_http_seconds", "HTTP latency", ["route"], registry=registry)
    ledger = platform.ledger
    parser = IntakeParser(ledger.codec, ledger.clock.now)
    app.include_router(intake_router(ledger, parser, platform.settings.max_batch, platform.after_write))
    app.include_router(
        query_router(
            ledger, platform.views, platform.runner.refresh, platform.erase, platform.certificate
        )
    )
    signing_public = platform.provider.signing_key().public_key()
    app.include_router(
        audit_router(
            ledger,
            platform.runner.rebuild if platform.embedded else None,
            lambda c, s: certificates.certificate_document(c, s, signing_public),
        )
    )

    app.add_middleware(BodyLimit, max_bytes=platform.settings.max_request_bytes)

    app.add_middleware(Measured, requests=requests, latency=latency)

    @app.exception_handler(Problem)
    async def problem(request: Request, exc: Problem) -> JSONResponse:
        return JSONResponse(
            exc.body(request.url.path), status_code=exc.status, media_type="application/problem+json"
        )

    @app.exception_handler(ConflictError)
    async def conflict(request: Request, exc: ConflictError) -> JSONResponse:
        body = Problem(
            409, "conflict", "the subject kept changing under the request; retry", reason=Reason.CONFLICT
        ).body(request.url.path)
        return JSONResponse(body, status_code=409, media_type="application/problem+json")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        in_body = any(e["loc"][:1] == ("body",) for e in exc.errors())
        reason = Reason.MALFORMED_REQUEST if in_body else Reason.INVALID_VALUE
        body = invalid_request(", ".join(where)[:300], reason).body(request.url.path)
        return JSONResponse(body, status_code=422, media_type="application/problem+json")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Starlette's own refusals (unknown route, wrong method, a body that does not decode as
        # text) answer problem details too; their detail texts are fixed, never request data.
        reason = Reason.MALFORMED_REQUEST if exc.status_code == 400 else None
        kind = "malformed-request" if reason else HTTPStatus(exc.status_code).phrase.lower()
        body = Problem(
            exc.status_code, kind.replace(" ", "-"), str(exc.detail)[:300], reason=reason
        ).body(request.url.path)
        return JSONResponse(
            body,
            status_code=exc.status_code,
            media_type="application/problem+json",
            headers=exc.headers,
        )

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "policy_version": ledger.policy.version,
            "log_position": ledger.recorder.max_notification_id() or 0,
            "views_position": platform.views.position("views"),
        }

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/keys/certificate-public-key", tags=["audit"])
    async def public_key() -> dict[str, str]:
        # No blocking work: served on the event loop, without a thread hand-off.
        return {"algorithm": "Ed25519", "public_key": certificates.public_key_pem(platform.provider)}

    @app.get("/v1/keys/intake-public-key", tags=["intake"])
    def intake_public_key() -> dict[str, str]:
        """The key producers seal Kafka intake envelopes to (HPKE, ML-KEM-768 + X25519)."""
        return {
            "suite": "MLKEM768_X25519/HKDF_SHA256/AES_256_GCM",
            "public_key": platform.provider.intake_public_key_pem(),
        }

    return app
