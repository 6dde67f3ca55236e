"""Headline numbers for a gym manager, read from the gold and silver tables."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fitness_assets.lakehouse.store import TableStore
from fitness_assets.tables import COMPLETED_WORKOUTS, GYM_SUMMARY, WORKOUT_BPM_SUMMARY


def headlines(store: TableStore, spark: SparkSession) -> dict[str, Any]:
    """Workouts completed, average heart rate by age bin, the busiest gym and day."""
    if not all(store.exists(s) for s in (COMPLETED_WORKOUTS, WORKOUT_BPM_SUMMARY, GYM_SUMMARY)):
        return {}
    out: dict[str, Any] = {"workouts completed": store.row_count(COMPLETED_WORKOUTS)}
    summary = store.read(WORKOUT_BPM_SUMMARY)
    by_age = (summary.groupBy(F.coalesce("age", F.lit("no profile")).alias("age"))
              .agg((F.sum(F.col("avg_bpm") * F.col("num_recordings")) / F.sum("num_recordings")).alias("bpm"),
                   F.count(F.lit(1)).alias("workouts"))
              .orderBy("age").collect())
    out["average heart rate by age bin"] = ", ".join(
        f"{r['age']}: {r['bpm']:.1f} bpm ({r['workouts']} workouts)" for r in by_age) or "n/a"
    visits = store.read(GYM_SUMMARY).groupBy("gym", "date").agg(
        F.countDistinct("mac_address", "workout_id", "session_id").alias("workouts"),
        F.sum("minutes_exercising").alias("minutes"))
    busiest = visits.orderBy(F.desc("workouts"), F.desc("minutes"), "gym", "date").first()
    if busiest is not None:
        out["busiest gym and day"] = (f"gym {busiest['gym']} on {busiest['date']}: {busiest['workouts']} workouts, "
                                      f"{busiest['minutes']:.0f} minutes exercising")
    return out
