"""`python -m bench.hotspots read` profiles the whole read: admission, the group's write, the answer."""

from __future__ import annotations

import pytest
from bench.hotspots import main


def test_the_read_profile_sees_the_admission_the_groups_write_and_the_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    main(["read", "--events", "40", "--top", "400"])
    out = capsys.readouterr().out
    assert "disclosure.py" in out and "(ready)" in out and "(finish)" in out
    # The group's write, on the loop or (inline here) in the executor: the profile shows it.
    assert "(_append)" in out and "(insert_events)" in out
    # No client in the profile: only the app and the platform.
    assert "httpx" not in out and "_client.py" not in out
