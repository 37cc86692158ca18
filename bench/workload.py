"""The shared workload: obviously fake intake records for the benchmarks, generated lazily.

A stream of JSON intake records over a number of subjects, in the mix an upstream shop sends:
consent grants (a subject's first record), data updates of 3 to 8 fields, access reports and later
grants for more purposes. Every record is one the ledger accepts, so the number of ledger events
is known in advance: a subject's first grant makes two (ReferenceLinked + ConsentGranted), any
other record one. The same seed yields the same records, so every pipeline variant ingests the
same stream. References and values are fake (`bench:` namespace, `example.com`, random suffixes).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from consentry.core.policy import LawfulBasis, Policy, load_policy

BENCH_DIR: Final = Path(__file__).resolve().parent
POLICY_PATH: Final = BENCH_DIR / "policy.yaml"
PRODUCER: Final = "bench-shop"
# Fake, local-only tokens whose hashes are in bench/policy.yaml.
SHOP_TOKEN: Final = "bench-shop-token"  # noqa: S105
SUPPORT_TOKEN: Final = "bench-support-token"  # noqa: S105
DPO_TOKEN: Final = "bench-dpo-token"  # noqa: S105
NAMESPACE: Final = "bench"
READ_PURPOSE: Final = "support"
BATCH: Final = 500
# How often an existing subject gets each kind of record (the first record is always a grant).
MIX: Final = (("data.update", 0.60), ("access.report", 0.25), ("consent.grant", 0.15))

Record = dict[str, Any]


def bench_policy() -> Policy:
    """The benchmarks' policy (bench/policy.yaml)."""
    return load_policy(POLICY_PATH)


def fake_value(field_name: str, rng: random.Random) -> str:
    """An obviously fake value for a personal field."""
    tag = f"{rng.getrandbits(32):08x}"
    values = {
        "email": f"user-{tag}@example.com",
        "first_name": f"Testfirst-{tag}",
        "last_name": f"Testlast-{tag}",
        "phone": f"+1-555-01{rng.randrange(100):02d}",
        "street": f"{rng.randrange(1, 999)} Example Street",
        "city": "Exampleville",
        "postcode": f"00{rng.randrange(1000):03d}",
        "country": "ZZ",
        "preferred_language": "xx",
    }
    return values.get(field_name, f"fake-{field_name}-{tag}")


@dataclass
class Workload:
    """A deterministic stream of about `events` ledger events over `subjects` subjects."""

    events: int
    subjects: int
    seed: int = 5
    policy: Policy | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.the_policy = self.policy or bench_policy()
        self.prefix = f"{self.rng.getrandbits(48):012x}"
        self.consent_purposes = sorted(
            n for n, p in self.the_policy.purposes.items() if p.lawful_basis == LawfulBasis.CONSENT
        )
        self.open_purposes = sorted(set(self.the_policy.purposes) - set(self.consent_purposes))
        self._granted: list[set[str]] = []
        self._clock = datetime.now(UTC) - timedelta(days=1)
        self._counter = 0

    def ref(self, index: int) -> str:
        """The external reference of subject `index` (fake, unique per workload)."""
        return f"{NAMESPACE}:{self.prefix}-{index:07d}"

    def records(self) -> Iterator[Record]:
        """Records until about `events` ledger events; every subject is created along the way."""
        remaining = self.events
        while remaining > 0:
            to_create = self.subjects - len(self._granted)
            if not self._granted or (to_create > 0 and self.rng.random() < 2 * to_create / remaining):
                remaining -= 2
                yield self._first_grant()
            else:
                remaining -= 1
                yield self._next_for(self.rng.randrange(len(self._granted)))

    def batches(self, size: int = BATCH) -> Iterator[list[Record]]:
        """The records in batches of `size` (the last one may be shorter)."""
        batch: list[Record] = []
        for item in self.records():
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def profiles(self, count: int, purpose: str = READ_PURPOSE) -> Iterator[Record]:
        """For `count` new subjects: a grant for the purpose and an update of all its fields."""
        fields = self.the_policy.purposes[purpose].fields
        for _ in range(count):
            index = len(self._granted)
            self._granted.append({purpose})
            yield self._grant(index, purpose)
            values = {f: fake_value(f, self.rng) for f in fields}
            yield self._record("data.update", index, purpose=purpose, fields=values)

    # -- one record ----------------------------------------------------------------------------

    def _first_grant(self) -> Record:
        index = len(self._granted)
        purpose = self.rng.choice(self.consent_purposes)
        self._granted.append({purpose})
        return self._grant(index, purpose)

    def _next_for(self, index: int) -> Record:
        granted = self._granted[index]
        kind = self.rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
        if kind == "consent.grant":
            missing = [p for p in self.consent_purposes if p not in granted]
            if missing:
                purpose = self.rng.choice(missing)
                granted.add(purpose)
                return self._grant(index, purpose)
            kind = "data.update"
        purpose = self.rng.choice(sorted(granted) + self.open_purposes)
        fields = self.the_policy.purposes[purpose].fields
        if kind == "access.report":
            names = sorted(self.rng.sample(fields, self.rng.randint(1, min(3, len(fields)))))
            agent = f"bench-agent-{self.rng.randrange(20)}"
            return self._record(
                kind, index, purpose=purpose, actor_id=agent, role="support_agent", field_names=names
            )
        chosen = self.rng.sample(fields, self.rng.randint(3, len(fields)))
        return self._record(
            kind, index, purpose=purpose, fields={f: fake_value(f, self.rng) for f in chosen}
        )

    def _grant(self, index: int, purpose: str) -> Record:
        return self._record(
            "consent.grant",
            index,
            purpose=purpose,
            channel=self.rng.choice(("web", "app", "store")),
            notice_version="2026-11",
            evidence=f"ticked box {self.rng.getrandbits(32):08x} on the example.com form",
        )

    def _record(self, kind: str, index: int, **values: Any) -> Record:
        self._counter += 1
        self._clock += timedelta(milliseconds=1)
        return {
            "type": kind,
            "subject_ref": self.ref(index),
            "idempotency_key": f"bench-{self.prefix}-{self._counter}",
            "occurred_at": self._clock.isoformat(),
            **values,
        }


def subjects_for(events: int, per_subject: int = 10) -> int:
    """How many subjects a workload of that many events spreads over (about 10 events each)."""
    return max(10, events // per_subject)
