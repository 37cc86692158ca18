"""Session-wide leak check: after the last test, scan what the suite wrote for planted values.

`tests/leaks.py` holds the register the tests' builders plant canaries and secrets into. This plugin
captures the process's log records from the start, and when the session ends scans every data
directory the suite created (pytest's temporary directories, the Kafka and PostgreSQL directories of
`infra/with-services.sh` after a CHECKPOINT, faust's state directories), every log among them, the
captured log records and the registered texts. A single hit makes the run fail (exit status 1), even
when every test passed; the terminal summary says how much was read and what was found.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import psycopg
import pytest

from tests.leaks import REGISTER, Capture, Report, scan_files, scan_texts

DEMO_TOKENS = ("demo-shop-token", "demo-support-token", "demo-marketing-token", "demo-dpo-token")
_capture = Capture(REGISTER)
_report: list[Report] = []
_seconds: list[float] = []


def pytest_configure(config: pytest.Config) -> None:
    for token in DEMO_TOKENS:
        REGISTER.secret(f"token {token}", token)
    logging.getLogger().addHandler(_capture)
    # Our own code's records at every level; other libraries' from WARNING (the root's level).
    logging.getLogger("consentry").setLevel(logging.DEBUG)


def _checkpoint() -> None:
    """Writes PostgreSQL's shared buffers to its data files, so the scan sees every stored byte."""
    dsn = os.environ.get("CONSENTRY_PG_DSN_OWNER")
    if dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")


def data_roots(session: pytest.Session) -> list[Path]:
    """Every directory the suite wrote data or logs to."""
    roots = [session.config._tmp_path_factory.getbasetemp()]  # type: ignore[attr-defined]  # pytest's own
    for variable in ("CONSENTRY_KAFKA_DATA_DIR", "CONSENTRY_PG_DATA_DIR"):
        value = os.environ.get(variable)
        if value:
            roots.append(Path(value).parent)  # the data and the service's own log files
    return roots + REGISTER.data_roots


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    started = time.perf_counter()
    logging.getLogger().removeHandler(_capture)
    _checkpoint()
    report = scan_files(data_roots(session), REGISTER.canary_needles(), REGISTER.all_needles())
    report.add(scan_texts(REGISTER.texts, REGISTER.all_needles()))
    _report.append(report)
    _seconds.append(time.perf_counter() - started)
    if report.hits:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _report:
        return
    report = _report[0]
    terminalreporter.write_sep("=", "leak check", red=bool(report.hits), green=not report.hits)
    terminalreporter.write_line(
        f"leak check: {report.files} files and {report.texts} texts, {report.bytes} bytes scanned "
        f"in {_seconds[0]:.1f} s for {len(REGISTER.canaries)} canaries and "
        f"{len(REGISTER.secrets)} secrets: {len(report.hits)} leaks found"
    )
    for hit in report.hits[:50]:
        terminalreporter.write_line(f"LEAK: {hit}", red=True)
