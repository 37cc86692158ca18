"""The README's curl walk-through, run as written against a real server.

The ```bash block under "## A walk-through with curl" is taken from README.md; only the `API=` value
(this module's server) and the CLI path (`.venv/bin/consentry` becomes this interpreter's
`-m consentry.cli`) are replaced. It runs under `bash -euo pipefail` in an empty directory, and each
step's output is checked. The walk-through uses the fixed reference `shop:1001`, so this module has
its own server (the `server` fixture is per module).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server
from tests.support import ROOT

HEADING = "## A walk-through with curl"
CLI = ".venv/bin/consentry"


@dataclass(frozen=True)
class Outputs:
    """What the walk-through printed: its JSON documents in order, and its plain-text lines."""

    documents: list[Any]
    lines: list[str]


def walkthrough_block(readme: str) -> str:
    """The first ```bash block after the walk-through heading."""
    assert HEADING in readme, f"README.md has no heading {HEADING!r}"
    section = readme.split(HEADING, 1)[1]
    found = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert found is not None, "no ```bash block under the walk-through heading"
    return found.group(1)


def adapt(block: str, base: str) -> str:
    """The block with API= pointing at base and the CLI run by this interpreter."""
    lines = block.splitlines()
    api = [i for i, line in enumerate(lines) if line.startswith("API=")]
    assert len(api) == 1, "the walk-through should set API= exactly once"
    lines[api[0]] = f"API={base}"
    script = "\n".join(lines) + "\n"
    assert CLI in script, f"the walk-through no longer runs {CLI}"
    return script.replace(CLI, f"{shlex.quote(sys.executable)} -m consentry.cli")


def split_outputs(stdout: str) -> Outputs:
    """Separates the concatenated JSON answers (curl -s prints no newline) from text lines."""
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    lines: list[str] = []
    at = 0
    while at < len(stdout):
        if stdout[at].isspace():
            at += 1
        elif stdout[at] in "{[":
            document, at = decoder.raw_decode(stdout, at)
            documents.append(document)
        else:
            end = stdout.find("\n", at)
            end = len(stdout) if end < 0 else end
            lines.append(stdout[at:end])
            at = end
    return Outputs(documents, lines)


def _readme_value(block: str, name: str) -> str:
    """A field value the walk-through's intake record sends, e.g. its email."""
    found = re.search(rf'"{name}": "([^"]+)"', block)
    assert found is not None, f"the walk-through sends no {name}"
    return found.group(1)


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("curl") is None:
        pytest.fail("curl is not installed: the README walk-through needs it")
    path = cwd / "walkthrough.sh"
    path.write_text(script)
    return subprocess.run(
        ["bash", "-euo", "pipefail", str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


def test_the_readme_walkthrough_runs_and_shows_what_it_promises(server: Server, tmp_path: Path) -> None:
    block = walkthrough_block((ROOT / "README.md").read_text())
    done = _run(adapt(block, server.base), tmp_path)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    out = split_outputs(done.stdout)
    assert len(out.documents) == 7, out
    intake, profile, refused, history, export, erasure, verify = out.documents

    assert [r["status"] for r in intake["results"]] == ["accepted", "accepted"], intake
    expected = {name: _readme_value(block, name) for name in ("email", "first_name")}
    assert profile["purpose"] == "support" and profile["fields"] == expected, profile
    assert refused["status"] == 403 and refused["type"].endswith("/no-consent"), refused
    denied = [e for e in history["events"] if e["type"] == "AccessDenied"]
    assert [(e["purpose"], e["reason"]) for e in denied] == [("marketing", "no_consent")], history
    assert export["erased"] is False and export["data"] == {"support": expected}, export
    assert erasure["status"] == "erased" and erasure["certificate"] is not None, erasure
    assert len(out.lines) == 1 and out.lines[0].startswith("VALID: subject "), out.lines
    assert profile["subject_id"] in out.lines[0]
    assert verify["ok"] is True and verify["breaks"] == [], verify
    assert json.loads((tmp_path / "cert.json").read_text()) == erasure["certificate"]
