"""Business gold assets (gym occupancy, member engagement, workout zones and performance) and their
checks. Thin wrappers of pipelines.business; the key checks (not NULL, unique) of these tables
come with every other gold table's in assets/gold/checks.py (they are in GOLD_TABLES), and
`hour` in 0-23 is a Delta CHECK constraint of the table (tables.GYM_OCCUPANCY)."""

import os

from dagster import AssetCheckSeverity
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from fitness_assets.assets.checks_lib import rule_check, table_check
from fitness_assets.assets.common import refresh_asset
from fitness_assets.lakehouse.store import TableStore
from fitness_assets.pipelines import business as refresh
from fitness_assets.settings import env_int
from fitness_assets.tables import (
    COMPLETED_WORKOUTS,
    GYM_LOGS,
    GYM_OCCUPANCY,
    GYM_SUMMARY,
    MEMBER_ENGAGEMENT,
    USERS,
    WORKOUT_BPM_SUMMARY,
    WORKOUT_PERFORMANCE,
    WORKOUT_ZONES,
)
from fitness_assets.transforms import business as B
from fitness_assets.transforms.gold import at_exact_scale

AT_RISK_DAYS_ENV = "FITNESS_AT_RISK_DAYS"
ZONES = [f"zone{k}_minutes" for k in range(1, len(B.ZONE_TENTHS) + 1)]


def at_risk_days(env: dict[str, str] | None = None) -> int:
    """``FITNESS_AT_RISK_DAYS`` (default 14), read when the asset runs (and checked when the
    code location loads); a ``ConfigError`` when it is not a whole number of at least 1."""
    return env_int(dict(os.environ if env is None else env), AT_RISK_DAYS_ENV, B.DEFAULT_AT_RISK_DAYS)


gym_occupancy = refresh_asset(refresh.gym_occupancy)
# The at-risk threshold is read from the environment when the asset runs.
member_engagement = refresh_asset(refresh.member_engagement, extra_args=lambda: (at_risk_days(),))
workout_zones = refresh_asset(refresh.workout_zones)
workout_performance = refresh_asset(refresh.workout_performance)

business_assets = [gym_occupancy, member_engagement, workout_zones, workout_performance]


# ------------------------------------------------------------------------------- checks


def _peak_hours_wrong(store: TableStore) -> DataFrame:
    """Gym-days without exactly one peak hour, or whose peak is not the earliest busiest hour."""
    rows = store.read(GYM_OCCUPANCY)
    most = rows.withColumn("most", F.max("visitors").over(Window.partitionBy("gym", "date")))
    days = most.groupBy("gym", "date", "most").agg(
        F.count_if("is_peak_hour").alias("peak_hours"),
        F.max(F.when(F.col("is_peak_hour"), F.col("hour"))).alias("peak_hour"),
        F.min(F.when(F.col("visitors") == F.col("most"), F.col("hour"))).alias("earliest_busiest_hour"))
    return days.where((F.col("peak_hours") != 1) | (F.col("peak_hour") != F.col("earliest_busiest_hour")))


def _occupancy_against_gym_logs(store: TableStore) -> DataFrame:
    """Per gym: arrivals must equal the visits of silver.gym_logs, and member-minutes the
    length of its closed visits (within the rounding of each hour row to 0.01 min)."""
    logs = store.read(GYM_LOGS)
    length = F.unix_micros(F.col("logout")) - F.unix_micros(F.col("login"))
    expected = logs.groupBy("gym").agg(
        F.count(F.lit(1)).alias("visits"),
        (F.coalesce(F.sum(F.when(B.closed_visit(F.col("login"), F.col("logout")), length)), F.lit(0))
         / F.lit(B.MINUTE_US)).alias("visit_minutes"))
    got = store.read(GYM_OCCUPANCY).groupBy("gym").agg(
        F.sum("arrivals").alias("arrivals"), F.sum("member_minutes").alias("member_minutes"),
        F.count(F.lit(1)).alias("hour_rows"))
    both = expected.join(got, on="gym", how="full_outer").select(
        "gym", *[F.coalesce(F.col(c), F.lit(0)).alias(c)
                 for c in ("visits", "visit_minutes", "arrivals", "member_minutes", "hour_rows")])
    return both.where((F.col("visits") != F.col("arrivals"))
                      | (F.abs(F.col("visit_minutes") - F.col("member_minutes"))
                         > F.lit(0.005) * F.col("hour_rows") + F.lit(1e-6)))


def _gym_summary_days_missing(store: TableStore) -> DataFrame:
    """(gym, date) of gold.gym_summary's visits without an occupancy row: each summarised
    visit is inside its gym in its login hour, on that date."""
    return (store.read(GYM_SUMMARY).select("gym", "date").distinct()
            .join(store.read(GYM_OCCUPANCY).select("gym", "date"), on=["gym", "date"], how="left_anti"))


def _rules_mixed(store: TableStore) -> DataFrame:
    """The (reference date, threshold) pairs of the table when there is more than one."""
    rules = store.read(MEMBER_ENGAGEMENT).groupBy("reference_date", "at_risk_after_days").count()
    return rules.withColumn("rules", F.count(F.lit(1)).over(Window.partitionBy(F.lit(1)))).where("rules > 1")


def _engagement_against_gym_summary(store: TableStore) -> DataFrame:
    """Members whose gold.gym_summary visits on or before the reference date contradict
    their engagement: a summarised visit after `last_visit`, or more distinct (gym, date)
    visits in the last 30 days than `visits_30d`."""
    engagement = store.read(MEMBER_ENGAGEMENT)
    badges = store.read(USERS).select("user_id", "mac_address")
    summary = store.read(GYM_SUMMARY).select("mac_address", "gym", "date").distinct().join(
        badges, on="mac_address", how="inner")
    joined = summary.join(engagement, on="user_id", how="inner").where(F.col("date") <= F.col("reference_date"))
    per_member = joined.groupBy("user_id", "last_visit", "visits_30d").agg(
        F.max("date").alias("latest_summarised_visit"),
        F.count_if(F.datediff(F.col("reference_date"), F.col("date")) < 30).alias("summarised_days_30d"))
    return per_member.where(F.col("last_visit").isNull()
                            | (F.to_date("last_visit") < F.col("latest_summarised_visit"))
                            | (F.col("visits_30d") < F.col("summarised_days_30d")))


def _summary_members_missing(store: TableStore) -> DataFrame:
    """Members of gold.workout_bpm_summary without an engagement row."""
    return (store.read(WORKOUT_BPM_SUMMARY).select("user_id").distinct()
            .join(store.read(MEMBER_ENGAGEMENT).select("user_id"), on="user_id", how="left_anti"))


def _performance_against_summary(store: TableStore) -> DataFrame:
    """Per member: readings, workouts with readings, peak and mean heart rate of all weeks
    must equal gold.workout_bpm_summary's (mean within its 6-decimal rounding)."""
    weeks = store.read(WORKOUT_PERFORMANCE).groupBy("user_id").agg(
        F.sum("readings").alias("readings"), F.sum("workouts_with_readings").alias("workouts_with_readings"),
        F.max("max_bpm").alias("max_bpm"), F.sum(F.col("avg_bpm") * F.col("readings")).alias("bpm_total"))
    summary = store.read(WORKOUT_BPM_SUMMARY).groupBy("user_id").agg(
        F.sum("num_recordings").alias("summary_readings"), F.count(F.lit(1)).alias("summary_workouts"),
        F.max("max_bpm").alias("summary_max_bpm"),
        F.sum(F.col("avg_bpm") * F.col("num_recordings")).alias("summary_bpm_total"))
    both = weeks.join(summary, on="user_id", how="full_outer")
    n = F.coalesce(F.col("readings"), F.lit(0))
    return both.where(
        (n != F.coalesce(F.col("summary_readings"), F.lit(0)))
        | (F.coalesce(F.col("workouts_with_readings"), F.lit(0)) != F.coalesce(F.col("summary_workouts"), F.lit(0)))
        | ~F.col("max_bpm").eqNullSafe(F.col("summary_max_bpm"))
        | (F.abs(F.coalesce(F.col("bpm_total"), F.lit(0.0)) - F.coalesce(F.col("summary_bpm_total"), F.lit(0.0)))
           > F.lit(1e-5) * n + F.lit(1e-6)))


def _performance_against_completed(store: TableStore) -> DataFrame:
    """Per member: workouts and minutes exercising of all weeks must equal silver.completed_workouts'."""
    weeks = store.read(WORKOUT_PERFORMANCE).groupBy("user_id").agg(
        F.sum("workouts").alias("workouts"), F.sum("minutes_exercising").alias("minutes"),
        F.count(F.lit(1)).alias("weeks"))
    length = F.unix_micros(F.col("end_time")) - F.unix_micros(F.col("start_time"))
    completed = store.read(COMPLETED_WORKOUTS).groupBy("user_id").agg(
        F.count(F.lit(1)).alias("completed"), (F.sum(length) / F.lit(B.MINUTE_US)).alias("completed_minutes"))
    both = weeks.join(completed, on="user_id", how="full_outer")
    return both.where(
        (F.coalesce(F.col("workouts"), F.lit(0)) != F.coalesce(F.col("completed"), F.lit(0)))
        | (F.abs(F.coalesce(F.col("minutes"), F.lit(0.0)) - F.coalesce(F.col("completed_minutes"), F.lit(0.0)))
           > F.lit(0.005) * F.coalesce(F.col("weeks"), F.lit(0)) + F.lit(1e-6)))


zone_sum = " + ".join(f"coalesce({z}, 0)" for z in ZONES)
zone_micros_sum = " + ".join(f"coalesce({z}, 0)" for z in B.ZONE_MICROS)


def _zones_against_summary(store: TableStore) -> DataFrame:
    """Workouts whose readings, peak or mean heart rate differ from gold.workout_bpm_summary's
    (mean within its 6-decimal rounding), or that only one of the two tables has."""
    keys = list(B.WORKOUT_KEY)
    zones = store.read(WORKOUT_ZONES).select(*keys, "readings", "max_bpm", "heartrate_sum")
    summary = store.read(WORKOUT_BPM_SUMMARY).select(*keys, "num_recordings", F.col("max_bpm").alias("summary_max"),
                                                     "avg_bpm")
    both = zones.join(summary, on=keys, how="full_outer")
    mean = F.col("heartrate_sum").cast("double") / F.col("readings")
    return both.where(~F.col("readings").eqNullSafe(F.col("num_recordings"))
                      | ~F.col("max_bpm").eqNullSafe(F.col("summary_max"))
                      | (F.abs(mean - F.col("avg_bpm")) > F.lit(1e-5)))


business_checks = [
    rule_check(GYM_OCCUPANCY, "counts_consistent",
               "visitors < 1 OR arrivals < 0 OR unclosed_visits < 0 OR unclosed_visits > arrivals "
               "OR member_minutes < 0",
               "At least one visitor; unclosed visits are among the hour's arrivals; minutes not negative."),
    rule_check(GYM_OCCUPANCY, "minutes_within_hour", "member_minutes > 60 * visitors + 0.01",
               "Member-minutes of an hour are at most 60 per visitor (more: overlapping visits of one badge).",
               severity=AssetCheckSeverity.WARN),
    table_check(GYM_OCCUPANCY, "one_peak_hour_per_day",
                "Each gym and day has exactly one peak hour: the earliest hour with the most visitors.",
                _peak_hours_wrong),
    table_check(GYM_OCCUPANCY, "matches_gym_logs",
                "Per gym, arrivals equal the visits of silver.gym_logs and member-minutes the length of its "
                "closed visits.", _occupancy_against_gym_logs, reads=(GYM_LOGS,)),
    table_check(GYM_OCCUPANCY, "covers_gym_summary",
                "Every gym and day of gold.gym_summary has occupancy.", _gym_summary_days_missing,
                reads=(GYM_SUMMARY,)),
    rule_check(MEMBER_ENGAGEMENT, "windows_nested",
               "visits_7d < 0 OR workouts_7d < 0 OR visits_7d > visits_30d OR workouts_7d > workouts_30d "
               "OR (days_inactive = 0 AND workouts_30d <> workouts_before_lapse)",
               "Counts are not negative, the 7-day windows lie inside the 30-day ones, and for a member active "
               "on the reference date the 30 days before the lapse are the last 30 days."),
    rule_check(MEMBER_ENGAGEMENT, "as_of_reference_date",
               "to_date(last_visit) > reference_date OR to_date(last_workout) > reference_date "
               "OR days_inactive < 0 OR (days_inactive IS NULL) <> (last_visit IS NULL AND last_workout IS NULL)",
               "No activity after the reference date; days_inactive is set exactly when there was activity."),
    rule_check(MEMBER_ENGAGEMENT, "at_risk_rule",
               f"at_risk <> coalesce(days_inactive >= at_risk_after_days AND workouts_before_lapse >= "
               f"{B.REGULAR_WORKOUTS}, false)",
               f"at_risk is true exactly for members inactive for at_risk_after_days days or more after at "
               f"least {B.REGULAR_WORKOUTS} workouts in the {B.REGULAR_WINDOW_DAYS} days up to their last activity."),
    table_check(MEMBER_ENGAGEMENT, "one_reference_date",
                "Every row was computed with the same reference date and at-risk threshold.", _rules_mixed),
    table_check(MEMBER_ENGAGEMENT, "consistent_with_gym_summary",
                "No visit of gold.gym_summary up to the reference date is later than last_visit, and visits_30d "
                "counts at least its distinct gym-days of the last 30 days.",
                _engagement_against_gym_summary, reads=(GYM_SUMMARY, USERS)),
    table_check(MEMBER_ENGAGEMENT, "covers_workout_bpm_summary",
                "Every member of gold.workout_bpm_summary has an engagement row.", _summary_members_missing,
                reads=(WORKOUT_BPM_SUMMARY,)),
    rule_check(WORKOUT_ZONES, "zones_within_workout",
               " OR ".join(f"{z} < 0" for z in B.ZONE_MICROS)
               + f" OR {zone_micros_sum} > unix_micros(end_time) - unix_micros(start_time) OR readings < 1",
               "At least one reading; zone times are not negative and add up to at most the workout's length."),
    table_check(WORKOUT_ZONES, "matches_summary_per_workout",
                "Every workout has the readings, peak and mean heart rate of gold.workout_bpm_summary, and the "
                "same workouts are in both.", _zones_against_summary, reads=(WORKOUT_BPM_SUMMARY,)),
    rule_check(WORKOUT_PERFORMANCE, "counts_consistent",
               "workouts < 1 OR workouts_with_readings > workouts OR workouts_with_readings > readings "
               "OR minutes_exercising < 0 OR (readings = 0) <> (avg_bpm IS NULL)",
               "At least one workout; workouts with readings among them; minutes not negative; an average "
               "exactly when there are readings."),
    rule_check(WORKOUT_PERFORMANCE, "bpm_ordered", f"NOT (avg_bpm >= 0 AND avg_bpm <= {at_exact_scale('max_bpm')})",
               "0 <= avg_bpm <= max_bpm (the bound rounded to the 6 decimals the mean is computed at; a reading "
               "under 0.0000005 counts as 0 there)."),
    rule_check(WORKOUT_PERFORMANCE, "zones_within_exercise",
               " OR ".join(f"{z} < 0" for z in ZONES) + f" OR {zone_sum} > minutes_exercising + 0.03",
               "Zone minutes are not negative and add up to at most the minutes exercising."),
    table_check(WORKOUT_PERFORMANCE, "matches_workout_bpm_summary",
                "Per member, readings, workouts with readings, peak and mean heart rate equal "
                "gold.workout_bpm_summary's.", _performance_against_summary, reads=(WORKOUT_BPM_SUMMARY,)),
    table_check(WORKOUT_PERFORMANCE, "matches_completed_workouts",
                "Per member, workouts and minutes exercising equal silver.completed_workouts'.",
                _performance_against_completed, reads=(COMPLETED_WORKOUTS,)),
]
