"""`python -m bench.hotspots read` profiles the whole read: the loop's part and the executor's."""

from __future__ import annotations

import pytest
from bench.hotspots import main


def test_the_read_profile_sees_the_admission_on_the_loop_and_the_write_handed_to_the_executor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["read", "--events", "40", "--top", "400"])
    out = capsys.readouterr().out
    assert "disclosure.py" in out and "(ready)" in out and "(finish)" in out
    # The group's write runs in the executor: inline here, so the profile shows it.
    assert "(_execute_once)" in out
    # No client in the profile: only the app and the platform.
    assert "httpx" not in out and "_client.py" not in out
