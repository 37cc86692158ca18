"""Our error types and the documented reason codes every rejection carries.

Messages never contain personal data: they name fields, purposes and codes, never values.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why an intake record or a request was refused (documented in docs/reason-codes.md)."""

    MALFORMED_REQUEST = "malformed_request"
    MALFORMED_AVRO = "malformed_avro"
    UNKNOWN_SCHEMA = "unknown_schema"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    MISSING_FIELD = "missing_field"
    INVALID_VALUE = "invalid_value"
    OVERSIZED = "oversized"
    UNKNOWN_PURPOSE = "unknown_purpose"
    FIELD_NOT_ALLOWED = "field_not_allowed"
    NO_CONSENT = "no_consent"
    CONSENT_EXPIRED = "consent_expired"
    SUBJECT_ERASED = "subject_erased"
    UNKNOWN_SUBJECT = "unknown_subject"
    PRODUCER_NOT_ALLOWED = "producer_not_allowed"
    ROLE_NOT_ALLOWED = "role_not_allowed"
    CONFLICT = "conflict"
    SEALED_ENVELOPE_INVALID = "sealed_envelope_invalid"
    OPTED_OUT = "opted_out"
    QUIET_HOURS = "quiet_hours"
    CAP_REACHED = "cap_reached"
    NO_AGREEMENT = "no_agreement"
    AGREEMENT_EXPIRED = "agreement_expired"
    UNAUTHORIZED = "unauthorized"


class ConsentryError(Exception):
    """Base of every error Consentry raises on purpose."""


class Rejected(ConsentryError):
    """A record or request was refused for a documented reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class SchemaError(ConsentryError):
    """A schema file is missing, invalid or inconsistent."""


class PolicyError(ConsentryError):
    """The policy file is invalid; the message names the bad key."""


class SettingsError(ConsentryError):
    """A setting is missing or invalid at start-up."""


class KeystoreError(ConsentryError):
    """The keystore could not do what was asked."""


class KeyNotFound(KeystoreError):
    """No key exists for that subject and scope (or key id)."""


class ScopeShredded(KeystoreError):
    """The scope's key was destroyed; it is never silently recreated."""


class KeyExists(KeystoreError):
    """An active key already exists for that subject and scope."""


class SealError(ConsentryError):
    """A sealed value failed to open: wrong key, swapped context or tampered bytes."""


class KeyProviderError(ConsentryError):
    """The key-encryption key could not be loaded, created or used."""


class ConflictError(ConsentryError):
    """A concurrent writer changed the same subject; the caller may retry."""
