"""wrk, the load generator of the HTTP benchmarks: a C client, so the latencies are the server's.

A Python client on the same two cores adds its own CPU time and event-loop queueing to every
round trip (httpx spends about as long per request as the server's HTTP stack does), so the
figures would be the client's as much as the server's. wrk (Debian's `wrk` package, installed on
first use when running as root, as `infra/postgres` does for PostgreSQL) keeps N keep-alive
connections busy back to back from one thread and records each round trip in its histogram. A Lua
script picks each request's path and checks each answer: a 200 that carries the expected text
counts as good, anything else as bad, and the totals come back as one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.figures import BenchError
from bench.pipeline import say

TIMEOUT_SECONDS: Final = 30

_SCRIPT: Final = """
local paths = {%(paths)s}
local need = %(need)s
math.randomseed(%(seed)d)
good, bad, last_bad = 0, 0, 0

request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end

response = function(status, headers, body)
  if status == 200 and (need == nil or string.find(body, need, 1, true)) then
    good = good + 1
  else
    bad = bad + 1
    last_bad = status
  end
end

local threads = {}
setup = function(thread) table.insert(threads, thread) end

done = function(summary, latency, requests)
  local g, b, s = 0, 0, 0
  for _, t in ipairs(threads) do
    g, b = g + t:get("good"), b + t:get("bad")
    if t:get("last_bad") ~= 0 then s = t:get("last_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests": %%d, "good": %%d, "bad": %%d, "bad_status": %%d, "socket_errors": %%d, ' ..
    '"seconds": %%.6f, "p50_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, g, b, s, e.connect + e.read + e.write + e.timeout,
    summary.duration / 1e6, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True, slots=True)
class Load:
    """What one wrk run measured (latencies in milliseconds, over every answered request)."""

    requests: int
    good: int
    bad: int
    bad_status: int
    socket_errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def ensure() -> str:
    """The wrk executable; installs Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise BenchError("wrk is missing: install Debian's `wrk` package (apt-get install wrk)")
    say("bench: installing Debian's wrk package")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
        subprocess.run(command, env=env, check=True, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get installed wrk, yet it is not on PATH")
    return found


def load(
    base: str,
    paths: Sequence[str],
    *,
    connections: int,
    seconds: float,
    token: str,
    need: str | None = None,
    seed: int = 1,
) -> Load:
    """`connections` keep-alive connections GET random `paths` back to back for `seconds`."""
    if not paths or any('"' in p or "\\" in p for p in paths):
        raise BenchError("wrk paths must be plain URL paths")
    script = _SCRIPT % {
        "paths": ",".join(f'"{p}"' for p in paths),
        "need": "nil" if need is None else f'"{need}"',
        "seed": seed,
    }
    with tempfile.TemporaryDirectory(prefix="wrk-") as scratch:
        lua = Path(scratch) / "load.lua"
        lua.write_text(script)
        command = [
            ensure(),
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",  # whole seconds only
            f"--timeout={TIMEOUT_SECONDS}s",
            "-H",
            f"Authorization: Bearer {token}",
            "-s",
            str(lua),
            base,
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 2 * TIMEOUT_SECONDS, check=False
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr[-500:] or done.stdout[-500:]}")
    body = json.loads(lines[-1])
    return Load(
        requests=body["requests"],
        good=body["good"],
        bad=body["bad"],
        bad_status=body["bad_status"],
        socket_errors=body["socket_errors"],
        seconds=body["seconds"],
        p50_ms=body["p50_us"] / 1000,
        p99_ms=body["p99_us"] / 1000,
        max_ms=body["max_us"] / 1000,
    )
