"""The crash driver shared by the embedded and distributed crash tests.

`Traffic` keeps a client busy against the HTTP API: intake batches from a seeded `Workload`, profile
reads and DPO erasures. A request cut off by a crash is sent again, with the same idempotency keys,
until some process answers it. `Killer` meanwhile runs its plan in a thread: after a random pause,
each step SIGKILLs a process (and starts it again, or restarts the broker). `drive` runs both until
the plan is done, so every kill lands at a random point of a busy system.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.workload import Workload

SHOP, SUPPORT, DPO = "demo-shop-token", "demo-support-token", "demo-dpo-token"
STALL_SECONDS = 120
"""How long a request may go unanswered (the service being restarted) before the test fails."""


@dataclass
class Traffic:
    """A client that keeps writing and reading, and rides out crashes of the server it talks to."""

    base: str
    workload: Workload
    retries: int = 0
    cut_off: int = 0
    reads: int = 0
    busy: threading.Event = field(default_factory=threading.Event)
    """Set while a request is on its way: a killer aiming at requests waits for it."""
    _rng: random.Random = field(init=False)
    _http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.workload.seed + 1)
        # One keep-alive connection: a request is on its way to the server while `busy` is set.
        self._http = httpx.Client(base_url=self.base, timeout=30)

    def close(self) -> None:
        self._http.close()

    def step(self) -> None:
        """One intake batch; now and then a profile read or a DPO erasure as well."""
        records = self.workload.batch()
        retries = self.retries
        answer = self._call("POST", "/v1/events", SHOP, {"events": records})
        self.workload.answered(records, answer.json()["results"], retried=self.retries > retries)
        subjects = self.workload.subjects()
        roll = self._rng.random()
        if subjects and roll < 0.3:
            subject = self._rng.choice(subjects)
            path = f"/v1/subjects/{subject}/profile?purpose=support"
            read = self._call("GET", path, SUPPORT, ok=(200, 403, 410))
            self.reads += read.status_code == 200
        elif subjects and roll < 0.35:
            subject = self._rng.choice(subjects)
            for customer in self.workload.customers:
                customer.erasing |= customer.subject_id == subject
            self._call("POST", f"/v1/subjects/{subject}/erasure", DPO, ok=(202,))

    def _call(
        self, method: str, path: str, token: str, body: Any = None, ok: Sequence[int] = (200,)
    ) -> httpx.Response:
        """Sends until some process answers: a transport error or a 409 means send it again."""
        deadline = time.monotonic() + STALL_SECONDS
        headers = {"Authorization": f"Bearer {token}"}
        while True:
            self.busy.set()
            try:
                answer = self._http.request(method, path, json=body, headers=headers)
            except httpx.TransportError as exc:
                # Refused: nobody listening yet. Anything else: a crash cut the request off.
                self.cut_off += not isinstance(exc, httpx.ConnectError)
                answer = None
            finally:
                self.busy.clear()
            if answer is not None and answer.status_code != 409:
                assert answer.status_code in ok, (method, path, answer.status_code, answer.text[:500])
                return answer
            assert time.monotonic() < deadline, f"{method} {path} unanswered for {STALL_SECONDS} s"
            self.retries += 1
            time.sleep(0.05)


@dataclass
class Killer:
    """Runs a plan of crash steps in a thread, each after a random pause of `pause` seconds.

    With `aim`, each step waits (up to a second) for a request on its way, then strikes within the
    next `jitter` seconds: a crash in the middle of a request, where a lost answer hides a write.
    """

    plan: Sequence[tuple[str, Callable[[], None]]]
    seed: int
    pause: tuple[float, float]
    aim: threading.Event | None = None
    jitter: float = 0.03
    done: list[str] = field(default_factory=list)
    error: BaseException | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="killer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rng = random.Random(self.seed)
        try:
            for name, step in self.plan:
                time.sleep(rng.uniform(*self.pause))
                if self.aim is not None and self.aim.wait(timeout=1):
                    time.sleep(rng.uniform(0, self.jitter))
                step()
                self.done.append(name)
        except BaseException as exc:  # noqa: BLE001 - pytest.fail raises BaseException; re-raised below
            self.error = exc

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error


def drive(step: Callable[[], None], killer: Killer, after: int = 3) -> None:
    """Keeps the traffic stepping while the killer works through its plan, then `after` more steps."""
    killer.start()
    try:
        while killer.running:
            step()
        for _ in range(after):
            step()
    finally:
        killer.join()
    assert killer.done == [name for name, _ in killer.plan]
