"""Checks of `date_lookup`: one row per day, no gaps, the contract's week rules."""


import datetime as dt

from dagster import AssetCheckResult, MetadataValue

from fitness_assets.assets.checks_lib import custom_check
from fitness_assets.lakehouse.store import TableStore
from fitness_assets.resources import LakehouseResource
from fitness_assets.tables import DATE_LOOKUP


def expected_calendar_row(day: dt.date) -> dict:
    """The contract's row for ``day``, computed with Python's own strftime('%U')."""
    week = int(day.strftime("%U"))
    return {
        "date": day, "week": week, "year": day.year, "month": day.month,
        "dayofweek": (day.isoweekday() % 7) + 1, "dayofmonth": day.day,
        "dayofyear": day.timetuple().tm_yday, "week_part": f"{day.year}-{week}",
    }


def _complete_and_correct(store: TableStore, lakehouse: LakehouseResource) -> AssetCheckResult:
    start, end = lakehouse.date_range()
    rows = [r.asDict() for r in store.read(DATE_LOOKUP).collect()]
    by_day: dict[dt.date, list[dict]] = {}
    for row in rows:
        by_day.setdefault(row["date"], []).append(row)
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    missing = [d for d in days if d not in by_day]
    duplicated = [d for d, rs in by_day.items() if len(rs) > 1]
    extra = [d for d in by_day if not start <= d <= end]
    wrong = [str(d) for d in days if d in by_day and by_day[d][0] != expected_calendar_row(d)]
    return AssetCheckResult(
        passed=not (missing or duplicated or extra or wrong),
        metadata={
            "days": len(days), "rows": len(rows), "missing_days": len(missing), "duplicated_days": len(duplicated),
            "days_outside_range": len(extra), "wrong_rows": len(wrong),
            "sample": MetadataValue.json([str(d) for d in (missing + duplicated + extra)][:5] + wrong[:5]),
        },
    )


reference_checks = [custom_check(DATE_LOOKUP, "complete_and_correct",
                                 "One row per day of the range, no gaps, weeks and week_part as strftime('%U').",
                                 _complete_and_correct)]
