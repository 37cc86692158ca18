"""`python -m bench --quick` in a child process, as `make bench` runs it, for the harness's tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def quick_run(names: tuple[str, ...], out: Path, scratch: Path, timeout: float) -> dict[str, Any]:
    """Runs the named benchmarks at tiny sizes into `out`, with `scratch` as the temporary root;
    answers latest.json (the run must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", *names, "--out", str(out)],
        cwd=ROOT,
        env=os.environ | {"TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    results: dict[str, Any] = json.loads((out / "latest.json").read_text())
    return results
