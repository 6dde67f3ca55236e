"""Checks of the silver tables: keys, accepted values, links, ranges, cross-layer consistency."""

from dagster import AssetCheckSeverity
from pyspark.sql import functions as F

from fitness_assets.assets.checks_lib import key_checks, link_check, rule_check, table_check
from fitness_assets.tables import (
    COMPLETED_WORKOUTS,
    GYM_LOGS,
    HEART_RATE,
    SILVER_TABLES,
    USER_BINS,
    USER_PROFILE,
    USER_PROFILE_HISTORY,
    USERS,
    WORKOUT_BPM,
    WORKOUTS,
)
from fitness_assets.transforms.silver import AGE_BINS


def _completed_without_events(store):
    """Completed workouts lacking a start or a stop (at the stated times) in `workouts`."""
    events = store.read(WORKOUTS)
    starts = events.where(F.col("action") == "start").select(
        "user_id", "workout_id", "session_id", F.col("time").alias("start_time"))
    stops = events.where(F.col("action") == "stop").select(
        "user_id", "workout_id", "session_id", F.col("time").alias("end_time"))
    keys = ["user_id", "workout_id", "session_id"]
    completed = store.read(COMPLETED_WORKOUTS)
    return (completed.join(starts, on=[*keys, "start_time"], how="left_anti")
            .unionByName(completed.join(stops, on=[*keys, "end_time"], how="left_anti")))


def _not_one_current_version(store):
    history = store.read(USER_PROFILE_HISTORY)
    return history.groupBy("user_id").agg(F.sum(F.col("is_current").cast("int")).alias("current_versions")) \
        .where(F.col("current_versions") != 1)


age_labels = ", ".join(f"'{label}'" for _, label in AGE_BINS) + ", '95+', 'invalid age'"

silver_checks = [
    *[check for spec in SILVER_TABLES for check in key_checks(spec)],
    rule_check(COMPLETED_WORKOUTS, "ends_after_start", "NOT (end_time > start_time)",
               "end_time is after start_time."),
    rule_check(COMPLETED_WORKOUTS, "within_three_hours", "end_time > start_time + INTERVAL 3 HOURS",
               "A completed workout lasts at most three hours."),
    table_check(COMPLETED_WORKOUTS, "has_start_and_stop_in_workouts",
                "Every completed workout has its start and its stop in silver.workouts.", _completed_without_events,
                reads=(WORKOUTS,)),
    rule_check(HEART_RATE, "valid_matches_heartrate",
               "valid <> coalesce(heartrate > 0 AND NOT isnan(heartrate) AND abs(heartrate) < double('inf'), false)",
               "valid is true exactly when the heart rate is present, finite and positive."),
    rule_check(HEART_RATE, "plausible_heartrate", "valid AND (heartrate < 30 OR heartrate > 220)",
               "Valid readings lie within 30-220 bpm.", severity=AssetCheckSeverity.WARN),
    rule_check(WORKOUT_BPM, "inside_workout", "NOT (time > start_time AND time <= end_time)",
               "Every reading lies inside its workout."),
    link_check(GYM_LOGS, ["mac_address"], USERS, ["mac_address"]),
    link_check(HEART_RATE, ["device_id"], USERS, ["device_id"]),
    rule_check(GYM_LOGS, "logout_after_login", "logout IS NOT NULL AND logout < login",
               "A logout is not before its login.", severity=AssetCheckSeverity.WARN),
    table_check(USER_PROFILE_HISTORY, "one_current_version", "Each member has exactly one current version.",
                _not_one_current_version),
    link_check(USER_PROFILE, ["user_id"], USER_PROFILE_HISTORY, ["user_id"], severity=AssetCheckSeverity.ERROR),
    rule_check(USER_BINS, "age_accepted", f"age NOT IN ({age_labels})", "age is one of the contract's bins."),
]
