"""Checks of the gold tables."""

import pyarrow.compute as pc
from dagster import AssetCheckResult
from pyspark.sql import functions as F

from fitness_assets.assets.checks_lib import custom_check, key_checks, rule_check
from fitness_assets.lakehouse.store import TableStore
from fitness_assets.resources import LakehouseResource
from fitness_assets.tables import GOLD_TABLES, GYM_SUMMARY, WORKOUT_BPM, WORKOUT_BPM_SUMMARY
from fitness_assets.transforms.gold import at_exact_scale


def _recordings_match(store: TableStore, lakehouse: LakehouseResource) -> AssetCheckResult:
    """Both tables' row counts from the Delta log; the summarised readings and the distinct
    workouts of workout_bpm read by the store itself where it can (5M readings: ~0.1 s against
    ~0.5 s), else in one Spark job."""
    keys = ["user_id", "workout_id", "session_id"]
    workout_keys = store.read_columns_arrow(WORKOUT_BPM, keys)
    if workout_keys is not None:
        workouts = workout_keys.group_by(keys).aggregate([]).num_rows
        recordings = store.read_columns_arrow(WORKOUT_BPM_SUMMARY, ["num_recordings"])["num_recordings"]
        summarised = pc.sum(recordings).as_py() or 0
    else:
        summarised, workouts = (
            store.read(WORKOUT_BPM_SUMMARY).agg(F.coalesce(F.sum("num_recordings"), F.lit(0)).alias("summarised"))
            .crossJoin(store.read(WORKOUT_BPM).select(*keys).distinct().agg(F.count(F.lit(1)).alias("workouts")))
            .first())
    bpm_rows, summary_rows = store.row_count(WORKOUT_BPM), store.row_count(WORKOUT_BPM_SUMMARY)
    return AssetCheckResult(
        passed=summarised == bpm_rows and summary_rows == workouts,
        metadata={"sum_num_recordings": summarised, "workout_bpm_rows": bpm_rows,
                  "summary_rows": summary_rows, "workouts_with_readings": workouts},
    )


gold_checks = [
    *[check for spec in GOLD_TABLES for check in key_checks(spec)],
    custom_check(WORKOUT_BPM_SUMMARY, "recordings_match_workout_bpm",
                 "The sum of num_recordings equals the rows of silver.workout_bpm for summarised workouts, "
                 "and every workout of workout_bpm is summarised.", _recordings_match, reads=(WORKOUT_BPM,)),
    rule_check(WORKOUT_BPM_SUMMARY, "bpm_ordered",
               f"NOT ({at_exact_scale('min_bpm')} <= avg_bpm AND avg_bpm <= {at_exact_scale('max_bpm')})",
               "min_bpm <= avg_bpm <= max_bpm (the bounds rounded to the 6 decimals the mean is computed at)."),
    rule_check(GYM_SUMMARY, "minutes_not_negative", "minutes_in_gym < 0 OR minutes_exercising < 0",
               "Minutes in the gym and exercising are not negative."),
]
