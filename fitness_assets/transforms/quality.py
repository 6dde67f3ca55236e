"""Data-quality rules as DataFrame functions (one also on Arrow): each returns the offending rows."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def null_keys(df: DataFrame, columns: Sequence[str]) -> DataFrame:
    """Rows where any of ``columns`` is NULL."""
    condition = F.lit(False)
    for c in columns:
        condition = condition | F.col(c).isNull()
    return df.where(condition)


def duplicate_keys(df: DataFrame, keys: Sequence[str]) -> DataFrame:
    """One row per key value that occurs more than once, with its count ``n``."""
    return df.groupBy(*keys).agg(F.count(F.lit(1)).alias("n")).where(F.col("n") > 1)


def duplicate_keys_arrow(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """``duplicate_keys`` of an Arrow table of (at least) the ``keys`` columns."""
    counts = table.group_by(list(keys)).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts["count_all"], 1))
    return pa.table([*[repeated[k] for k in keys], repeated["count_all"]], names=[*keys, "n"])


def violations(df: DataFrame, bad_condition: str) -> DataFrame:
    """Rows for which the SQL condition ``bad_condition`` is true."""
    return df.where(F.expr(bad_condition))


def missing_links(df: DataFrame, columns: Sequence[str], parent: DataFrame, parent_columns: Sequence[str]) -> DataFrame:
    """Distinct values of ``columns`` in ``df`` with no match in ``parent``."""
    keys = df.select(*columns).where(F.col(columns[0]).isNotNull()).distinct()
    parents = parent.select(*[F.col(p).alias(c) for p, c in zip(parent_columns, columns, strict=True)]).distinct()
    return keys.join(parents, on=list(columns), how="left_anti")
