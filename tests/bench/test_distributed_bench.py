"""The distributed benchmark runs end to end at tiny sizes with its baselines (no timing asserted).

`python -m bench --quick --only distributed` starts, for each variant, a Kafka broker and a
PostgreSQL cluster of its own through infra/'s scripts and the four services of the distributed
mode on them (a baseline's API and the whole-state cipher's relay from bench/baseline_services.py).
The run must measure every variant over the same workload, check that each stored what it claims,
report the ratios, and leave no process and no data behind.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from bench.baselines import AVRO_MAGIC, VARIANTS, stored_as

from tests.bench.quick import quick_run


def _servers() -> set[int]:
    """Pids of the Kafka brokers and PostgreSQL postmasters running now (the suite's own among them)."""
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                args = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"kafka.Kafka" in args or (args[0].endswith(b"/postgres") and b"-D" in args):
                found.add(int(proc.name))
    return found


def test_a_quick_distributed_run_measures_every_variant_on_stacks_of_their_own(
    tmp_path: Path,
) -> None:
    out, scratch = tmp_path / "results", tmp_path / "tmp"
    scratch.mkdir()
    servers = _servers()
    result = quick_run(("distributed",), out, scratch, timeout=900)["benchmarks"]["distributed"]
    assert result["status"] == "ok", result.get("error")
    figures = {f["name"]: f for f in result["figures"]}
    for variant in VARIANTS:
        for kind in ("events_per_s", "accepted_events_per_s", "api_peak_rss"):
            value = figures[f"ingest.{variant}.{kind}"]["value"]
            assert math.isfinite(value) and value > 0, (variant, kind)
    sealed = figures["ingest.sealed.events_per_s"]["value"]
    assert figures["ingest.sealed_to_plaintext"]["value"] == pytest.approx(
        sealed / figures["ingest.plaintext.events_per_s"]["value"]
    )
    for prefix in ("ingest.", "ingest.accepted."):
        for ratio in ("sealed_to_plaintext", "sealed_to_aes_cipher", "sealing_overhead"):
            assert math.isfinite(figures[prefix + ratio]["value"]), prefix + ratio
    for stage in ("keys_destroyed", "views_purged", "gone_410"):
        assert figures[f"erasure.{stage}.p99"]["status"] == "pass", stage
    runs = result["details"]["ingest"]
    assert sorted(r["variant"] for r in runs) == sorted(VARIANTS)
    for run in runs:
        assert sorted(run["peak_rss_mib"]) == ["api", "processors", "relay", "shredder"]
        assert all(mib > 10 for mib in run["peak_rss_mib"].values()), run
        assert sorted(run["cpu_s"]) == sorted(run["peak_rss_mib"])
        assert run["cpu_s"]["api"] > 0 and all(s >= 0 for s in run["cpu_s"].values()), run
    # The same workload, decided the same way: every variant appended the same events.
    assert len({r["events"] for r in runs}) == 1 and runs[0]["events"] > 0
    # Brokers, clusters and services are stopped; their data (a baseline's is in the clear) gone.
    assert _servers() <= servers
    assert list(scratch.iterdir()) == []
    assert "example.com" not in (out / "latest.md").read_text()


def test_each_variant_is_recognised_by_what_it_stored() -> None:
    avro, opaque = AVRO_MAGIC + b"\x00" * 10, b"\x8e\x01nonce-and-ciphertext"
    assert stored_as("sealed", 3, avro)
    assert not stored_as("sealed", 0, avro)  # no data key: nothing was sealed
    assert stored_as("plaintext", 0, avro)
    assert not stored_as("plaintext", 3, avro)
    assert stored_as("aes_cipher", 0, opaque)
    assert not stored_as("aes_cipher", 0, avro)  # Avro in the store: not encrypted whole
    assert not any(stored_as(v, 0, None) for v in VARIANTS)  # nothing stored at all
    clear = avro + b"\x12plaintext\x00"  # a value's key id saying it was never sealed
    assert stored_as("keys_only", 3, clear)
    assert not stored_as("keys_only", 3, avro)  # values sealed: not the ablation
    assert not stored_as("keys_only", 0, clear)  # no data key: no key was managed
    assert not stored_as("sealed", 3, clear)
