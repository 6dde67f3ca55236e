"""This run's headline figures against the previous committed run, so a regression shows.

The previous run is the committed ``benchmarks/results.json`` (``git show HEAD:...``); where
git cannot give it, the results file on disk as it was before this run rewrote it. Only the
scenarios this run measured are compared (with ``--only`` the others are the previous run's).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.config import FOREIGN_CPU_WARNING, REGRESSION_SHARE, ROOT, Result
from benchmarks.contention import contention

SECTION = "## Compared with the previous committed run"
#: The committed results, relative to the repository root.
COMMITTED = "benchmarks/results.json"


@dataclass(frozen=True)
class Previous:
    """The previous run's results and where they were read."""

    source: str
    report: Result


@dataclass(frozen=True)
class Figure:
    """One headline figure of a scenario: its value and which way is better."""

    label: str
    value: float | None
    lower_is_better: bool = True
    kind: str = "seconds"  # or "share", "ratio"


def load_previous(results_dir: Path) -> Previous | None:
    """The committed results, else ``results_dir/results.json`` as on disk now (call this
    before the run writes it), else None (no previous run)."""
    try:
        shown = subprocess.run(["git", "-C", str(ROOT), "show", f"HEAD:./{COMMITTED}"],
                               capture_output=True, text=True, check=False)
        if shown.returncode == 0:
            return Previous(f"`git show HEAD:{COMMITTED}`", json.loads(shown.stdout))
    except (OSError, ValueError):
        pass
    on_disk = results_dir / "results.json"
    try:
        return Previous(f"`{on_disk}` (not from git)", json.loads(on_disk.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def figures(summary: Result, name: str, size: str) -> Iterator[Figure]:
    """The headline figures of scenario ``name`` at ``size`` in a summary (``summarize``'s;
    fields missing from older results are skipped)."""
    label = f"{name}@{size}"
    if name == "bronze":
        entry = summary.get("bronze_throughput", {}).get(size, {})
        yield Figure(f"{label} wall s", entry.get("wall_seconds"))
    elif name == "graph":
        entry = summary.get("whole_graph", {}).get(size, {})
        yield Figure(f"{label} wall s", entry.get("wall_seconds"))
    elif name in ("micro_batch", "micro_batch_warm"):
        entry = summary.get(name, {}).get(size, {})
        yield Figure(f"{label} wall s", entry.get("wall_seconds"))
        yield Figure(f"{label} share of full refresh", entry.get("share_of_full_refresh"), kind="share")
    elif name == "kafka":
        entry = summary.get("kafka_bronze", {}).get(size, {})
        yield Figure(f"{label} ratio to the plain loop", entry.get("ratio"), lower_is_better=False, kind="ratio")
    elif name == "live":
        entry = summary.get("live_latency", {}).get(size, {})
        for target in ("bronze", "gold"):
            for p in ("p50", "p95"):
                yield Figure(f"{label} to {target} {p} s", entry.get(f"to_{target}_{p}"))


def _value(value: float | None, kind: str) -> str:
    if value is None:
        return "n/a"
    return {"share": f"{value:.0%}", "ratio": f"{value:.3f}"}.get(kind, f"{value:,.1f}")


def compare(previous: Result | None, current: Result, measured: list[Result]) -> list[tuple[str, str, str, str, str]]:
    """Rows (figure, previous, current, change, flag) for every headline figure of the
    scenarios in ``measured``; a scenario that failed is one FAILED row. A regression measured
    while other processes used much of the CPU says so (its times are inflated)."""
    before = (previous or {}).get("summary", {})
    rows = []
    for scenario in measured:
        name, size = scenario["name"], scenario["size"]
        if "error" in scenario:
            rows.append((f"{name}@{size}", "", "FAILED", "", "FAILED"))
            continue
        old = {f.label: f for f in figures(before, name, size)}
        for new in figures(current, name, size):
            prev = old[new.label].value if new.label in old else None
            change, flag = "n/a", ""
            if prev and new.value is not None:
                share = (new.value - prev) / prev
                change = f"{share:+.1%}"
                worse = share if new.lower_is_better else -share
                flag = "REGRESSION" if worse > REGRESSION_SHARE else ""
                if flag and contention(scenario) > FOREIGN_CPU_WARNING:
                    flag += f" (others used {contention(scenario):.0%} of the CPU)"
            rows.append((new.label, _value(prev, new.kind), _value(new.value, new.kind), change, flag))
    return rows


def render_comparison(previous: Previous | None, summary: Result, measured: list[Result]) -> list[str]:
    """The RESULTS.md section comparing ``summary`` (this run's) with the previous run."""
    lines = [SECTION, ""]
    if previous is None:
        return lines + [f"No previous run (no committed `{COMMITTED}` and no results file on disk): "
                        "nothing to compare.", ""]
    report = previous.report
    machine = report.get("machine", {})
    lines += [
        f"Previous: {previous.source}, written {report.get('date', 'n/a')} at commit {machine.get('commit', 'n/a')} "
        "(each scenario's figures are from that scenario's last run). Change = (current - previous) / previous; "
        f"REGRESSION: more than {REGRESSION_SHARE:.0%} worse (a longer time or micro-batch share, a lower "
        "Kafka ratio).",
        "",
        "| figure | previous | current | change | |",
        "|---|---:|---:|---:|---|",
    ]
    rows = compare(report, summary, measured)
    lines += [f"| {' | '.join(row)} |" for row in rows]
    if not rows:
        lines.append("| n/a (nothing measured yet) | | | | |")
    flagged = [f"{row[0]}: {row[4]}" for row in rows if row[4]]
    lines += ["", f"Flagged: {'; '.join(flagged)}." if flagged else f"No regression ({len(rows)} figures compared).",
              ""]
    return lines
