"""The producer SDK for upstream systems: typed record builders and a `Producer` (HTTP or sealed Kafka).

`Producer(token, http_url=...).send_http([consent_grant(...), data_update(...)])` answers per record;
`await Producer(token, kafka_bootstrap=..., intake_public_key=...).send_kafka([...])` seals them.
"""

from consentry.client.producer import (
    INTAKE_TOPIC,
    Producer,
    ProducerError,
    RecordInvalid,
    RecordResult,
    Status,
)
from consentry.client.records import (
    access_report,
    consent_grant,
    consent_withdrawal,
    contact_report,
    data_update,
    erasure_request,
    new_idempotency_key,
    record_json,
    task_report,
)
from consentry.core.errors import Reason
from consentry.core.intake import (
    AccessReport,
    ConsentGrant,
    ConsentWithdrawal,
    ContactReport,
    DataUpdate,
    ErasureRequest,
    IntakeRecord,
    TaskReport,
)

__all__ = [
    "INTAKE_TOPIC",
    "AccessReport",
    "ConsentGrant",
    "ConsentWithdrawal",
    "ContactReport",
    "DataUpdate",
    "ErasureRequest",
    "IntakeRecord",
    "Producer",
    "ProducerError",
    "Reason",
    "RecordInvalid",
    "RecordResult",
    "Status",
    "TaskReport",
    "access_report",
    "consent_grant",
    "consent_withdrawal",
    "contact_report",
    "data_update",
    "erasure_request",
    "new_idempotency_key",
    "record_json",
    "task_report",
]
