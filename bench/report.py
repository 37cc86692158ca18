"""The run's results: `latest.json` (everything) and `latest.md` (the tables the README links to).

Both files are written next to each other atomically: each goes to a `.tmp` file first and is then
renamed over the old one, so a reader never sees half a file. Neither holds personal data: figures,
timings, pseudonymous counts and the machine's description only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench.figures import BenchResult, Figure
from bench.machine import describe

SCHEMA_VERSION: Final = 1


@dataclass
class Run:
    """One run of the suite: what was asked, on what machine, and what each benchmark gave."""

    info: dict[str, Any]
    results: dict[str, BenchResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        benchmarks: dict[str, Any] = {
            name: {
                "title": r.title,
                "status": "ok",
                "method": r.method,
                "figures": [f.to_json(name) for f in r.figures],
                "details": r.details,
            }
            for name, r in self.results.items()
        }
        for name, error in self.errors.items():
            benchmarks[name] = {"status": "error", "error": error, "figures": []}
        figures = [f.to_json(name) for name, r in self.results.items() for f in r.figures]
        statuses = [f["status"] for f in figures]
        return {
            "schema_version": SCHEMA_VERSION,
            "run": self.info,
            "summary": {
                "pass": statuses.count("pass"),
                "miss": statuses.count("miss"),
                "info": statuses.count("info"),
                "errors": sorted(self.errors),
            },
            "benchmarks": benchmarks,
            "figures": figures,
        }


def write(run: Run, out: Path) -> tuple[Path, Path]:
    """Writes latest.json and latest.md into out (atomically, each)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "latest.json", out / "latest.md"
    _atomic(json_path, json.dumps(run.to_json(), indent=2, sort_keys=False, default=str) + "\n")
    _atomic(md_path, markdown(run))
    return json_path, md_path


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def number(value: float) -> str:
    """A figure as people read it: thousands separated, three significant digits below 100."""
    if value != value:  # NaN
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def _figure_cells(figure: Figure) -> list[object]:
    target = figure.target.label() if figure.target else ""
    size = f"{figure.size:,}" if figure.size is not None else ""
    return [figure.name, size, number(figure.value), figure.unit, target, figure.status, figure.note]


def markdown(run: Run) -> str:
    """The markdown report: targets first, then the scaling curve, then every benchmark's figures."""
    info = run.info
    lines = [
        "# Consentry benchmarks",
        "",
        f"Run {info['started_at']} on commit `{info['git']['commit'][:12]}`"
        f"{' (with uncommitted changes)' if info['git']['dirty'] else ''}; "
        f"{'quick run; ' if info['quick'] else ''}sizes {', '.join(f'{s:,}' for s in info['sizes'])}; "
        f"{info['machine']['cpus']} CPUs, Python {info['machine']['python']}, "
        f"SQLite {info['machine']['sqlite']}; load average {info['load_avg_start']:.2f} at the start, "
        f"{info['load_avg_end']:.2f} at the end. {describe(info.get('cpu'))}",
        "",
        "Every baseline is measured in the same run as the figure it is compared with. "
        "Produced by `make bench` (`python -m bench`); the JSON next to this file has every detail.",
        *_code_changed(info),
        "",
        "## Targets (issue 5)",
        "",
    ]
    targeted = [(n, f) for n, r in run.results.items() for f in r.figures if f.target is not None]
    lines += _table(
        ["benchmark", "figure", "size", "measured", "unit", "target", "status", "note"],
        [[n, *_figure_cells(f)] for n, f in targeted],
    )
    if run.errors:
        lines += ["", "## Benchmarks that failed", ""]
        lines += [
            f"- **{name}**: {error.splitlines()[0] if error else ''}"
            for name, error in run.errors.items()
        ]
    scaling = run.results.get("scaling")
    if scaling is not None:
        lines += ["", "## Scaling curve", "", *_scaling(scaling.details["rows"])]
    for name, result in run.results.items():
        lines += ["", f"## {result.title} (`{name}`)", "", result.method, ""]
        lines += [describe(result.details.get("cpu")), ""]
        lines += _table(
            ["figure", "size", "value", "unit", "target", "status", "note"],
            [_figure_cells(f) for f in result.figures],
        )
    return "\n".join(lines) + "\n"


def _code_changed(info: Mapping[str, Any]) -> list[str]:
    """A warning when the code under test moved during the run (processes may mix versions)."""
    end = info.get("git_end", info["git"])
    if end == info["git"]:
        return []
    return ["", f"**Warning:** the code changed during the run (ended on `{end['commit'][:12]}`)."]


def _scaling(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    header = [
        "events",
        "ingest sealed (events/s)",
        "plaintext",
        "aes_cipher",
        "ingest µs/event",
        "replay (events/s)",
        "replay µs/event",
        "replay peak RSS (MiB)",
        "log on disk (MiB)",
    ]
    return _table(
        header,
        [
            [
                f"{r['events']:,}",
                number(r["ingest_events_per_s"]["sealed"]),
                number(r["ingest_events_per_s"].get("plaintext", float("nan"))),
                number(r["ingest_events_per_s"].get("aes_cipher", float("nan"))),
                number(r["ingest_us_per_event"]),
                number(r["replay_events_per_s"]),
                number(r["replay_us_per_event"]),
                number(r["replay_peak_rss_mib"]),
                number(r["log_bytes"] / 2**20),
            ]
            for r in rows
        ],
    )
