"""The session's register of planted values, and the leak scan that runs after every test.

Tests plant obviously fake personal values (`tests.support.canary`, `fake_email`) and handle secrets
(key-encryption keys, unwrapped data keys, tokens, private keys); both go into `REGISTER`. Tests
also hand it texts that left the platform: error responses, `/metrics` output, exception messages.
When the session ends, `tests/conftest.py` scans

- every file under the data directories the suite created (pytest's temporary directories with
  the embedded servers' SQLite files and key files, the Kafka and PostgreSQL directories of
  `infra/with-services.sh`, faust's state directories) for every canary, as UTF-8 and UTF-16;
- every log file among them, the log records captured in this process and the registered texts,
  for every canary and every secret (raw, base64, URL-safe base64 and hex);

and fails the run on a single hit. Key files hold the key-encryption key by design, so secrets are
looked for in logs and texts only.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx

PREFIX: Final = 6
MIN_CANARY: Final = 8
MAX_TEXTS: Final = 200_000
LOG_SUFFIXES: Final = (".log", ".out", ".err")


@dataclass(frozen=True)
class Hit:
    """One planted value found where it must not be."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.what} in {self.where}"


@dataclass
class Report:
    """What a scan read and found."""

    files: int = 0
    bytes: int = 0
    texts: int = 0
    hits: list[Hit] = field(default_factory=list)

    def add(self, other: Report) -> None:
        self.files += other.files
        self.bytes += other.bytes
        self.texts += other.texts
        self.hits += other.hits


class Needles:
    """Byte patterns looked for, indexed by their first bytes so a scan reads each file once."""

    def __init__(self, named: Iterable[tuple[str, bytes]]) -> None:
        self._by_prefix: dict[bytes, dict[bytes, str]] = defaultdict(dict)
        for name, pattern in named:
            self._by_prefix[pattern[:PREFIX]][pattern] = name

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_prefix.values())

    def find(self, data: bytes) -> set[str]:
        """The names of the needles that occur in data."""
        found: set[str] = set()
        for prefix, patterns in self._by_prefix.items():
            lengths = sorted({len(p) for p in patterns})
            at = data.find(prefix)
            while at >= 0:
                for length in lengths:
                    name = patterns.get(data[at : at + length])
                    if name is not None:
                        found.add(name)
                at = data.find(prefix, at + 1)
        return found


def text_forms(value: str) -> list[bytes]:
    """How a text may sit in a file: UTF-8, or UTF-16 (little-endian) as some tools write."""
    return [value.encode(), value.encode("utf-16-le")]


def secret_forms(secret: bytes) -> list[bytes]:
    """How a binary secret may be printed: raw, Python's bytes repr, base64 (unpadded), hex."""
    forms = [
        secret,
        repr(secret)[2:-1].encode(),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        secret.hex().encode(),
        secret.hex().upper().encode(),
    ]
    return [f for f in forms if len(f) >= MIN_CANARY]


class Register:
    """Planted canaries, known secrets and texts to check, for one test session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.canaries: set[str] = set()
        self.secrets: dict[str, bytes] = {}
        self.texts: list[tuple[str, str]] = []
        self.data_roots: list[Path] = []
        self.dropped_texts = 0

    def canary(self, value: str) -> str:
        """Registers a planted personal value; it must be in no durable byte in the clear."""
        if len(value) < MIN_CANARY:
            raise ValueError(f"a canary has at least {MIN_CANARY} characters")
        with self._lock:
            self.canaries.add(value)
        return value

    def secret(self, name: str, value: bytes | str) -> None:
        """Registers a secret; it must be in no log line, repr or answer text."""
        raw = value.encode() if isinstance(value, str) else value
        if len(raw) < MIN_CANARY:
            raise ValueError(f"a secret has at least {MIN_CANARY} bytes")
        with self._lock:
            self.secrets[name] = raw

    def text(self, where: str, text: str) -> None:
        """Keeps a text that left the platform (an error answer, metrics, a message) for the scan."""
        with self._lock:
            if len(self.texts) < MAX_TEXTS:
                self.texts.append((where, text))
            else:
                self.dropped_texts += 1

    def data_root(self, root: Path) -> None:
        """Adds a directory whose files the final scan reads (besides the ones it finds itself)."""
        with self._lock:
            self.data_roots.append(root)

    def canary_needles(self) -> Needles:
        return Needles((c, form) for c in sorted(self.canaries) for form in text_forms(c))

    def all_needles(self) -> Needles:
        named = [(c, form) for c in sorted(self.canaries) for form in text_forms(c)]
        for name, raw in self.secrets.items():
            named += [(f"secret {name}", form) for form in secret_forms(raw)]
        return Needles(named)


REGISTER: Final = Register()


def holds_no_values(path: Path) -> bool:
    """Kafka's offset and time indexes (preallocated, mostly zeros) map offsets, never hold records."""
    return path.suffix in (".index", ".timeindex")


def is_log(path: Path) -> bool:
    return path.name.endswith(LOG_SUFFIXES) or path.parent.name in ("log", "logs")


def files(roots: Iterable[Path]) -> Iterator[Path]:
    """Every regular file under the roots, each once (sockets, fifos and vanished files skipped)."""
    seen: set[Path] = set()
    for root in roots:
        if not root.exists():
            continue
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            try:
                if not path.is_file() or path.is_symlink():
                    continue
                real = path.resolve()
            except OSError:
                continue
            if real not in seen:
                seen.add(real)
                yield path


def scan_files(roots: Iterable[Path], data: Needles, logs: Needles) -> Report:
    """Reads every file under roots: canaries everywhere, and secrets too in log files."""
    report = Report()
    for path in files(roots):
        if holds_no_values(path):
            continue
        try:
            content = path.read_bytes()
        except OSError:  # a file the broker or the database removed meanwhile
            continue
        report.files += 1
        report.bytes += len(content)
        needles = logs if is_log(path) else data
        report.hits += [Hit(str(path), name) for name in sorted(needles.find(content))]
    return report


def scan_texts(texts: Iterable[tuple[str, str]], needles: Needles) -> Report:
    """Looks for every needle in texts (answers, metrics, messages, log records)."""
    report = Report()
    for where, text in texts:
        report.texts += 1
        encoded = text.encode("utf-8", "backslashreplace")
        report.bytes += len(encoded)
        report.hits += [Hit(where, name) for name in sorted(needles.find(encoded))]
    return report


class Capture(logging.Handler):
    """Keeps every log record of this process (formatted, with its exception) for the final scan."""

    def __init__(self, register: Register) -> None:
        super().__init__(logging.DEBUG)
        self._register = register
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._register.text(f"log record of {record.name}", self.format(record))
        except Exception:  # noqa: BLE001 - a record that cannot format is logging's own problem
            self.handleError(record)


def register_key_file(path: Path) -> None:
    """Registers the secrets of a platform's key file (KEKs, index key, signing seed), if it has one."""
    if not path.exists():
        return
    content = json.loads(path.read_text())
    for version, kek in content.get("keks", {}).items():
        REGISTER.secret(f"KEK {version} of {path}", base64.b64decode(kek))
    for name in ("index_key", "signing_key"):
        REGISTER.secret(f"{name} of {path}", base64.b64decode(content[name]))


def keep_error_answer(response: httpx.Response) -> None:
    """An httpx response hook: every error answer's body goes to the final scan."""
    if response.status_code >= 400:
        response.read()
        where = f"{response.status_code} answer to {response.request.method} {response.request.url.path}"
        REGISTER.text(where, response.text)


def client(base: str, token: str, timeout: float) -> httpx.Client:
    """An HTTP client with a bearer token whose error answers are kept for the final scan."""
    return httpx.Client(
        base_url=base,
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout,
        event_hooks={"response": [keep_error_answer]},
    )
