"""`consentry demo`: a narrated scenario played against a running instance over its HTTP API.

The story of one (obviously fake) customer: the shop reports consents and data, support reads the
profile (recorded first), marketing is refused, the customer withdraws marketing consent, the DPO
exports everything and erases the subject, the read models are replayed from the log and show the
subject as erased, and the erasure certificate is verified with the published public key.

Every step checks what the platform answered; the first surprise stops the demo with `DemoFailed`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from consentry.shredder.certificates import CertificateError, verify_document

Say = Callable[[str], None]


class DemoFailed(Exception):
    """The running instance answered something the scenario did not expect."""


@dataclass(frozen=True)
class DemoTokens:
    """Who plays which part; the defaults are the example policy's demo tokens."""

    producer: str = "demo-shop-token"
    support: str = "demo-support-token"
    marketing: str = "demo-marketing-token"
    dpo: str = "demo-dpo-token"


@dataclass(frozen=True)
class _Customer:
    """An obviously fake customer with a random suffix, so the demo can run many times."""

    ref: str
    email: str
    first_name: str

    @classmethod
    def invent(cls) -> _Customer:
        suffix = secrets.token_hex(4)
        return cls(f"shop:demo-{suffix}", f"demo-{suffix}@example.com", f"Demo{suffix}")


class Demo:
    """One run of the scenario against `base_url`."""

    def __init__(self, base_url: str, say: Say, tokens: DemoTokens | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.say = say
        self.tokens = tokens or DemoTokens()
        self.customer = _Customer.invent()
        self._serial = 0

    def run(self) -> dict[str, Any]:
        """Plays every step; answers a summary (subject id, certificate key count)."""
        with httpx.Client(base_url=self.base, timeout=30) as http:
            self.http = http
            health = self._expect(http.get("/healthz"), 200, "GET /healthz")
            self.say(f"Consentry at {self.base}, policy version {health['policy_version']}")
            subject = self._collect()
            self._read(subject)
            self._withdraw(subject)
            self._export(subject)
            document = self._erase(subject)
            self._replay(subject)
            self._verify(document)
        self.say("Demo complete: every step answered as the policy says.")
        return {"subject_id": subject, "keys_destroyed": len(document["certificate"]["key_ids"])}

    # -- the steps -------------------------------------------------------------------------------

    def _collect(self) -> str:
        c = self.customer
        self._step("The shop reports consents for support and marketing, and collects data")
        results = self._send(
            self._record("consent.grant", purpose="support", evidence="ticked box on /help"),
            self._record("consent.grant", purpose="marketing", evidence="newsletter opt-in"),
            self._record(
                "data.update", purpose="support", fields={"email": c.email, "first_name": c.first_name}
            ),
            self._record("data.update", purpose="marketing", fields={"email": c.email}),
            self._record("data.update", purpose="marketing", fields={"shoe_size": "44"}),
        )
        statuses = [(r["status"], r.get("reason")) for r in results]
        self._check(
            statuses[:4] == [("accepted", None)] * 4
            and statuses[4] == ("rejected", "field_not_allowed"),
            f"intake answered {statuses}",
        )
        self.say("  4 records accepted; a field outside the purpose was rejected: field_not_allowed")
        found = self._get(self.tokens.support, "/v1/subjects", 200, params={"ref": c.ref})
        subject: str = found["subject_id"]
        self.say(f"  {c.ref} is subject {subject} (a random id; the reference is sealed)")
        return subject

    def _read(self, subject: str) -> None:
        self._step("Support reads the profile for a ticket: the access is recorded before the answer")
        profile = self._get(self.tokens.support, self._at(subject, "profile"), 200, purpose="support")
        self._check(profile["fields"].get("email") == self.customer.email, "support saw other data")
        self.say(
            f"  fields {sorted(profile['fields'])} disclosed; DataAccessed {profile['access_event_id']}"
        )
        self._step("Marketing tries to read the support profile: refused, and the refusal is recorded")
        denied = self._get(self.tokens.marketing, self._at(subject, "profile"), 403, purpose="support")
        self.say(f"  403 {denied['type']}")
        check = self._get(
            self.tokens.marketing, self._at(subject, "contact-check"), 200, purpose="marketing"
        )
        self._check(check["allowed"] is True, "marketing contact refused before the withdrawal")
        self.say("  may marketing email the customer? allowed")

    def _withdraw(self, subject: str) -> None:
        self._step("The customer withdraws marketing consent: the marketing key is shredded")
        results = self._send(self._record("consent.withdrawal", purpose="marketing"))
        self._check(results[0]["status"] == "accepted", f"withdrawal answered {results[0]}")
        check = self._get(
            self.tokens.marketing, self._at(subject, "contact-check"), 200, purpose="marketing"
        )
        self._check(check["allowed"] is False, "marketing contact still allowed after the withdrawal")
        self.say(f"  may marketing email the customer now? no ({check['reason']})")
        refused = self._get(
            self.tokens.marketing, self._at(subject, "profile"), 403, purpose="marketing"
        )
        self.say(f"  marketing profile read: 403 {refused['type']}")
        self._wait_for_shredding(subject, "withdrawal")
        self.say("  the marketing key is destroyed; a signed withdrawal certificate is in the ledger")

    def _export(self, subject: str) -> None:
        self._step("The DPO answers the customer's access request (DSAR export)")
        export = self._get(self.tokens.dpo, self._at(subject, "export"), 200)
        self._check(export["data"].get("support", {}).get("email") == self.customer.email, "export data")
        self._check(not any(export["data"].get("marketing", {}).values()), "withdrawn data readable")
        actors = sorted({a["actor"] for a in export["accesses"]})
        self.say(f"  data for {sorted(export['data'])}; {len(export['accesses'])} accesses by {actors}")
        self.say("  the marketing data is unreadable: its key was destroyed at the withdrawal")

    def _erase(self, subject: str) -> dict[str, Any]:
        self._step("The customer asks to be forgotten: every key of the subject is destroyed")
        erased = self._call("POST", self.tokens.dpo, self._at(subject, "erasure"), 202)
        if "key_ids_destroyed" in erased:
            self.say(f"  {erased['key_ids_destroyed']} keys destroyed")
        else:
            self.say("  erasure requested; the shredder worker destroys the keys (distributed mode)")
        gone = self._get(self.tokens.support, self._at(subject, "profile"), 410, purpose="support")
        self.say(f"  support profile read now: 410 {gone['type']}")
        return self._certificate(subject)

    def _wait_for_shredding(self, subject: str, reason: str, wait: float = 30.0) -> None:
        """Returns once the subject's timeline shows keys shredded for the reason."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            events = self._get(self.tokens.dpo, self._at(subject, "timeline"), 200)["events"]
            if any(e["type"] == "KeysShredded" and e.get("reason") == reason for e in events):
                return
            time.sleep(0.2)
        raise DemoFailed(f"no {reason} certificate after {wait:.0f} s")

    def _certificate(self, subject: str, wait: float = 30.0) -> dict[str, Any]:
        """The erasure certificate, once the shredder has recorded it (at once when embedded)."""
        deadline = time.monotonic() + wait
        while True:
            answer = self.http.get(
                self._at(subject, "erasure"), headers={"Authorization": f"Bearer {self.tokens.dpo}"}
            )
            if answer.status_code != 404 or time.monotonic() > deadline:
                return self._expect(answer, 200, "GET the erasure certificate")
            time.sleep(0.2)

    def _replay(self, subject: str) -> None:
        self._step("Replay: every read model is rebuilt from the immutable log")
        answer = self.http.post(
            "/v1/audit/replay", headers={"Authorization": f"Bearer {self.tokens.dpo}"}
        )
        if answer.status_code == 409:
            self.say("  the processors worker owns the views here: `consentry replay --kafka` does it")
        else:
            replay = self._expect(answer, 200, "POST /v1/audit/replay")
            self.say(f"  {replay['events']} events replayed in {replay['seconds']:.2f} s")
        export = self._get(self.tokens.dpo, self._at(subject, "export"), 200)
        self._check(export["erased"] is True and export["data"] == {}, "replayed views show data")
        timeline = self._get(self.tokens.dpo, self._at(subject, "timeline"), 200)
        self._check(self.customer.email not in str(timeline), "personal data in the timeline")
        kinds = [e["type"] for e in timeline["events"]]
        self.say(f"  the subject is erased in every view; its history keeps {len(kinds)} events")
        self.say(f"  of clear metadata only, ending {kinds[-2:]}")

    def _verify(self, document: dict[str, Any]) -> None:
        self._step("Verify the erasure certificate with the published public key")
        published = self._get(self.tokens.dpo, "/v1/keys/certificate-public-key", 200)
        try:
            verified = verify_document(document | {"public_key": published["public_key"]})
        except CertificateError as exc:
            raise DemoFailed(f"the certificate does not verify: {exc}") from exc
        self.say(
            f"  VALID: {len(verified.key_ids)} keys in {sorted(verified.scopes)} destroyed at "
            f"{verified.shredded_at.isoformat()}"
        )
        chain = self._get(self.tokens.dpo, "/v1/audit/verify", 200)
        self._check(chain["ok"] is True, f"the hash chains do not verify: {chain['breaks'][:3]}")
        self.say(f"  audit verify: {chain['events']} events, {chain['subjects']} subjects, no break")

    # -- plumbing --------------------------------------------------------------------------------

    def _step(self, text: str) -> None:
        self.say(f"\n> {text}")

    def _check(self, ok: bool, what: str) -> None:
        if not ok:
            raise DemoFailed(what)

    def _at(self, subject: str, leaf: str) -> str:
        return f"/v1/subjects/{subject}/{leaf}"

    def _record(self, kind: str, **values: Any) -> dict[str, Any]:
        self._serial += 1
        base = {
            "type": kind,
            "subject_ref": self.customer.ref,
            "idempotency_key": f"demo-{self.customer.ref}-{self._serial}",
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        if kind in ("consent.grant", "consent.withdrawal"):
            base |= {"channel": "web"}
        if kind == "consent.grant":
            base |= {"notice_version": "demo-notice-1"}
        return base | values

    def _send(self, *records: dict[str, Any]) -> list[dict[str, Any]]:
        body = self._call(
            "POST", self.tokens.producer, "/v1/events", 200, json={"events": list(records)}
        )
        results: list[dict[str, Any]] = body["results"]
        return results

    def _get(self, token: str, path: str, status: int, **params: Any) -> dict[str, Any]:
        query = params.pop("params", None) or params
        return self._call("GET", token, path, status, params=query)

    def _call(self, method: str, token: str, path: str, status: int, **kwargs: Any) -> dict[str, Any]:
        answer = self.http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        return self._expect(answer, status, f"{method} {path}")

    def _expect(self, answer: httpx.Response, status: int, what: str) -> dict[str, Any]:
        if answer.status_code != status:
            raise DemoFailed(f"{what} answered {answer.status_code}, expected {status}")
        body: dict[str, Any] = answer.json()
        return body
