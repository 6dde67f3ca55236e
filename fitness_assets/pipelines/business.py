"""Incremental refresh of the business gold tables (recompute-by-scope, see pipelines.silver).

- ``gym_occupancy``: the (gym, date) pairs any changed visit counts on (before and after the
  change) are recomputed from every visit counting on them.
- ``member_engagement``: depends on each member's whole history and on the reference date,
  so the scope is the members touched by the increment (new or changed registrations, visits
  of their badge, completed workouts); when the reference date or the at-risk threshold
  differs from the ones the table was computed with (recorded in every commit's metadata and
  in the rows' ``reference_date`` and ``at_risk_after_days``), every member is recomputed.
- ``workout_zones``: the workouts with changed readings, and every workout of a member whose
  profile (date of birth) changed;
- ``workout_performance``: the (member, week) pairs of changed completed workouts and
  workout totals (``workout_zones``): a week is the sum of its workouts' totals, so new
  readings cost their own workouts, not a re-read of the week's readings.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from fitness_assets.lakehouse import incremental as inc
from fitness_assets.lakehouse.incremental import Increment
from fitness_assets.lakehouse.store import CommitResult, TableStore, Within
from fitness_assets.pipelines import refresh, same_columns
from fitness_assets.tables import (
    COMPLETED_WORKOUTS,
    GYM_LOGS,
    GYM_OCCUPANCY,
    MEMBER_ENGAGEMENT,
    USER_PROFILE,
    USERS,
    WORKOUT_BPM,
    WORKOUT_PERFORMANCE,
    WORKOUT_ZONES,
)
from fitness_assets.transforms import business as B

DAY_SCOPE = ["gym", "date"]


@refresh(GYM_OCCUPANCY, [GYM_LOGS],
         {"gym": [(GYM_LOGS, "gym")], "date": [(GYM_LOGS, "login"), (GYM_LOGS, "logout")],
          "hour": [(GYM_LOGS, "login"), (GYM_LOGS, "logout")], "visitors": [(GYM_LOGS, "mac_address")],
          "arrivals": [(GYM_LOGS, "login")], "unclosed_visits": [(GYM_LOGS, "login"), (GYM_LOGS, "logout")],
          "member_minutes": [(GYM_LOGS, "login"), (GYM_LOGS, "logout")],
          "is_peak_hour": [(GYM_LOGS, "mac_address"), (GYM_LOGS, "login"), (GYM_LOGS, "logout")]})
def gym_occupancy(store: TableStore, i: Increment) -> CommitResult | None:
    """Recompute every gym and day a new or changed visit counts on."""
    scope = B.visit_days(inc.changed(store, i, GYM_LOGS)).select(*DAY_SCOPE).distinct()
    # A visit lasts at most a day (longer ones count on their login day only), so the visits
    # counting on a day logged in on that day or the day before: a semi-join, no shuffle.
    logins = scope.select("gym", "date").unionByName(scope.select("gym", F.date_sub("date", 1).alias("date")))
    visits = (inc.snapshot(store, i, GYM_LOGS).withColumn("date", F.to_date("login"))
              .join(F.broadcast(logins.distinct()), on=DAY_SCOPE, how="left_semi").drop("date"))
    rows = B.gym_occupancy(visits).join(F.broadcast(scope), on=DAY_SCOPE, how="left_semi")
    return inc.sync_scope(store, GYM_OCCUPANCY, rows, scope, i)


RULES_KEY = "engagement_rules"


def engagement_rules(store: TableStore) -> dict | None:
    """The reference date and at-risk threshold of the table's latest commit (from the Delta
    log: no Spark job); None before the first."""
    meta = store.latest_commit_metadata(MEMBER_ENGAGEMENT, RULES_KEY)
    return None if meta is None else meta[RULES_KEY]


def _rules(reference: dt.date, at_risk_days: int) -> dict:
    if at_risk_days < 1:
        raise ValueError(f"FITNESS_AT_RISK_DAYS must be at least 1, not {at_risk_days}")
    return {"reference_date": reference.isoformat(), "at_risk_days": at_risk_days}


def _rules_changed(store: TableStore, reference: dt.date, at_risk_days: int = B.DEFAULT_AT_RISK_DAYS) -> bool:
    return engagement_rules(store) != _rules(reference, at_risk_days)


_ENGAGEMENT_LINEAGE = {
    "user_id": [(USERS, "user_id"), (COMPLETED_WORKOUTS, "user_id")],
    "last_visit": [(GYM_LOGS, "login"), (USERS, "mac_address")],
    "last_workout": [(COMPLETED_WORKOUTS, "start_time")],
    "visits_7d": [(GYM_LOGS, "login"), (USERS, "mac_address")],
    "visits_30d": [(GYM_LOGS, "login"), (USERS, "mac_address")],
    "workouts_7d": [(COMPLETED_WORKOUTS, "start_time")], "workouts_30d": [(COMPLETED_WORKOUTS, "start_time")],
    "days_inactive": [(GYM_LOGS, "login"), (COMPLETED_WORKOUTS, "start_time")],
    "workouts_before_lapse": [(GYM_LOGS, "login"), (COMPLETED_WORKOUTS, "start_time")],
    "at_risk": [(GYM_LOGS, "login"), (COMPLETED_WORKOUTS, "start_time")]}


@refresh(MEMBER_ENGAGEMENT, [USERS, GYM_LOGS, COMPLETED_WORKOUTS], _ENGAGEMENT_LINEAGE, needs_reference_date=True,
         stale=_rules_changed)
def member_engagement(store: TableStore, i: Increment, reference: dt.date,
                      at_risk_days: int = B.DEFAULT_AT_RISK_DAYS) -> CommitResult | None:
    """Recompute the members touched by the increment, or every member when the reference
    date or the at-risk threshold differs from the ones of the table's latest commit (every
    commit records them, atomically with its rows)."""
    everyone = _rules_changed(store, reference, at_risk_days)
    users = inc.snapshot(store, i, USERS)
    completed = inc.snapshot(store, i, COMPLETED_WORKOUTS)
    visits = inc.snapshot(store, i, GYM_LOGS)
    people = B.members(users, completed)
    if everyone:
        scope = inc.union_distinct([people.select("user_id"), store.read(MEMBER_ENGAGEMENT).select("user_id")])
    else:
        scopes = []
        if i.advanced(USERS):
            scopes.append(inc.changed(store, i, USERS).select("user_id"))
        if i.advanced(COMPLETED_WORKOUTS):
            scopes.append(inc.changed(store, i, COMPLETED_WORKOUTS).select("user_id"))
        if i.advanced(GYM_LOGS):
            badges = inc.changed(store, i, GYM_LOGS).select("mac_address").distinct()
            scopes.append(users.join(F.broadcast(badges), on="mac_address", how="left_semi").select("user_id"))
        scope = inc.union_distinct(scopes)
    in_scope = people.join(F.broadcast(scope), on="user_id", how="left_semi")
    badges = users.join(F.broadcast(scope), on="user_id", how="left_semi").select("mac_address")
    rows = B.member_engagement(
        in_scope,
        visits.join(F.broadcast(badges), on="mac_address", how="left_semi"),
        completed.join(F.broadcast(scope), on="user_id", how="left_semi"),
        reference, at_risk_days)
    return inc.sync_scope(store, MEMBER_ENGAGEMENT, rows, scope, i, metadata={
        RULES_KEY: _rules(reference, at_risk_days),
        "recomputed": "every member" if everyone else "members touched by the increment"})


@refresh(WORKOUT_ZONES, [WORKOUT_BPM, USER_PROFILE],
         same_columns(WORKOUT_BPM, *B.WORKOUT_KEY, "start_time", "end_time")
         | {"readings": [(WORKOUT_BPM, "time")], "heartrate_sum": [(WORKOUT_BPM, "heartrate")],
            "max_bpm": [(WORKOUT_BPM, "heartrate")]}
         | {z: [(WORKOUT_BPM, "heartrate"), (WORKOUT_BPM, "time"), (WORKOUT_BPM, "start_time"), (USER_PROFILE, "dob")]
            for z in B.ZONE_MICROS})
def workout_zones(store: TableStore, i: Increment) -> CommitResult | None:
    """Recompute every workout with new or changed readings, and every workout of a member
    whose date of birth changed (the zones depend on it; no other profile field counts
    here), or who got or lost a current profile."""
    profiles = inc.snapshot(store, i, USER_PROFILE)
    if i.from_start(WORKOUT_BPM) and store.is_empty(WORKOUT_ZONES):
        # A first fill: every workout as workout_bpm holds it now.
        rows = B.workout_zones(inc.snapshot(store, i, WORKOUT_BPM), profiles)
        return inc.sync_scope(store, WORKOUT_ZONES, rows, rows.select(*B.WORKOUT_KEY), i)
    parts = []  # (workout key, start) of the workouts to recompute
    if i.advanced(WORKOUT_BPM):
        parts.append(inc.changed(store, i, WORKOUT_BPM).select(*B.WORKOUT_KEY, "start_time"))
    if i.advanced(USER_PROFILE):
        # The member's workouts with readings are the stored ones, plus those with new readings
        # (in the change feed above): the readings table is not scanned for them.
        born = B.birth_date_changed(inc.changed(store, i, USER_PROFILE))
        parts.append(store.read(WORKOUT_ZONES).join(F.broadcast(born), on="user_id", how="left_semi")
                     .select(*B.WORKOUT_KEY, "start_time"))
    spans = inc.union_distinct(parts).cache()
    try:
        scope = spans.select(*B.WORKOUT_KEY).distinct()
        # workout_bpm is clustered by start: only the stretch of the workouts in scope is read
        # (a changed workout's rows in the feed carry its old start and its new one).
        first, last = spans.agg(F.min(F.unix_micros("start_time")), F.max(F.unix_micros("start_time"))).first()
        if first is None:
            readings = store.empty_frame(WORKOUT_BPM)
        else:
            readings = inc.snapshot(store, i, WORKOUT_BPM, Within("start_time", inc.utc(first), inc.utc(last))).join(
                F.broadcast(scope), on=B.WORKOUT_KEY, how="left_semi")
        members = profiles.join(F.broadcast(scope.select("user_id").distinct()), on="user_id", how="left_semi")
        return inc.sync_scope(store, WORKOUT_ZONES, B.workout_zones(readings, members), scope, i)
    finally:
        spans.unpersist()


@refresh(WORKOUT_PERFORMANCE, [COMPLETED_WORKOUTS, WORKOUT_ZONES],
         {"user_id": [(COMPLETED_WORKOUTS, "user_id")],
          **{c: [(COMPLETED_WORKOUTS, "start_time")] for c in ("year", "week", "week_part", "week_start")},
          "workouts": [(COMPLETED_WORKOUTS, "workout_id"), (COMPLETED_WORKOUTS, "session_id")],
          "minutes_exercising": [(COMPLETED_WORKOUTS, "start_time"), (COMPLETED_WORKOUTS, "end_time")],
          "workouts_with_readings": [(WORKOUT_ZONES, "workout_id"), (WORKOUT_ZONES, "session_id")],
          "readings": [(WORKOUT_ZONES, "readings")], "avg_bpm": [(WORKOUT_ZONES, "heartrate_sum"),
                                                                (WORKOUT_ZONES, "readings")],
          "max_bpm": [(WORKOUT_ZONES, "max_bpm")],
          **{f"zone{k}_minutes": [(WORKOUT_ZONES, z)] for k, z in enumerate(B.ZONE_MICROS, 1)}})
def workout_performance(store: TableStore, i: Increment) -> CommitResult | None:
    """Recompute every member-week with a new or changed completed workout or workout total
    (`workout_zones`): from those two tables only, so a micro-batch reads no readings here."""
    if i.from_start(COMPLETED_WORKOUTS) and store.is_empty(WORKOUT_PERFORMANCE):
        rows = B.workout_performance(inc.snapshot(store, i, COMPLETED_WORKOUTS), inc.snapshot(store, i, WORKOUT_ZONES))
        return inc.sync_scope(store, WORKOUT_PERFORMANCE, rows, rows.select(*B.WEEK_KEY), i)
    scopes = [B.workout_weeks(inc.changed(store, i, spec)).select(*B.WEEK_KEY)
              for spec in (COMPLETED_WORKOUTS, WORKOUT_ZONES) if i.advanced(spec)]
    member_weeks = inc.union_distinct(scopes)
    completed = (B.workout_weeks(inc.snapshot(store, i, COMPLETED_WORKOUTS))
                 .join(F.broadcast(member_weeks), on=B.WEEK_KEY, how="left_semi")
                 .select("user_id", "workout_id", "session_id", "start_time", "end_time"))
    zones = inc.snapshot(store, i, WORKOUT_ZONES).join(completed.select(*B.WORKOUT_KEY), on=B.WORKOUT_KEY,
                                                        how="left_semi")
    return inc.sync_scope(store, WORKOUT_PERFORMANCE, B.workout_performance(completed, zones), member_weeks, i)


REFRESHES = [gym_occupancy, member_engagement, workout_zones, workout_performance]
