"""Incremental refresh of the business gold tables (recompute-by-scope, see pipelines.silver).

- ``gym_occupancy``: the (gym, date) pairs any changed visit counts on (before and after the
  change) are recomputed from every visit counting on them.
- ``member_engagement``: depends on each member's whole history and on the reference date,
  so the scope is the members touched by the increment (new or changed registrations, visits
  of their badge, completed workouts); when the reference date or the at-risk threshold
  differs from the ones the table was computed with (recorded in every commit's metadata and
  in the rows' ``reference_date`` and ``at_risk_after_days``), every member is recomputed.
- ``workout_performance``: the (member, week) pairs of changed completed workouts and
  readings, and every week of a member whose profile (date of birth) changed.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from fitness_assets.lakehouse import incremental as inc
from fitness_assets.lakehouse.store import TableStore, Within
from fitness_assets.pipelines import Refresh
from fitness_assets.tables import (
    COMPLETED_WORKOUTS,
    GYM_LOGS,
    GYM_OCCUPANCY,
    MEMBER_ENGAGEMENT,
    USER_PROFILE,
    USERS,
    WORKOUT_BPM,
    WORKOUT_PERFORMANCE,
)
from fitness_assets.transforms import business as B

DAY_SCOPE = ["gym", "date"]


def refresh_gym_occupancy(store: TableStore) -> Refresh:
    """Recompute every gym and day a new or changed visit counts on."""
    i = inc.plan(store, GYM_OCCUPANCY, [GYM_LOGS])
    if i.is_empty:
        return Refresh(i)
    scope = B.visit_days(inc.changed(store, i, GYM_LOGS)).select(*DAY_SCOPE).distinct()
    # A visit lasts at most a day (longer ones count on their login day only), so the visits
    # counting on a day logged in on that day or the day before: a semi-join, no shuffle.
    logins = scope.select("gym", "date").unionByName(scope.select("gym", F.date_sub("date", 1).alias("date")))
    visits = (inc.snapshot(store, i, GYM_LOGS).withColumn("date", F.to_date("login"))
              .join(F.broadcast(logins.distinct()), on=DAY_SCOPE, how="left_semi").drop("date"))
    rows = B.gym_occupancy(visits).join(F.broadcast(scope), on=DAY_SCOPE, how="left_semi")
    return Refresh(i, inc.sync_scope(store, GYM_OCCUPANCY, rows, scope, i))


RULES_KEY = "engagement_rules"


def engagement_rules(store: TableStore) -> dict | None:
    """The reference date and at-risk threshold of the table's latest commit (from the Delta
    log: no Spark job); None before the first."""
    meta = store.latest_commit_metadata(MEMBER_ENGAGEMENT, RULES_KEY)
    return None if meta is None else meta[RULES_KEY]


def refresh_member_engagement(store: TableStore, reference: dt.date,
                              at_risk_days: int = B.DEFAULT_AT_RISK_DAYS) -> Refresh:
    """Recompute the members touched by the increment, or every member when the reference
    date or the at-risk threshold differs from the ones of the table's latest commit (every
    commit records them, atomically with its rows)."""
    if at_risk_days < 1:
        raise ValueError(f"FITNESS_AT_RISK_DAYS must be at least 1, not {at_risk_days}")
    i = inc.plan(store, MEMBER_ENGAGEMENT, [USERS, GYM_LOGS, COMPLETED_WORKOUTS])
    rules = {"reference_date": reference.isoformat(), "at_risk_days": at_risk_days}
    everyone = engagement_rules(store) != rules
    if i.is_empty and not everyone:
        return Refresh(i)
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
    return Refresh(i, inc.sync_scope(store, MEMBER_ENGAGEMENT, rows, scope, i, metadata={
        RULES_KEY: rules, "recomputed": "every member" if everyone else "members touched by the increment"}))


def refresh_workout_performance(store: TableStore) -> Refresh:
    """Recompute every member-week with a new or changed completed workout or reading, and
    every week of a member whose date of birth changed (the zones depend on it; no other
    profile field counts here), or who got or lost a current profile."""
    i = inc.plan(store, WORKOUT_PERFORMANCE, [COMPLETED_WORKOUTS, WORKOUT_BPM, USER_PROFILE])
    if i.is_empty:
        return Refresh(i)
    if i.from_start(COMPLETED_WORKOUTS) and store.is_empty(WORKOUT_PERFORMANCE):
        # A first fill: every member-week, from the tables as they are (the change histories,
        # read to scope an increment, add nothing to an empty table).
        completed = inc.snapshot(store, i, COMPLETED_WORKOUTS).select(
            "user_id", "workout_id", "session_id", "start_time", "end_time")
        rows = B.workout_performance(completed, inc.snapshot(store, i, WORKOUT_BPM), inc.snapshot(store, i, USER_PROFILE))
        return Refresh(i, inc.sync_scope(store, WORKOUT_PERFORMANCE, rows, rows.select(*B.WEEK_KEY), i))
    weeks = B.workout_weeks(inc.snapshot(store, i, COMPLETED_WORKOUTS))
    scopes = []
    if i.advanced(COMPLETED_WORKOUTS):
        scopes.append(B.workout_weeks(inc.changed(store, i, COMPLETED_WORKOUTS)).select(*B.WEEK_KEY, "week_start"))
    if i.advanced(WORKOUT_BPM):
        scopes.append(B.workout_weeks(inc.changed(store, i, WORKOUT_BPM)).select(*B.WEEK_KEY, "week_start"))
    if i.advanced(USER_PROFILE):
        born = B.birth_date_changed(inc.changed(store, i, USER_PROFILE))
        scopes.append(weeks.join(F.broadcast(born), on="user_id", how="left_semi").select(*B.WEEK_KEY, "week_start"))
    scope = inc.union_distinct(scopes).cache()
    member_weeks = scope.drop("week_start")
    try:
        completed = (weeks.join(F.broadcast(member_weeks), on=B.WEEK_KEY, how="left_semi")
                     .select("user_id", "workout_id", "session_id", "start_time", "end_time"))
        # The readings of a week's workouts carry the workout's start: select them by week too,
        # reading only the weeks' stretch of workout_bpm (clustered by start).
        first, last = scope.agg(F.min("week_start"), F.max("week_start")).first()
        within = None if first is None else Within(
            "start_time", dt.datetime.combine(first, dt.time(), dt.UTC),
            dt.datetime.combine(last + dt.timedelta(days=7), dt.time(), dt.UTC))
        readings = B.workout_weeks(inc.snapshot(store, i, WORKOUT_BPM, within)).join(
            F.broadcast(member_weeks), on=B.WEEK_KEY, how="left_semi").select(*WORKOUT_BPM.column_names)
        members = scope.select("user_id").distinct()
        profiles = inc.snapshot(store, i, USER_PROFILE).join(F.broadcast(members), on="user_id", how="left_semi")
        rows = B.workout_performance(completed, readings, profiles)
        return Refresh(i, inc.sync_scope(store, WORKOUT_PERFORMANCE, rows, member_weeks, i))
    finally:
        scope.unpersist()
