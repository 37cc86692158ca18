"""Typed settings, each from a `CONSENTRY_` environment variable, validated at start-up.

| variable | meaning | default |
|---|---|---|
| CONSENTRY_DATA_DIR | the embedded platform's SQLite files and key file; the workers' state | var/data |
| CONSENTRY_POLICY | path of the policy YAML file | examples/policy.yaml |
| CONSENTRY_SCHEMA_DIR | directory of the Avro schema files | the repository's schemas/ |
| CONSENTRY_MASTER_KEY | base64 master key (>= 32 bytes); replaces the key file when set | unset |
| CONSENTRY_KEY_FILE | path of the local key file (created 0600 on first run) | DATA_DIR/keys.json |
| CONSENTRY_HOST / CONSENTRY_PORT | where the HTTP API listens | 127.0.0.1 / 8000 |
| CONSENTRY_MAX_BATCH | most records one intake request may carry | 1000 |
| CONSENTRY_MAX_REQUEST_BYTES | most bytes of one HTTP request body (413 `oversized`) | 8 MiB |
| CONSENTRY_KAFKA_BOOTSTRAP | Kafka bootstrap servers (distributed mode) | unset |
| CONSENTRY_PARTITIONS | partitions of the topics the platform creates | 6 |
| CONSENTRY_PG_DSN | PostgreSQL DSN of the service's own role (ledger, keystore) | unset |
| CONSENTRY_PG_VIEWS_DSN | PostgreSQL DSN for the read models (API: query role; processors) | unset |
| CONSENTRY_PG_OWNER_DSN | PostgreSQL DSN of the owner role, for `consentry migrate` only | unset |
| CONSENTRY_RETENTION_INTERVAL | seconds between retention sweeps (embedded, shredder worker) | 3600 |
| CONSENTRY_ANOMALY_INTERVAL | seconds between access-anomaly sweeps (embedded, shredder worker) | 60 |
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from consentry.core.errors import SettingsError

REPO_ROOT = Path(__file__).resolve().parents[3]


class Settings(BaseSettings):
    """Settings of the embedded platform and the services of the distributed mode."""

    model_config = SettingsConfigDict(env_prefix="CONSENTRY_", extra="forbid", frozen=True)

    data_dir: Path = Path("var/data")
    policy: Path = REPO_ROOT / "examples" / "policy.yaml"
    schema_dir: Path = REPO_ROOT / "schemas"
    master_key: SecretStr | None = None
    key_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_batch: int = Field(default=1000, ge=1, le=100_000)
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024**3)
    kafka_bootstrap: str | None = None
    partitions: int = Field(default=6, ge=1, le=1024)
    pg_dsn: SecretStr | None = None
    pg_views_dsn: SecretStr | None = None
    pg_owner_dsn: SecretStr | None = None
    retention_interval: float = Field(default=3600.0, gt=0, le=86_400)
    anomaly_interval: float = Field(default=60.0, gt=0, le=86_400)

    @property
    def key_path(self) -> Path:
        return self.key_file or self.data_dir / "keys.json"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and explicit overrides; SettingsError names the bad one."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]  # validated by pydantic
    except ValidationError as exc:
        problems = "; ".join(
            f"CONSENTRY_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(problems) from None
