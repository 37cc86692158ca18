"""The numbers a crash or soak test reports, appended to $CONSENTRY_SOAK_REPORT (`make soak` sets it).

One JSON line per test run: which test, and its counts (kills survived, records sent, ...). Without
the variable nothing is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def report(test: str, **numbers: object) -> None:
    """Appends the test's numbers to the soak report, if one is being written."""
    target = os.environ.get("CONSENTRY_SOAK_REPORT")
    if not target:
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps({"test": test, **numbers}, sort_keys=True) + "\n")
