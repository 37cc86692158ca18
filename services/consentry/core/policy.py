"""The policy: purposes, roles, staff actors, producers and sub-processors, from one YAML file.

Tokens are stored as SHA-256 hashes only. A bad file fails at start-up with a message naming the bad
key (e.g. `purposes.marketing.retention_days: ...`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from consentry.core.errors import PolicyError

Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_\-]{0,62}$")]
TokenHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class LawfulBasis(StrEnum):
    """GDPR art. 6 lawful bases; only `consent` needs a grant per subject."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTERESTS = "vital_interests"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTERESTS = "legitimate_interests"


Permission = Literal["read", "export", "erase", "audit", "share", "contact"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactCap(_Model):
    """At most `max` contacts per `per_days` days for a purpose (counting only `channels`, if set)."""

    max: int = Field(ge=0)
    per_days: int = Field(ge=1)
    channels: tuple[Name, ...] = ()

    def counts(self, channel: str | None) -> bool:
        """Whether a contact over the channel counts against the cap (None: any channel)."""
        return not self.channels or channel is None or channel in self.channels


class QuietHours(_Model):
    """No contact for the purpose between `start` and `end` (local time of `timezone`)."""

    start: time
    end: time
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{value}'") from None
        return value

    def covers(self, moment: datetime) -> bool:
        """True if the moment falls in the quiet hours (which may span midnight)."""
        local = moment.astimezone(ZoneInfo(self.timezone)).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


class Purpose(_Model):
    """What data may be held for a purpose, on what basis and for how long."""

    description: str = ""
    lawful_basis: LawfulBasis
    fields: tuple[Name, ...] = Field(min_length=1)
    retention_days: int = Field(ge=1)
    contact_cap: ContactCap | None = None
    quiet_hours: QuietHours | None = None


class Role(_Model):
    """The purposes staff in this role may act for, and what they may do."""

    purposes: tuple[Name, ...] = ()
    permissions: tuple[Permission, ...] = ("read",)


class Actor(_Model):
    """A staff member or service that reads through the query API."""

    token_sha256: TokenHash
    roles: tuple[Name, ...] = Field(min_length=1)


class Producer(_Model):
    """An upstream system allowed to send intake records."""

    token_sha256: TokenHash
    namespaces: tuple[Name, ...] = Field(min_length=1)
    event_types: tuple[str, ...] = Field(min_length=1)
    purposes: tuple[Name, ...] = ()


class Agreement(_Model):
    """A data-processing agreement with a sub-processor."""

    id: Name
    purposes: tuple[Name, ...] = Field(min_length=1)
    fields: tuple[Name, ...] = Field(min_length=1)
    expires: date


class SubProcessor(_Model):
    """A processor data may be shared with under its agreements."""

    agreements: tuple[Agreement, ...] = Field(min_length=1)

    def agreement_for(
        self, purpose: str, fields: Iterable[str], today: date
    ) -> tuple[Agreement | None, str]:
        """The agreement in force that covers the purpose and every field, or why there is none."""
        wanted = set(fields)
        covering = [a for a in self.agreements if purpose in a.purposes and wanted <= set(a.fields)]
        for agreement in covering:
            if today <= agreement.expires:
                return agreement, ""
        return None, "agreement_expired" if covering else "no_agreement"


class RateRule(_Model):
    """Flag an actor whose reads in `window_minutes` exceed `factor` times their usual number.

    "Usual" is the actor's average per window over the `baseline_days` before; an actor is flagged
    only once they pass `min_reads` in the window too, so new or quiet staff are not flagged at once.
    """

    window_minutes: int = Field(default=60, ge=1, le=24 * 60)
    baseline_days: int = Field(default=14, ge=1, le=365)
    factor: float = Field(default=3.0, gt=1)
    min_reads: int = Field(default=50, ge=1)


class AnomalyRules(_Model):
    """Access anomalies to flag as `AccessAnomalyFlagged` events (reads are never blocked by them)."""

    rate: RateRule | None = None
    open_task_roles: tuple[Name, ...] = ()
    """Roles whose reads of a subject need an open task for that role (`task.report` records)."""


class Policy(_Model):
    """The whole policy; its version is recorded on every access event."""

    version: str = Field(min_length=1)
    purposes: dict[Name, Purpose] = Field(min_length=1)
    roles: dict[Name, Role] = Field(default_factory=dict)
    actors: dict[Name, Actor] = Field(default_factory=dict)
    producers: dict[Name, Producer] = Field(default_factory=dict)
    processors: dict[Name, SubProcessor] = Field(default_factory=dict)
    anomalies: AnomalyRules = Field(default_factory=AnomalyRules)

    @model_validator(mode="after")
    def _references_resolve(self) -> Policy:
        problems = []
        for name, role in self.roles.items():
            problems += [
                f"roles.{name}.purposes: unknown purpose '{p}'"
                for p in role.purposes
                if p not in self.purposes
            ]
        for name, actor in self.actors.items():
            problems += [
                f"actors.{name}.roles: unknown role '{r}'" for r in actor.roles if r not in self.roles
            ]
        for name, producer in self.producers.items():
            problems += [
                f"producers.{name}.purposes: unknown purpose '{p}'"
                for p in producer.purposes
                if p not in self.purposes
            ]
        for name, processor in self.processors.items():
            for i, agreement in enumerate(processor.agreements):
                where = f"processors.{name}.agreements.{i}"
                problems += [
                    f"{where}.purposes: unknown purpose '{p}'"
                    for p in agreement.purposes
                    if p not in self.purposes
                ]
                allowed = {
                    f for p in agreement.purposes if p in self.purposes for f in self.purposes[p].fields
                }
                problems += [
                    f"{where}.fields: '{f}' is not a field of its purposes"
                    for f in agreement.fields
                    if f not in allowed
                ]
        problems += [
            f"anomalies.open_task_roles: unknown role '{r}'"
            for r in self.anomalies.open_task_roles
            if r not in self.roles
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def purpose(self, name: str) -> Purpose | None:
        return self.purposes.get(name)

    def producer_for_token(self, token: str) -> str | None:
        """The producer whose token this is (constant-time comparison of hashes)."""
        return _match_token(token, {n: p.token_sha256 for n, p in self.producers.items()})

    def actor_for_token(self, token: str) -> str | None:
        """The staff actor whose token this is."""
        return _match_token(token, {n: a.token_sha256 for n, a in self.actors.items()})

    def roles_may(self, roles: tuple[str, ...], purpose: str, permission: Permission) -> str | None:
        """The first of the roles that may act for the purpose with that permission."""
        for role_name in roles:
            role = self.roles.get(role_name)
            if role and purpose in role.purposes and permission in role.permissions:
                return role_name
        return None


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored in the policy instead of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _match_token(token: str, hashes: dict[str, str]) -> str | None:
    digest = hash_token(token)
    found = None
    for name, expected in hashes.items():
        if hmac.compare_digest(digest, expected):
            found = name
    return found


def load_policy(path: Path) -> Policy:
    """Reads and validates a policy file; PolicyError names the first bad keys."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"policy file {path} cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {path} is not valid YAML: {exc}") from exc
    return parse_policy(raw, str(path))


def parse_policy(raw: object, source: str = "policy") -> Policy:
    """Validates an already-parsed policy document."""
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: the top level must be a mapping")
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors()[:10]:
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            lines.append(f"{where}: {error['msg']}")
        raise PolicyError(f"{source}: invalid policy: " + "; ".join(lines)) from None
