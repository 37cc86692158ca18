"""The replay benchmark's child starts its rebuild's helpers as `consentry replay` does."""

from __future__ import annotations

import subprocess
import sys

from bench.workload import BENCH_DIR


def test_the_replay_child_module_imports_no_part_of_the_platform_until_it_runs() -> None:
    # Each spawned helper imports the child's main module first: were it to import the platform
    # (as bench.replay does), every helper would pay ~1 s of CPU that the command's never pays.
    probe = (
        "import sys, bench.replay_child; "
        "print(sorted(m for m in sys.modules if m.startswith('consentry')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=BENCH_DIR.parent, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
