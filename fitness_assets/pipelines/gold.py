"""Incremental refresh of the gold tables (recompute-by-scope, see pipelines.silver)."""

from __future__ import annotations

from pyspark.sql import functions as F

from fitness_assets.lakehouse import incremental as inc
from fitness_assets.lakehouse.incremental import Increment
from fitness_assets.lakehouse.store import CommitResult, TableStore, Within
from fitness_assets.pipelines import refresh, same_columns
from fitness_assets.tables import (
    COMPLETED_WORKOUTS,
    GYM_LOGS,
    GYM_SUMMARY,
    USER_BINS,
    USERS,
    WORKOUT_BPM,
    WORKOUT_BPM_SUMMARY,
)
from fitness_assets.transforms import gold as G

WORKOUT_KEY = ["user_id", "workout_id", "session_id"]
VISIT_SCOPE = ["mac_address", "gym", "date"]


@refresh(WORKOUT_BPM_SUMMARY, [WORKOUT_BPM, USER_BINS],
         same_columns(WORKOUT_BPM, *WORKOUT_KEY) | same_columns(USER_BINS, "age", "gender", "city", "state")
         | {"min_bpm": [(WORKOUT_BPM, "heartrate")], "avg_bpm": [(WORKOUT_BPM, "heartrate")],
            "max_bpm": [(WORKOUT_BPM, "heartrate")], "num_recordings": [(WORKOUT_BPM, "time")]})
def workout_bpm_summary(store: TableStore, i: Increment) -> CommitResult | None:
    """Re-aggregate every workout with new or changed readings; give the other workouts of a
    member whose bins changed their new bins (their readings did not change, so neither did
    their figures: no reading is read for them)."""
    bins = inc.snapshot(store, i, USER_BINS)
    if i.from_start(WORKOUT_BPM) and store.is_empty(WORKOUT_BPM_SUMMARY):
        # A first fill: every workout as workout_bpm holds it now (its change history, read
        # to scope an increment, adds nothing to an empty table).
        rows = G.workout_bpm_summary(inc.snapshot(store, i, WORKOUT_BPM), bins)
        return inc.sync_scope(store, WORKOUT_BPM_SUMMARY, rows, rows.select(*WORKOUT_KEY), i)
    scopes, parts = [], []
    workouts = None
    if i.advanced(WORKOUT_BPM):
        changed = inc.changed(store, i, WORKOUT_BPM)
        workouts = changed.select(*WORKOUT_KEY).distinct()
        scopes.append(workouts)
        # workout_bpm is clustered by start: only the changed workouts' stretch is read.
        first, last = changed.agg(F.min(F.unix_micros("start_time")), F.max(F.unix_micros("start_time"))).first()
        if first is not None:
            readings = inc.snapshot(store, i, WORKOUT_BPM, Within("start_time", inc.utc(first), inc.utc(last)))
            parts.append(G.workout_bpm_summary(readings.join(F.broadcast(workouts), on=WORKOUT_KEY, how="left_semi"),
                                               bins))
    if i.advanced(USER_BINS):
        members = inc.changed(store, i, USER_BINS).select("user_id").distinct()
        stored = store.read(WORKOUT_BPM_SUMMARY).join(F.broadcast(members), on="user_id", how="left_semi")
        if workouts is not None:
            stored = stored.join(F.broadcast(workouts), on=WORKOUT_KEY, how="left_anti")
        parts.append(G.rebinned_summaries(stored, bins))
        scopes.append(stored.select(*WORKOUT_KEY))
    scope = inc.union_distinct(scopes)
    rows = parts[0] if parts else store.empty_frame(WORKOUT_BPM_SUMMARY)
    for part in parts[1:]:
        rows = rows.unionByName(part)
    return inc.sync_scope(store, WORKOUT_BPM_SUMMARY, rows, scope, i)


@refresh(GYM_SUMMARY, [GYM_LOGS, USERS, COMPLETED_WORKOUTS],
         {"date": [(GYM_LOGS, "login")]} | same_columns(GYM_LOGS, "gym", "mac_address")
         | same_columns(COMPLETED_WORKOUTS, "workout_id", "session_id")
         | {"minutes_in_gym": [(GYM_LOGS, "login"), (GYM_LOGS, "logout")],
            "minutes_exercising": [(COMPLETED_WORKOUTS, "start_time"), (COMPLETED_WORKOUTS, "end_time")]})
def gym_summary(store: TableStore, i: Increment) -> CommitResult | None:
    """Recompute every visit day touched by a new visit, a new completed workout of the
    visitor, or a change of the visitor's registration."""
    visits = inc.snapshot(store, i, GYM_LOGS).withColumn("date", F.to_date("login"))
    members = inc.snapshot(store, i, USERS)
    macs = []
    scopes = []
    if i.advanced(GYM_LOGS):
        scopes.append(inc.changed(store, i, GYM_LOGS).select("mac_address", "gym", F.to_date("login").alias("date")))
    if i.advanced(USERS):
        macs.append(inc.changed(store, i, USERS).select("mac_address"))
    if i.advanced(COMPLETED_WORKOUTS):
        users = inc.changed(store, i, COMPLETED_WORKOUTS).select("user_id")
        macs.append(members.join(F.broadcast(users.distinct()), on="user_id", how="left_semi").select("mac_address"))
    if macs:
        scopes.append(visits.join(F.broadcast(inc.union_distinct(macs)), on="mac_address", how="left_semi").select(*VISIT_SCOPE))
    scope = inc.union_distinct(scopes)
    in_scope = visits.join(F.broadcast(scope), on=VISIT_SCOPE, how="left_semi").drop("date")
    rows = G.gym_summary(in_scope, members, inc.snapshot(store, i, COMPLETED_WORKOUTS))
    return inc.sync_scope(store, GYM_SUMMARY, rows, scope, i)


REFRESHES = [workout_bpm_summary, gym_summary]
