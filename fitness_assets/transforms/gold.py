"""Gold transforms: the business summaries."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fitness_assets.transforms.silver import first_by

WORKOUT_KEY = ["user_id", "workout_id", "session_id"]
EXACT_BPM = "decimal(18,6)"


def at_exact_scale(column: str) -> str:
    """SQL: a heart rate as the exact means are computed from it (rounded to ``EXACT_BPM``),
    as a double. A mean of such readings lies between its readings' min and max at this scale,
    not always at theirs: the mean of one reading of 72.1234567 is 72.123457."""
    return f"CAST(CAST({column} AS {EXACT_BPM}) AS DOUBLE)"


def workout_bpm_summary(readings: DataFrame, bins: DataFrame) -> DataFrame:
    """Per completed workout with readings: min/avg/max heart rate, the number of readings and
    the member's bins (NULL bins for a member with no current profile, rather than no row)."""
    stats = readings.groupBy(*WORKOUT_KEY).agg(
        F.min("heartrate").alias("min_bpm"),
        # A float sum depends on the order Spark adds in, which depends on how input was
        # split; an exact decimal sum makes the average the same for every split.
        F.avg(F.col("heartrate").cast(EXACT_BPM)).cast("double").alias("avg_bpm"),
        F.max("heartrate").alias("max_bpm"), F.count(F.lit(1)).alias("num_recordings"),
    )
    return _with_bins(stats, bins)


BIN_COLUMNS = ["age", "gender", "city", "state"]


def _with_bins(stats: DataFrame, bins: DataFrame) -> DataFrame:
    joined = stats.join(bins.select("user_id", *BIN_COLUMNS), on="user_id", how="left")
    return joined.select("workout_id", "session_id", "user_id", *BIN_COLUMNS,
                         "min_bpm", "avg_bpm", "max_bpm", "num_recordings")


def rebinned_summaries(summaries: DataFrame, bins: DataFrame) -> DataFrame:
    """Stored `workout_bpm_summary` rows with their member's current bins instead of the ones
    they were written with (NULL bins for a member with no current profile)."""
    return _with_bins(summaries.drop(*BIN_COLUMNS), bins)


GYM_SUMMARY_KEY = ["mac_address", "gym", "date", "workout_id", "session_id"]


def gym_summary(visits: DataFrame, members: DataFrame, completed: DataFrame) -> DataFrame:
    """Gym visits joined to the member's completed workouts that started during the visit.

    One row per key (badge, gym, date, workout, session), as the table's key says: a workout
    whose start lies in two visits of one badge on one day (overlapping visits) counts in the
    one with the earliest login, and when a badge shared by two members shows a workout of
    each with the same ids, the lower member id's is kept (the key cannot tell them apart).
    The visits of a badge, gym and day are always computed together, so the choice does not
    depend on how they arrived."""
    v = visits.join(members.select("mac_address", "user_id"),
                    on="mac_address", how="inner")
    joined = v.join(completed, on=[v["user_id"] == completed["user_id"],
                                   completed["start_time"] >= v["login"], completed["start_time"] <= v["logout"]],
                    how="inner")

    def minutes(start: str, end: str):
        return F.round((F.unix_micros(end) - F.unix_micros(start)) / F.lit(60_000_000), 2)

    rows = joined.select(
        F.to_date("login").alias("date"), "gym", "mac_address", "workout_id", "session_id",
        minutes("login", "logout").alias("minutes_in_gym"),
        minutes("start_time", "end_time").alias("minutes_exercising"),
        F.col("login").alias("_login"), v["user_id"].alias("_member"),
    )
    return first_by(rows, GYM_SUMMARY_KEY, [F.col("_login"), F.col("_member")]).drop("_login", "_member")
