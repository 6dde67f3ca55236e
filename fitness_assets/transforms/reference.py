"""The calendar reference table."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F


def sunday_week_of_year(date: Column) -> Column:
    """Week of the year with Sunday as first day, days before the first Sunday in week 0
    (C's ``strftime('%U')``): ``(dayofyear + 7 - dayofweek) div 7`` with Spark's 1 = Sunday."""
    return F.floor((F.dayofyear(date) + F.lit(7) - F.dayofweek(date)) / F.lit(7)).cast("int")


def date_lookup(spark: SparkSession, start: dt.date, end: dt.date) -> DataFrame:
    """One row per day from ``start`` to ``end`` inclusive with the contract's calendar columns."""
    if end < start:
        raise ValueError(f"date_lookup range is empty: {start} > {end}")
    days = spark.range(1).select(
        F.explode(F.sequence(F.lit(start), F.lit(end), F.expr("INTERVAL 1 DAY"))).alias("date")
    )
    week = sunday_week_of_year(F.col("date"))
    year = F.year("date")
    return days.select(
        F.col("date"),
        week.alias("week"),
        year.alias("year"),
        F.month("date").alias("month"),
        F.dayofweek("date").alias("dayofweek"),
        F.dayofmonth("date").alias("dayofmonth"),
        F.dayofyear("date").alias("dayofyear"),
        F.concat_ws("-", year.cast("string"), week.cast("string")).alias("week_part"),
    )
