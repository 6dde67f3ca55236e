"""The run report: rows per table, quarantine, check results, headline numbers, wall time."""

from __future__ import annotations

import html
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fitness_assets.lakehouse.store import LakehouseNotWritable, TableStore, local_path
from fitness_assets.pipelines.bronze import reason_counts
from fitness_assets.tables import ALL_TABLES, QUARANTINE_TABLES


@dataclass
class CheckOutcome:
    asset: str
    check: str
    passed: bool
    severity: str
    kept: bool = False  # recorded again from an evaluation on the same data, not evaluated now


@dataclass
class RunReport:
    success: bool
    wall_seconds: float
    spark_start_seconds: float
    tables: dict[str, int] = field(default_factory=dict)
    quarantine_reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)
    headlines: dict[str, Any] = field(default_factory=dict)
    failed_steps: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # step -> what failed it
    overview: str | None = None  # where the picture overview was written
    spark: str = ""  # the Spark the run used (mode, memory, JIT)
    complete: bool = True  # False: the tables could not be read after the run (see failures)
    not_evaluated: list[str] = field(default_factory=list)  # "<asset> :: <check>" of tables written, no result

    @property
    def ok(self) -> bool:
        """The run succeeded and its report is whole: the CLI's exit code 0."""
        return self.success and self.complete

    def render(self) -> str:
        lines = [f"Run {'succeeded' if self.success else 'FAILED'} in {self.wall_seconds:.1f} s "
                 f"(Spark start-up {self.spark_start_seconds:.1f} s{': ' + self.spark if self.spark else ''})"
                 + ("" if self.complete else "; its report is incomplete")]
        if self.failed_steps:
            lines.append("Failed steps: " + ", ".join(self.failed_steps))
        lines.extend(f"  {step}: {why}" for step, why in self.failures.items())
        lines.append("")
        lines.append(f"{'table':<40} {'rows':>12}")
        for name, rows in self.tables.items():
            lines.append(f"{name:<40} {rows:>12,}")
        if any(self.quarantine_reasons.values()):
            lines.append("")
            lines.append("Quarantined lines by reason:")
            for table, reasons in self.quarantine_reasons.items():
                for reason, n in sorted(reasons.items()):
                    lines.append(f"  {table:<36} {reason:<34} {n:>8,}")
        lines.append("")
        passed = sum(c.passed for c in self.checks)
        warned = sum(not c.passed and c.severity == "WARN" for c in self.checks)
        kept = sum(c.kept for c in self.checks)
        lines.append(f"Checks: {passed} passed, {warned} warned, {len(self.checks) - passed - warned} failed"
                     + (f", {len(self.not_evaluated)} not evaluated" if self.not_evaluated else "")
                     + (f" ({kept} kept from an evaluation on the same data)" if kept else ""))
        for c in self.checks:
            if not c.passed:
                lines.append(f"  {'WARN' if c.severity == 'WARN' else 'FAIL'} {c.asset} :: {c.check}")
        lines.extend(f"  NOT EVALUATED {check}" for check in self.not_evaluated)
        if self.headlines:
            lines.append("")
            lines.append("Headlines:")
            for key, value in self.headlines.items():
                lines.append(f"  {key}: {value}")
        if self.overview:
            lines.append("")
            lines.append(f"Overview: {self.overview}")
        return "\n".join(lines)


def table_rows(store: TableStore) -> dict[str, int]:
    return {spec.qualified_name: store.row_count(spec) for spec in ALL_TABLES if store.exists(spec)}


def quarantine_reasons(store: TableStore) -> dict[str, dict[str, int]]:
    return {spec.qualified_name: reason_counts(store, spec) for spec in QUARANTINE_TABLES if store.exists(spec)}


# ------------------------------------------------------------------------ picture overview

CHART_WIDTH, CHART_HEIGHT = 440, 240
BAR_COLOUR, ACCENT_COLOUR = "#3b7dd8", "#d8673b"


def report_dir(lakehouse_root: str) -> Path | None:
    """``<lakehouse root>/../report`` for a local lakehouse (``.data/report`` by default);
    None for an object store."""
    local = local_path(lakehouse_root)
    return None if local is None else Path(local).resolve().parent / "report"


def check_report_dir(folder: Path | None) -> None:
    """The report folder (beside the lakehouse, outside its root) can be made: a
    ``LakehouseNotWritable`` in one line before Spark starts otherwise."""
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LakehouseNotWritable(
            f"the report folder {folder} (beside the lakehouse) cannot be made ({error.strerror}): free that path or "
            "set FITNESS_LAKEHOUSE_ROOT to a folder whose parent is writable") from None


def bar_chart(title: str, bars: list[tuple[str, float]], unit: str, highlight: int | None = None,
              baseline: float = 0.0) -> str:
    """An inline SVG bar chart: one labelled bar per (label, value), values above the bars,
    bars measured from ``baseline`` (which the axis says)."""
    left, right, top, bottom = 36, 8, 28, 44
    width, height = CHART_WIDTH - left - right, CHART_HEIGHT - top - bottom
    top_value = max([v for _, v in bars] + [baseline + 1e-9])
    scale = height / (top_value - baseline) if top_value > baseline else 0.0
    step = width / max(len(bars), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{CHART_WIDTH / 2:.0f}" y="16" text-anchor="middle" font-size="13" '
             f'font-weight="bold">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{top + height}" x2="{left + width}" y2="{top + height}" stroke="#888"/>',
             f'<text x="{left - 4}" y="{top + height}" text-anchor="end" font-size="9">{baseline:g}</text>',
             f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" font-size="9">{top_value:.0f}</text>',
             f'<text x="4" y="{top + height / 2:.0f}" font-size="9" transform="rotate(-90 8 {top + height / 2:.0f})" '
             f'text-anchor="middle">{html.escape(unit)}</text>']
    for i, (label, value) in enumerate(bars):
        h = max(value - baseline, 0.0) * scale
        x = left + i * step + step * 0.1
        colour = ACCENT_COLOUR if i == highlight else BAR_COLOUR
        parts.append(f'<rect x="{x:.1f}" y="{top + height - h:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}" '
                     f'fill="{colour}"><title>{html.escape(label)}: {value:.1f} {html.escape(unit)}</title></rect>')
        if len(bars) <= 12 or i % 3 == 0:
            parts.append(f'<text x="{x + step * 0.4:.1f}" y="{top + height + 12}" text-anchor="middle" '
                         f'font-size="9">{html.escape(label)}</text>')
        if len(bars) <= 12 and value:
            parts.append(f'<text x="{x + step * 0.4:.1f}" y="{top + height - h - 3:.1f}" text-anchor="middle" '
                         f'font-size="9">{value:.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def overview_html(data: dict[str, Any], headlines: dict[str, Any] | None = None) -> str:
    """A self-contained HTML page (inline SVG, no script, no external file) with the headline
    numbers: members inside per hour of the day, heart rate by age bin, minutes per
    heart-rate zone and members at risk."""
    hours = data.get("occupancy_by_hour") or []
    peak = max(range(len(hours)), key=lambda i: (hours[i][1], -i)) if hours else None
    charts = [bar_chart("Members inside per hour of day (UTC, mean per gym-day)",
                        [(f"{h:02d}", v) for h, v in hours], "members", highlight=peak)]
    by_age = data.get("heart_rate_by_age") or []
    base = 10 * int(min(b for _, b, _ in by_age) // 10 - 1) if by_age else 0
    charts.append(bar_chart("Average heart rate by age bin", [(a, b) for a, b, _ in by_age], "bpm",
                            baseline=max(base, 0)))
    if data.get("zone_minutes"):
        charts.append(bar_chart("Minutes in heart-rate zones (max HR = 220 - age)", data["zone_minutes"], "minutes"))
    facts = []
    if data.get("members"):
        facts.append(f"<b>{data['at_risk']}</b> of {data['members']} members at risk (regular training, then "
                     f"{data['at_risk_after_days']} days or more without a visit or workout, as of "
                     f"{data['reference_date']})")
    for key, value in (headlines or {}).items():
        if key == "average heart rate by age bin":  # charted above
            continue
        facts.append(f"{html.escape(str(key))}: {html.escape(str(value))}")
    items = "".join(f"<li>{f}</li>" for f in facts)
    figures = "".join(f'<div class="chart">{c}</div>' for c in charts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Fitness overview</title>"
            "<style>body{font-family:sans-serif;margin:16px;width:920px}h1{font-size:18px;margin:0 0 8px}"
            ".chart{display:inline-block;margin:4px 8px 4px 0}ul{font-size:12px;padding-left:18px}</style>"
            f"</head><body><h1>Fitness centre overview</h1>{figures}<ul>{items}</ul></body></html>\n")


def write_overview(store: TableStore, directory: Path | None, headlines: dict[str, Any] | None = None,
                   png: bool = False, data: dict[str, Any] | None = None) -> Path | None:
    """Write ``overview.html`` (and ``overview.png`` when asked and Chromium is there) into
    ``directory``; the HTML's path, or None when there is no directory or no gold table yet."""
    from fitness_assets.headlines import overview

    if directory is None:
        return None
    data = overview(store) if data is None else data
    if not data["occupancy_by_hour"] and not data["heart_rate_by_age"]:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    page = directory / "overview.html"
    page.write_text(overview_html(data, headlines), encoding="utf-8")
    if png:
        screenshot(page, directory / "overview.png")
    return page


def screenshot(page: Path, png: Path, width: int = 960, height: int = 640, timeout: float = 60.0) -> Path | None:
    """A PNG of a local HTML page by headless Chromium; None when no Chromium is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return None
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--screenshot={png}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=timeout)
    return png
