"""Business gold transforms: gym occupancy by hour, member engagement (at-risk members) and
weekly workout performance with heart-rate zones.

Pure PySpark, no Dagster. Every time is UTC (the session's time zone) and every duration is
summed in whole microseconds before it becomes minutes, so results do not depend on the order
Spark adds in (and so not on how input was split into batches).
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from fitness_assets.transforms.gold import EXACT_BPM
from fitness_assets.transforms.reference import sunday_week_of_year

HOUR_US = 3_600_000_000
MINUTE_US = 60_000_000
# A visit longer than this is not spread over hours (a badge that never logged out, or a
# wrong logout): it counts in its login hour only, as an unclosed visit.
MAX_VISIT_HOURS = 24

DEFAULT_AT_RISK_DAYS = 14
# "Trained regularly": at least this many completed workouts in the REGULAR_WINDOW_DAYS
# days up to and including the day of the member's last activity.
REGULAR_WORKOUTS = 4
REGULAR_WINDOW_DAYS = 30

# Heart-rate zones: zone k holds readings with 10 * hr >= ZONE_TENTHS[k-1] * max_hr (and below
# the next zone); max_hr = 220 - age. Integers on one side keep the comparison exact.
ZONE_TENTHS = (5, 6, 7, 8, 9)
MAX_HR_BASE = 220
MAX_AGE_FOR_ZONES = 120  # ages outside 0..120 (a dob after the workout, a typo) give no zones

WORKOUT_KEY = ["user_id", "workout_id", "session_id"]
WEEK_KEY = ["user_id", "year", "week"]


def _minutes(micros: Column) -> Column:
    return F.round(micros / F.lit(MINUTE_US), 2)


# ----------------------------------------------------------------------------- occupancy


def closed_visit(login: Column, logout: Column) -> Column:
    """A visit whose hours can be counted: a logout at or after the login, within 24 hours."""
    length = F.unix_micros(logout) - F.unix_micros(login)
    return F.coalesce((length >= 0) & (length <= F.lit(MAX_VISIT_HOURS * HOUR_US)), F.lit(False))


def _visit_span(visits: DataFrame) -> DataFrame:
    """Visits with ``_closed``, the microsecond start of their first and last hour."""
    closed = closed_visit(F.col("login"), F.col("logout"))
    first = F.unix_micros(F.date_trunc("hour", F.col("login")))
    # A logout exactly on the hour does not put the member in the hour that starts then.
    last_instant = F.timestamp_micros(F.unix_micros(F.col("logout")) - F.lit(1))
    last = F.when(closed & (F.col("logout") > F.col("login")),
                  F.unix_micros(F.date_trunc("hour", last_instant))).otherwise(first)
    return visits.select("mac_address", "gym", "login", "logout", closed.alias("_closed"),
                         first.alias("_first_us"), last.alias("_last_us"))


def visit_days(visits: DataFrame) -> DataFrame:
    """Each visit (mac_address, gym, login) with every UTC ``date`` it counts on (one or two)."""
    span = _visit_span(visits)
    days = F.sequence(F.to_date(F.timestamp_micros(F.col("_first_us"))),
                      F.to_date(F.timestamp_micros(F.col("_last_us"))))
    return span.select("mac_address", "gym", "login", "logout", F.explode(days).alias("date"))


def gym_occupancy(visits: DataFrame) -> DataFrame:
    """Per gym, UTC date and hour with someone inside: distinct badges inside (``visitors``),
    visits starting in the hour, unclosed visits, member-minutes inside, and the peak hour."""
    span = _visit_span(visits)
    hours = span.select("*", F.explode(F.sequence(F.col("_first_us"), F.col("_last_us"), F.lit(HOUR_US)))
                        .alias("_hour_us"))
    overlap = (F.least(F.unix_micros(F.col("logout")), F.col("_hour_us") + F.lit(HOUR_US))
               - F.greatest(F.unix_micros(F.col("login")), F.col("_hour_us")))
    hour_ts = F.timestamp_micros(F.col("_hour_us"))
    per_hour = hours.groupBy("gym", F.to_date(hour_ts).alias("date"), F.hour(hour_ts).alias("hour")).agg(
        F.countDistinct("mac_address").alias("visitors"),
        F.count_if(F.col("_hour_us") == F.col("_first_us")).alias("arrivals"),
        F.count_if(~F.col("_closed")).alias("unclosed_visits"),
        F.coalesce(F.sum(F.when(F.col("_closed"), overlap)), F.lit(0)).alias("_micros"),
    )
    rank = F.row_number().over(Window.partitionBy("gym", "date").orderBy(F.desc("visitors"), F.asc("hour")))
    return per_hour.select(
        "gym", "date", "hour", "visitors", "arrivals", "unclosed_visits",
        _minutes(F.col("_micros")).alias("member_minutes"), (rank == 1).alias("is_peak_hour"),
    )


# ----------------------------------------------------------------------------- engagement


def members(users: DataFrame, completed: DataFrame) -> DataFrame:
    """Every member: registered (with their badge) or known from a completed workout."""
    return (users.select("user_id", "mac_address")
            .unionByName(completed.select("user_id", F.lit(None).cast("string").alias("mac_address")))
            .groupBy("user_id").agg(F.max("mac_address").alias("mac_address")))


def member_engagement(people: DataFrame, visits: DataFrame, completed: DataFrame, reference: dt.date,
                      at_risk_days: int = DEFAULT_AT_RISK_DAYS) -> DataFrame:
    """As of ``reference`` (events on later days are ignored), per member of ``people``
    (user_id, mac_address): last visit and workout, visits and workouts in the 7 and 30 days
    ending on the reference date, days since the last activity and the at-risk flag."""
    if at_risk_days < 1:
        raise ValueError(f"at_risk_days must be at least 1, not {at_risk_days}")
    ref = F.lit(reference)
    badges = people.where(F.col("mac_address").isNotNull()).select("user_id", "mac_address")
    events = (visits.join(badges, on="mac_address", how="inner")
              .select("user_id", F.col("login").alias("time"), F.lit(True).alias("_visit"))
              .unionByName(completed.select("user_id", F.col("start_time").alias("time"),
                                            F.lit(False).alias("_visit"))))
    day = F.to_date(F.col("time"))
    events = events.where(day <= ref).select("*", F.datediff(ref, day).alias("_ago"),
                                             F.max(day).over(Window.partitionBy("user_id")).alias("_last_day"),
                                             day.alias("_day"))
    workout = ~F.col("_visit")
    stats = events.groupBy("user_id").agg(
        F.max(F.when(F.col("_visit"), F.col("time"))).alias("last_visit"),
        F.max(F.when(workout, F.col("time"))).alias("last_workout"),
        F.count_if(F.col("_visit") & (F.col("_ago") < 7)).alias("visits_7d"),
        F.count_if(F.col("_visit") & (F.col("_ago") < 30)).alias("visits_30d"),
        F.count_if(workout & (F.col("_ago") < 7)).alias("workouts_7d"),
        F.count_if(workout & (F.col("_ago") < 30)).alias("workouts_30d"),
        F.max("_last_day").alias("_last_day"),
        F.count_if(workout & (F.datediff(F.col("_last_day"), F.col("_day")) < REGULAR_WINDOW_DAYS))
        .alias("workouts_before_lapse"),
    )
    joined = people.select("user_id").distinct().join(stats, on="user_id", how="left")
    counts = {c: F.coalesce(F.col(c), F.lit(0)).alias(c)
              for c in ("visits_7d", "visits_30d", "workouts_7d", "workouts_30d", "workouts_before_lapse")}
    inactive = F.datediff(ref, F.col("_last_day"))
    at_risk = F.coalesce((inactive >= F.lit(at_risk_days))
                         & (F.col("workouts_before_lapse") >= F.lit(REGULAR_WORKOUTS)), F.lit(False))
    return joined.select(
        "user_id", ref.alias("reference_date"), "last_visit", "last_workout", counts["visits_7d"],
        counts["visits_30d"], counts["workouts_7d"], counts["workouts_30d"], inactive.alias("days_inactive"),
        counts["workouts_before_lapse"], F.lit(at_risk_days).cast("int").alias("at_risk_after_days"),
        at_risk.alias("at_risk"),
    )


# ----------------------------------------------------------------------------- performance


def week_of(date: Column) -> dict[str, Column]:
    """The calendar's week columns of a date (as `reference.date_lookup`: Sunday-first `%U`
    weeks within the year) and the first day of that week inside the year."""
    year = F.year(date)
    week = sunday_week_of_year(date)
    start = F.greatest(F.date_sub(date, F.dayofweek(date) - F.lit(1)), F.trunc(date, "year"))
    return {"year": year, "week": week, "week_part": F.concat_ws("-", year.cast("string"), week.cast("string")),
            "week_start": start}


def workout_weeks(completed: DataFrame) -> DataFrame:
    """Completed workouts with the week columns of their UTC start date."""
    week = week_of(F.to_date(F.col("start_time")))
    return completed.select("*", *[c.alias(n) for n, c in week.items()])


def birth_date_changed(profile_changes: DataFrame) -> DataFrame:
    """``user_id`` of the members whose date of birth a `user_profile` change feed changes:
    a profile inserted or deleted, or an update whose pre- and post-image differ in ``dob``
    (an update of other fields only leaves them out)."""
    kind = F.col("_change_type")
    dob = F.coalesce(F.col("dob").cast("string"), F.lit("<none>"))
    return (profile_changes.groupBy("user_id")
            .agg(F.max(kind.isin("insert", "delete").cast("int")).alias("_added_or_removed"),
                 F.count_distinct(dob).alias("_dobs"))
            .where((F.col("_added_or_removed") == 1) | (F.col("_dobs") > 1))
            .select("user_id"))


def age_at(dob: Column, date: Column) -> Column:
    """Whole years from ``dob`` to ``date``."""
    before_birthday = (F.month(date) < F.month(dob)) | ((F.month(date) == F.month(dob))
                                                        & (F.dayofmonth(date) < F.dayofmonth(dob)))
    return F.year(date) - F.year(dob) - before_birthday.cast("int")


def heart_rate_zone(heartrate: Column, max_hr: Column) -> Column:
    """1..5 for a reading in a zone, 0 below zone 1, NULL when ``max_hr`` is unknown."""
    expr = F.when(max_hr.isNull(), F.lit(None).cast("int"))
    for zone in range(len(ZONE_TENTHS), 0, -1):
        expr = expr.when(heartrate * F.lit(10) >= F.lit(ZONE_TENTHS[zone - 1]) * max_hr, F.lit(zone))
    return expr.otherwise(F.lit(0))


ZONE_MICROS = [f"zone{k}_micros" for k in range(1, len(ZONE_TENTHS) + 1)]


def workout_zones(readings: DataFrame, profiles: DataFrame) -> DataFrame:
    """Per workout of ``readings`` (`workout_bpm` rows, every reading of each workout): its
    readings, their exact sum and peak, and the microseconds in each heart-rate zone.
    ``profiles``: user_id, dob (current profiles; a member without one gets NULL zones).

    One shuffle of the readings, shared by the window that spaces them and the sums."""
    age = age_at(F.col("dob"), F.to_date(F.col("start_time")))
    max_hr = F.when((age >= 0) & (age <= MAX_AGE_FOR_ZONES), F.lit(MAX_HR_BASE) - age)
    by_workout = Window.partitionBy(*WORKOUT_KEY).orderBy("time")
    time_us = F.unix_micros(F.col("time"))
    spacing = time_us - F.coalesce(F.lag(time_us).over(by_workout), F.unix_micros(F.col("start_time")))
    timed = readings.join(profiles.select("user_id", "dob"), on="user_id", how="left").select(
        *WORKOUT_KEY, "start_time", "end_time", "heartrate", spacing.alias("_spacing"),
        heart_rate_zone(F.col("heartrate"), max_hr).alias("_zone"))
    return timed.groupBy(*WORKOUT_KEY, "start_time", "end_time").agg(
        F.count(F.lit(1)).alias("readings"), F.sum(F.col("heartrate").cast(EXACT_BPM)).alias("heartrate_sum"),
        F.max("heartrate").alias("max_bpm"),
        *[F.sum(F.when(F.col("_zone").isNotNull(), F.when(F.col("_zone") == k, F.col("_spacing"))
                       .otherwise(F.lit(0)))).alias(z) for k, z in enumerate(ZONE_MICROS, 1)])


def workout_performance(completed: DataFrame, zones: DataFrame) -> DataFrame:
    """Per member and week: workouts, minutes exercising, readings, average and peak heart
    rate, and minutes per heart-rate zone. ``completed``: completed workouts; ``zones``:
    `workout_zones` rows of those workouts (the per-workout totals, see ``workout_zones``)."""
    weeks = workout_weeks(completed)
    heart = zones.select(*WORKOUT_KEY, F.col("readings").alias("_readings"),
                         F.col("heartrate_sum").alias("_bpm_sum"), F.col("max_bpm").alias("_max_bpm"), *ZONE_MICROS)
    workouts = weeks.join(heart, on=WORKOUT_KEY, how="left")
    out = workouts.groupBy(*WEEK_KEY, "week_part", "week_start").agg(
        F.count(F.lit(1)).alias("workouts"),
        _minutes(F.sum(F.unix_micros(F.col("end_time")) - F.unix_micros(F.col("start_time"))))
        .alias("minutes_exercising"),
        F.count("_readings").alias("workouts_with_readings"),
        F.coalesce(F.sum("_readings"), F.lit(0)).alias("readings"),
        # An exact decimal mean (sum of exact readings / count), as workout_bpm_summary's avg_bpm.
        (F.sum("_bpm_sum") / F.sum("_readings")).cast("double").alias("avg_bpm"),
        F.max("_max_bpm").alias("max_bpm"),
        *[_minutes(F.sum(z)).alias(f"zone{k}_minutes") for k, z in enumerate(ZONE_MICROS, 1)],
    )
    return out.select(*WEEK_KEY, "week_part", "week_start", "workouts", "minutes_exercising",
                      "workouts_with_readings", "readings", "avg_bpm", "max_bpm",
                      *[f"zone{k}_minutes" for k in range(1, len(ZONE_TENTHS) + 1)])
