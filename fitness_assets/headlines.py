"""Headline numbers for a gym manager, read from the gold and silver tables."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fitness_assets.lakehouse.store import TableStore
from fitness_assets.tables import (
    COMPLETED_WORKOUTS,
    GYM_OCCUPANCY,
    GYM_SUMMARY,
    MEMBER_ENGAGEMENT,
    WORKOUT_BPM_SUMMARY,
    WORKOUT_PERFORMANCE,
)
from fitness_assets.transforms.business import REGULAR_WINDOW_DAYS, REGULAR_WORKOUTS
from fitness_assets.transforms.silver import AGE_BINS


def headlines(store: TableStore, spark: SparkSession, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Workouts completed, average heart rate by age bin, the busiest gym and day; ``data``:
    the ``overview`` when the caller has it already."""
    if not all(store.exists(s) for s in (COMPLETED_WORKOUTS, WORKOUT_BPM_SUMMARY, GYM_SUMMARY)):
        return {}
    out: dict[str, Any] = {"workouts completed": store.row_count(COMPLETED_WORKOUTS)}
    data = overview(store) if data is None else data
    out["average heart rate by age bin"] = ", ".join(  # in the bins' order, youngest first
        f"{age}: {bpm:.1f} bpm ({workouts} workouts)" for age, bpm, workouts in data["heart_rate_by_age"]) or "n/a"
    visits = store.read(GYM_SUMMARY).groupBy("gym", "date").agg(
        F.countDistinct("mac_address", "workout_id", "session_id").alias("workouts"),
        F.sum("minutes_exercising").alias("minutes"))
    busiest = visits.orderBy(F.desc("workouts"), F.desc("minutes"), "gym", "date").first()
    if busiest is not None:
        out["busiest gym and day"] = (f"gym {busiest['gym']} on {busiest['date']}: {busiest['workouts']} workouts, "
                                      f"{busiest['minutes']:.0f} minutes exercising")
    if data["occupancy_by_hour"]:
        hour, visitors = max(data["occupancy_by_hour"], key=lambda hv: (hv[1], -hv[0]))
        out["busiest hour"] = f"{hour:02d}:00 UTC, {visitors:.1f} members inside on average per gym and day"
    if data["members"]:
        out["members at risk"] = (f"{data['at_risk']} of {data['members']} (as of {data['reference_date']}, "
                                  f"{data['at_risk_after_days']} days without a visit or workout after at least "
                                  f"{REGULAR_WORKOUTS} workouts in {REGULAR_WINDOW_DAYS} days)")
    return out


def overview(store: TableStore) -> dict[str, Any]:
    """The numbers of the picture overview, small enough to collect: members inside per hour of
    the day (mean over the gym-days with any visit), heart rate by age bin (mean of all
    readings), members at risk, and minutes per heart-rate zone."""
    out: dict[str, Any] = {"occupancy_by_hour": [], "heart_rate_by_age": [], "zone_minutes": [],
                           "members": 0, "at_risk": 0, "reference_date": None, "at_risk_after_days": None}
    if store.exists(GYM_OCCUPANCY):
        occupancy = store.read(GYM_OCCUPANCY)
        gym_days = occupancy.select("gym", "date").distinct().count()
        if gym_days:
            by_hour = {r["hour"]: r["visitors"] for r in occupancy.groupBy("hour").agg(
                F.sum("visitors").alias("visitors")).collect()}
            out["occupancy_by_hour"] = [(h, by_hour.get(h, 0) / gym_days) for h in range(24)]
    if store.exists(WORKOUT_BPM_SUMMARY):
        rows = (store.read(WORKOUT_BPM_SUMMARY)
                .groupBy(F.coalesce("age", F.lit("no profile")).alias("age"))
                .agg((F.sum(F.col("avg_bpm") * F.col("num_recordings")) / F.sum("num_recordings")).alias("bpm"),
                     F.count(F.lit(1)).alias("workouts"))
                .orderBy("age").collect())
        order = [label for _, label in AGE_BINS] + ["95+", "invalid age", "no profile"]
        out["heart_rate_by_age"] = sorted(((r["age"], r["bpm"], r["workouts"]) for r in rows),
                                          key=lambda r: (order.index(r[0]) if r[0] in order else len(order), r[0]))
    if store.exists(MEMBER_ENGAGEMENT):
        row = store.read(MEMBER_ENGAGEMENT).agg(
            F.count(F.lit(1)).alias("members"), F.count_if("at_risk").alias("at_risk"),
            F.max("reference_date").alias("reference_date"),
            F.max("at_risk_after_days").alias("days")).first()
        out.update(members=row["members"], at_risk=row["at_risk"], reference_date=row["reference_date"],
                   at_risk_after_days=row["days"])
    if store.exists(WORKOUT_PERFORMANCE):
        zones = [f"zone{k}_minutes" for k in range(1, 6)]
        row = store.read(WORKOUT_PERFORMANCE).agg(*[F.sum(z).alias(z) for z in zones]).first()
        out["zone_minutes"] = [(f"zone {k}", row[z] or 0.0) for k, z in enumerate(zones, 1)]
    return out
