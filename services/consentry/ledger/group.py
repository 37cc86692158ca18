"""Group commit: commands that callers send at the same time are decided and appended together.

Every profile read appends its `DataAccessed` event before it answers. Appended one at a time,
each read waits for the writer and pays its own transaction and fsync; grouped, the commands
that arrive while one group is being written go together in the next: one transaction, one
fsync. Each caller still gets exactly its own outcomes, and only once they are durable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C")
R = TypeVar("R")


@dataclass(slots=True)
class _Request(Generic[C, R]):
    items: Sequence[C]
    outcomes: list[R] | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.outcomes is not None or self.error is not None


class GroupCommit(Generic[C, R]):
    """Runs `run` over the concatenated commands of whoever is waiting, one group at a time.

    `run` must return one outcome per command, in order, and write nothing when it raises. If a
    group fails, each of its callers' commands is run again on its own, so one caller's failure
    never becomes another's.
    """

    def __init__(self, run: Callable[[Sequence[C]], list[R]]) -> None:
        self._run = run
        self._changed = threading.Condition()
        self._waiting: list[_Request[C, R]] = []
        self._busy = False

    def __call__(self, items: Sequence[C]) -> list[R]:
        request: _Request[C, R] = _Request(items)
        with self._changed:
            self._waiting.append(request)
            while self._busy and not request.done:
                self._changed.wait()
            group: list[_Request[C, R]] = []
            if not request.done:
                # Nobody is writing: this caller writes for everyone waiting, itself included.
                self._busy = True
                group, self._waiting = self._waiting, []
        if group:
            try:
                self._serve(group)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
        if request.error is not None:
            raise request.error
        assert request.outcomes is not None
        return request.outcomes

    def _serve(self, group: list[_Request[C, R]]) -> None:
        try:
            if len(group) == 1:
                self._alone(group[0])
                return
            try:
                outcomes = self._run([item for request in group for item in request.items])
            except Exception:  # noqa: BLE001 - whatever failed, each caller's commands try alone
                for request in group:
                    self._alone(request)
                return
            start = 0
            for request in group:
                request.outcomes = outcomes[start : start + len(request.items)]
                start += len(request.items)
        except BaseException as exc:
            for request in group:
                if not request.done:
                    request.error = exc
            raise

    def _alone(self, request: _Request[C, R]) -> None:
        try:
            request.outcomes = self._run(request.items)
        except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
            request.error = exc
