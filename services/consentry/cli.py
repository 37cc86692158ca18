"""The `consentry` command: run the embedded platform, replay, audit and verify certificates."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from consentry.core.errors import ConsentryError, SettingsError
from consentry.core.runtime import tune_gc
from consentry.core.settings import Settings, load_settings

if TYPE_CHECKING:
    from consentry.core.keystore import Keystore
    from consentry.ledger.application import Ledger
    from consentry.platform import Platform


def _settings(data_dir: Path | None, policy: Path | None, **extra: Any) -> Settings:
    return load_settings(data_dir=data_dir, policy=policy, **extra)


def serve_api(platform: Platform, settings: Settings) -> None:
    """Serves the platform's HTTP API until SIGTERM/SIGINT, then closes its stores."""
    import uvicorn

    from consentry.platform import create_app

    try:
        uvicorn.run(
            create_app(platform),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
        )
    finally:
        platform.close()


def _fail(message: str) -> None:
    click.echo(f"consentry: {message}", err=True)
    sys.exit(2)


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Data directory (env CONSENTRY_DATA_DIR).",
)
policy_option = click.option(
    "--policy",
    type=click.Path(path_type=Path),
    default=None,
    help="Policy YAML file (env CONSENTRY_POLICY).",
)


@click.group()
def cli() -> None:
    """Consentry: consent-first customer data with crypto-shredding erasure."""
    tune_gc()


@cli.command()
@data_dir_option
@policy_option
@click.option("--host", default=None, help="Listen address (env CONSENTRY_HOST), loopback by default.")
@click.option("--port", type=int, default=None, help="Listen port (env CONSENTRY_PORT).")
def run(data_dir: Path | None, policy: Path | None, host: str | None, port: int | None) -> None:
    """Run the embedded platform (SQLite, one process) and its HTTP API."""
    from consentry.platform import Platform

    try:
        settings = _settings(data_dir, policy, host=host, port=port)
        platform = Platform.open(settings)
        platform.recover()
    except ConsentryError as exc:
        _fail(str(exc))
        return
    platform.runner.start()
    platform.start_background()
    base = f"http://{settings.host}:{settings.port}"
    click.echo(
        f"Consentry: data in {settings.data_dir}, policy {settings.policy} "
        f"(version {platform.policy.version})"
    )
    click.echo(f"  API   {base}/v1/...\n  docs  {base}/docs\n  health {base}/healthz")
    serve_api(platform, settings)


@cli.command()
@click.option(
    "--url",
    envvar="CONSENTRY_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="Base URL of the running instance (env CONSENTRY_URL).",
)
def demo(url: str) -> None:
    """Play a narrated scenario against a running instance (`make run`), with the demo tokens."""
    import httpx

    from consentry.demo import Demo, DemoFailed

    try:
        Demo(url, click.echo).run()
    except DemoFailed as exc:
        _fail(f"demo failed: {exc}")
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {type(exc).__name__} (is `make run` running?)")


@cli.command()
@data_dir_option
@policy_option
@click.option(
    "--kafka",
    is_flag=True,
    help="Distributed mode: rebuild the PostgreSQL views from consentry.events offset 0 "
    "(stop the processors worker first).",
)
def replay(data_dir: Path | None, policy: Path | None, kafka: bool) -> None:
    """Rebuild every read model from the ledger (stop `run` first)."""
    from rich.progress import Progress

    from consentry.platform import Platform

    if kafka:
        from consentry.cluster import replay_kafka

        done = replay_kafka(_settings(data_dir, policy))
        click.echo(f"replayed {done} events from consentry.events into the read models")
        return
    platform = Platform.open(_settings(data_dir, policy))
    total = platform.ledger.recorder.max_notification_id() or 0
    with Progress(transient=False) as progress:
        task = progress.add_task("replaying", total=total)
        done = platform.runner.rebuild(lambda n: progress.update(task, completed=n))
    click.echo(f"replayed {done} events into the read models")
    platform.close()


@cli.command()
@policy_option
def migrate(policy: Path | None) -> None:
    """Distributed mode: create the ledger, keystore and view tables (CONSENTRY_PG_OWNER_DSN)."""
    from consentry.cluster import migrate as migrate_tables
    from consentry.cluster import owner_dsn, provider_of

    try:
        settings = _settings(None, policy)
        migrate_tables(owner_dsn(settings), provider_of(settings))
    except ConsentryError as exc:
        _fail(str(exc))
    click.echo("tables of the ledger, keystore and views are in place")


@cli.command()
@policy_option
@click.option("--host", default=None, help="Listen address (env CONSENTRY_HOST), loopback by default.")
@click.option("--port", type=int, default=None, help="Listen port (env CONSENTRY_PORT).")
def serve(policy: Path | None, host: str | None, port: int | None) -> None:
    """Distributed mode: the HTTP API (intake, query, audit) on PostgreSQL."""
    from consentry.cluster import open_api

    try:
        settings = _settings(None, policy, host=host, port=port)
        platform = open_api(settings)
    except ConsentryError as exc:
        _fail(str(exc))
        return
    click.echo(f"Consentry API (distributed) on http://{settings.host}:{settings.port}")
    serve_api(platform, settings)


@cli.command()
@policy_option
def relay(policy: Path | None) -> None:
    """Distributed mode: copy the ledger's log to consentry.events until SIGTERM."""
    from consentry.cluster import run_relay

    try:
        run_relay(_settings(None, policy))
    except ConsentryError as exc:
        _fail(str(exc))


@cli.command()
@click.argument("kind", type=click.Choice(["processors", "shredder", "intake"]))
@policy_option
def worker(kind: str, policy: Path | None) -> None:
    """Distributed mode: run one faust worker until SIGTERM."""
    from consentry.workers import run_worker, worker_app

    try:
        settings = _settings(None, policy)
        app = worker_app(kind, settings)
    except ConsentryError as exc:
        _fail(str(exc))
        return
    run_worker(app, settings)


@cli.group()
def audit() -> None:
    """Auditors' tools."""


@audit.command("verify")
@data_dir_option
@policy_option
def audit_verify(data_dir: Path | None, policy: Path | None) -> None:
    """Verify every subject's hash chain; exits 1 on any break."""
    from consentry.ledger.chain import verify_chain
    from consentry.platform import Platform

    platform = Platform.open(_settings(data_dir, policy))
    report = verify_chain(platform.ledger.codec, platform.ledger.notifications())
    click.echo(
        json.dumps(
            {
                "ok": report.ok,
                "events": report.events,
                "subjects": report.subjects,
                "breaks": [b.problem + f" at {b.position}" for b in report.breaks],
            },
            indent=2,
        )
    )
    platform.close()
    sys.exit(0 if report.ok else 1)


@audit.command("timeline")
@click.argument("subject_id", type=click.UUID)
@data_dir_option
@policy_option
def audit_timeline(subject_id: uuid.UUID, data_dir: Path | None, policy: Path | None) -> None:
    """Print a subject's events as clear metadata (no personal data)."""
    from consentry.audit.timeline import clear_metadata
    from consentry.platform import Platform

    platform = Platform.open(_settings(data_dir, policy))
    for event in platform.ledger.history(subject_id):
        click.echo(json.dumps(clear_metadata(platform.ledger.codec, event)))
    platform.close()


@audit.command("exposure")
@click.option("--actor", default=None, help="Staff actor id: what they decrypted or sent on.")
@click.option("--producer", default=None, help="Producer name: what it sent or reported reading.")
@click.option("--processor", default=None, help="Sub-processor name: what it received.")
@click.option("--from", "start", default=None, help="Window start, ISO-8601 with a zone (inclusive).")
@click.option("--to", "end", default=None, help="Window end, ISO-8601 with a zone (exclusive).")
@data_dir_option
@policy_option
def audit_exposure(
    actor: str | None,
    producer: str | None,
    processor: str | None,
    start: str | None,
    end: str | None,
    data_dir: Path | None,
    policy: Path | None,
) -> None:
    """Breach impact report: subjects and fields one party was exposed to (JSON, no personal data).

    Reads the embedded data directory, or the PostgreSQL ledger if CONSENTRY_PG_DSN is set.
    """
    from datetime import datetime

    from consentry.audit.exposure import exposure_report, selector_of

    try:
        window = [None if t is None else datetime.fromisoformat(t) for t in (start, end)]
        selector = selector_of(actor, producer, processor, *window)
    except ValueError as exc:
        _fail(f"exposure: {exc}")
        return
    try:
        ledger = _ledger(_settings(data_dir, policy))
    except ConsentryError as exc:
        _fail(str(exc))
        return
    try:
        report = exposure_report(ledger.codec, ledger.notifications(), selector)
    finally:
        ledger.close()
        ledger.keystore.close()
    click.echo(json.dumps(report, indent=2))


def _ledger(settings: Settings) -> Ledger:
    """The ledger alone: PostgreSQL if CONSENTRY_PG_DSN is set, else the embedded files."""
    if settings.pg_dsn is not None:
        from consentry.cluster import dsn_of, open_ledger, provider_of

        return open_ledger(settings, provider_of(settings), dsn_of(settings, "pg_dsn"))
    from consentry.platform import Platform

    platform = Platform.open(settings)
    platform.views.close()
    return platform.ledger


@cli.group()
def keys() -> None:
    """Key-encryption keys: rotation and status (embedded, or distributed with CONSENTRY_PG_DSN)."""


def _keystore(settings: Settings) -> Keystore:
    if settings.pg_dsn is not None:
        from consentry.cluster import open_keystore as open_shared

        return open_shared(settings)
    from consentry.platform import open_keystore

    return open_keystore(settings)


@keys.command("status")
@data_dir_option
def keys_status(data_dir: Path | None) -> None:
    """Print the KEK versions and how many data keys each one wraps (no key material)."""
    try:
        keystore = _keystore(_settings(data_dir, None))
        usage, provider = keystore.kek_usage(), keystore.provider
        status = {
            "active": provider.active_version,
            "versions": list(provider.kek_versions),
            "keys_per_version": {str(v): n for v, n in sorted(usage.items())},
        }
        keystore.close()
    except ConsentryError as exc:
        _fail(str(exc))
        return
    click.echo(json.dumps(status, indent=2))


@keys.command("rotate")
@data_dir_option
@click.option(
    "--grace-seconds",
    type=float,
    default=None,
    help="Wait after adding the new KEK, so other processes see it before the re-wrap (default 2).",
)
@click.option(
    "--skip-unreadable",
    is_flag=True,
    help="Retire the old KEKs even if some keys open under none of them (keys of another key file).",
)
def keys_rotate(data_dir: Path | None, grace_seconds: float | None, skip_unreadable: bool) -> None:
    """Re-wrap every data key under a new KEK, then retire the old KEKs from the key file.

    Works while the platform runs: its processes pick up the new key file within a second.
    """
    import time
    from dataclasses import asdict

    from consentry.core.rotation import GRACE_SECONDS, rotate_kek

    try:
        keystore = _keystore(_settings(data_dir, None))
        try:
            done = rotate_kek(
                keystore,
                grace_seconds=GRACE_SECONDS if grace_seconds is None else grace_seconds,
                sleep=time.sleep,
                skip_unreadable=skip_unreadable,
            )
        finally:
            keystore.close()
    except ConsentryError as exc:
        _fail(str(exc))
        return
    click.echo(json.dumps(asdict(done), indent=2))


@keys.command("init")
@click.option(
    "--from-master-key",
    is_flag=True,
    required=True,
    help="Write the secrets CONSENTRY_MASTER_KEY derives into CONSENTRY_KEY_FILE (never overwritten).",
)
@data_dir_option
def keys_init(from_master_key: bool, data_dir: Path | None) -> None:
    """Move from a master key to a key file whose KEKs can be rotated; every key stays the same."""
    from consentry.platform import key_provider

    try:
        settings = _settings(data_dir, None)
        if not settings.master_key:
            raise SettingsError("CONSENTRY_MASTER_KEY is not set")
        key_provider(settings).to_key_file(settings.key_path)
    except ConsentryError as exc:
        _fail(str(exc))
        return
    click.echo(f"key file {settings.key_path} written (0600); unset CONSENTRY_MASTER_KEY and use it")


@cli.group()
def erasure() -> None:
    """Erasure certificates."""


@erasure.command("verify")
@click.argument("certificate", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--public-key",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="PEM public key to trust instead of the one inside the document.",
)
def erasure_verify(certificate: Path, public_key: Path | None) -> None:
    """Verify an erasure certificate document offline."""
    from consentry.shredder.certificates import CertificateError, verify_document

    try:
        document = json.loads(certificate.read_text())
        if public_key is not None:
            document["public_key"] = public_key.read_text()
        verified = verify_document(document)
    except (ValueError, CertificateError) as exc:
        click.echo(f"INVALID: {exc}", err=True)
        sys.exit(1)
    click.echo(
        f"VALID: subject {verified.subject_id} erased ({verified.reason}); "
        f"{len(verified.key_ids)} keys destroyed at {verified.shredded_at.isoformat()}"
    )
    if verified.processors:
        click.echo(f"  tell the sub-processors that received the data: {', '.join(verified.processors)}")


def main() -> None:
    """Entry point of the console script."""
    cli()


if __name__ == "__main__":
    main()
