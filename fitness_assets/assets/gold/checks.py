"""Checks of the gold tables."""

from dagster import AssetCheckResult, asset_check
from pyspark.sql import functions as F

from fitness_assets.assets.checks_lib import key_checks, rule_check
from fitness_assets.assets.common import asset_key
from fitness_assets.resources import LakehouseResource, SparkResource
from fitness_assets.tables import GOLD_TABLES, GYM_SUMMARY, WORKOUT_BPM, WORKOUT_BPM_SUMMARY


@asset_check(asset=asset_key(WORKOUT_BPM_SUMMARY), name="recordings_match_workout_bpm", blocking=True,
             description="The sum of num_recordings equals the rows of silver.workout_bpm for summarised workouts, "
                         "and every workout of workout_bpm is summarised.")
def recordings_match(spark: SparkResource, lakehouse: LakehouseResource) -> AssetCheckResult:
    store = lakehouse.store(spark)
    summary = store.read(WORKOUT_BPM_SUMMARY)
    readings = store.read(WORKOUT_BPM)
    summarised = summary.agg(F.coalesce(F.sum("num_recordings"), F.lit(0))).first()[0]
    bpm_rows = readings.count()
    workouts = readings.select("user_id", "workout_id", "session_id").distinct().count()
    return AssetCheckResult(
        passed=summarised == bpm_rows and summary.count() == workouts,
        metadata={"sum_num_recordings": summarised, "workout_bpm_rows": bpm_rows,
                  "summary_rows": summary.count(), "workouts_with_readings": workouts},
    )


gold_checks = [
    *[check for spec in GOLD_TABLES for check in key_checks(spec)],
    recordings_match,
    rule_check(WORKOUT_BPM_SUMMARY, "bpm_ordered", "NOT (min_bpm <= avg_bpm AND avg_bpm <= max_bpm)",
               "min_bpm <= avg_bpm <= max_bpm."),
    rule_check(GYM_SUMMARY, "minutes_not_negative", "minutes_in_gym < 0 OR minutes_exercising < 0",
               "Minutes in the gym and exercising are not negative."),
]
