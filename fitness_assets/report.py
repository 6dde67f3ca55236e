"""The run report: rows per table, quarantine, check results, headline numbers, wall time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fitness_assets.lakehouse.store import TableStore
from fitness_assets.tables import ALL_TABLES, QUARANTINE_TABLES


@dataclass
class CheckOutcome:
    asset: str
    check: str
    passed: bool
    severity: str


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

    def render(self) -> str:
        lines = [f"Run {'succeeded' if self.success else 'FAILED'} in {self.wall_seconds:.1f} s "
                 f"(Spark start-up {self.spark_start_seconds:.1f} s)"]
        if self.failed_steps:
            lines.append("Failed steps: " + ", ".join(self.failed_steps))
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
        lines.append(f"Checks: {passed} passed, {len(self.checks) - passed} failed")
        for c in self.checks:
            if not c.passed:
                lines.append(f"  {'WARN' if c.severity == 'WARN' else 'FAIL'} {c.asset} :: {c.check}")
        if self.headlines:
            lines.append("")
            lines.append("Headlines:")
            for key, value in self.headlines.items():
                lines.append(f"  {key}: {value}")
        return "\n".join(lines)


def table_rows(store: TableStore) -> dict[str, int]:
    return {spec.qualified_name: store.row_count(spec) for spec in ALL_TABLES if store.exists(spec)}


def quarantine_reasons(store: TableStore) -> dict[str, dict[str, int]]:
    out = {}
    for spec in QUARANTINE_TABLES:
        if store.exists(spec):
            rows = store.read(spec).groupBy("reason").count().collect()
            out[spec.qualified_name] = {r["reason"]: r["count"] for r in rows}
    return out
