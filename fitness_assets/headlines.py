"""Headline numbers for a gym manager, read from the gold and silver tables."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession

from fitness_assets.lakehouse.store import TableStore


def headlines(store: TableStore, spark: SparkSession) -> dict[str, Any]:
    """Nothing until the gold layer exists."""
    return {}
