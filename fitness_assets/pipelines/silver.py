"""Incremental refresh of the silver tables.

Two patterns keep results independent of how input was split into batches:

* order-independent MERGE rules (``users``, ``gym_logs``, ``workouts``, ``heart_rate``): a new
  row replaces the stored one only when the rule prefers it (earlier registration, later
  logout, earlier event, higher reading), so applying batches in any grouping converges to
  the same table;
* recompute-by-scope (all other tables): the keys the new input can affect are found from the
  upstream change feed, the rows for those keys are recomputed from the upstream tables and
  synced into the target in one commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from fitness_assets.lakehouse import incremental as inc
from fitness_assets.lakehouse.incremental import Increment
from fitness_assets.lakehouse.store import Clause, CommitResult, Merge, TableStore, Within
from fitness_assets.pipelines import Lineage, TableRefresh, refresh, same_columns
from fitness_assets.tables import (
    COMPLETED_WORKOUTS,
    GYM_LOGINS_BZ,
    GYM_LOGS,
    HEART_RATE,
    KAFKA_MULTIPLEX_BZ,
    KAFKA_MULTIPLEX_QR,
    REGISTERED_USERS_BZ,
    USER_BINS,
    USER_PROFILE,
    USER_PROFILE_HISTORY,
    USERS,
    WORKOUT_BPM,
    WORKOUTS,
    TableSpec,
)
from fitness_assets.transforms import readings_arrow as A
from fitness_assets.transforms import silver as T

WORKOUT_KEY = ["user_id", "workout_id", "session_id"]
#: Up to this many completed workouts (~50 bytes each), workout_bpm broadcasts the workouts in
#: scope to the readings rather than shuffling the readings.
BROADCAST_WORKOUTS = 2_000_000


def _topic(topic: str) -> Within:
    """One topic's partition of the Kafka bronze table: a read opens only its files (a
    micro-batch's new `workout` or `user_info` records are a few hundred of its ~40k rows at 5M)."""
    return Within("topic", topic, topic)


def _merge_appended(target: TableSpec, upstream: TableSpec, transform: Callable[[DataFrame], DataFrame],
                    clauses: list[Clause], lineage: Lineage, doc: str, within: Within | None = None) -> TableRefresh:
    """Transform the rows appended upstream since the last run (only those ``within`` a range,
    when given) and MERGE them with ``clauses``."""
    def body(store: TableStore, i: Increment) -> CommitResult | None:
        return inc.merge_rows(store, target, transform(inc.appended(store, i, upstream, within)), i, clauses)

    body.__doc__ = doc
    return refresh(target, [upstream], lineage)(body)


def _from_value(target: TableSpec) -> Lineage:
    return {c: [(KAFKA_MULTIPLEX_BZ, "value")] for c in target.column_names}


users = _merge_appended(
    USERS, REGISTERED_USERS_BZ, T.users, [Clause("update_all", T.USERS_EARLIER), Clause("insert_all")],
    same_columns(REGISTERED_USERS_BZ, "user_id", "device_id", "mac_address", "registration_timestamp"),
    "First registration wins.")

gym_logs = _merge_appended(
    GYM_LOGS, GYM_LOGINS_BZ, T.gym_logs, [Clause("update", T.LOGOUT_LATER, {"logout": "s.logout"}), Clause("insert_all")],
    same_columns(GYM_LOGINS_BZ, "mac_address", "gym", "login", "logout"),
    "A later logout fills or replaces the stored one.")

workouts = _merge_appended(
    WORKOUTS, KAFKA_MULTIPLEX_BZ, T.workouts,
    [Clause("update", "s.time < t.time", {"time": "s.time"}), Clause("insert_all")], _from_value(WORKOUTS),
    "Each event kept once, at its earliest reported time.", within=_topic("workout"))

HEART_RATE_CLAUSES = [Clause("update", T.HEARTRATE_HIGHER, {"heartrate": "s.heartrate", "valid": "s.valid"}),
                      Clause("insert_all")]


@refresh(HEART_RATE, [KAFKA_MULTIPLEX_BZ], _from_value(HEART_RATE))
def heart_rate(store: TableStore, i: Increment) -> CommitResult | None:
    """One reading per device and instant, the highest reported."""
    rows = _new_readings_arrow(store, i)
    if rows is None:
        rows = T.heart_rate(inc.appended(store, i, KAFKA_MULTIPLEX_BZ, _topic("bpm")))
    # delta-rs derives file-skipping filters from the source's key values, so the MERGE reads
    # only target files whose time range overlaps the batch (measured: 50k rows into 5M in
    # 0.7 s, no target file rewritten).
    return inc.merge_rows(store, HEART_RATE, rows, i, HEART_RATE_CLAUSES)


def _new_readings_arrow(store: TableStore, i: Increment) -> pa.Table | None:
    """The new heart-rate rows computed from the appended `bpm` payloads read as Arrow: the
    compact ones decoded by Arrow, the others (if any) by Spark's decoder; None when the store
    reads through Spark only. Measured at 4.3M payloads: ~3 s in all against ~20 s in Spark;
    a micro-batch of compact payloads runs no Spark job."""
    name = KAFKA_MULTIPLEX_BZ.qualified_name
    payloads = store.read_appended_arrow(KAFKA_MULTIPLEX_BZ, i.after[name], i.up_to[name], ["value"],
                                         within=_topic("bpm"))
    if payloads is None:
        return None
    decoded, readings = A.compact_readings(payloads.column("value"))
    if not decoded.all():
        others = payloads.filter(pa.array(~decoded))
        store.codegen.reading(others.num_rows)
        frame = store.frame(others, from_arrow_schema(others.schema))
        readings = pa.concat_tables([readings, T.bpm_readings(frame).toArrow().cast(A.READINGS_SCHEMA)])
    return A.per_instant(readings)


@refresh(USER_PROFILE_HISTORY, [KAFKA_MULTIPLEX_BZ], _from_value(USER_PROFILE_HISTORY), also_writes=[KAFKA_MULTIPLEX_QR])
def user_profile_history(store: TableStore, i: Increment) -> CommitResult | None:
    """Recompute the whole history of every member named in new profile changes."""
    # Only the topic's partition is listed and read (its size, not the table's, picks the codegen).
    new = T.profile_changes(inc.appended(store, i, KAFKA_MULTIPLEX_BZ, _topic("user_info")))
    scope = new.select("user_id").distinct()
    every = T.profile_changes(inc.snapshot(store, i, KAFKA_MULTIPLEX_BZ, _topic("user_info")))
    # Read twice (the deletes to erase, then the history): decoded and deduplicated once.
    in_scope = every.join(F.broadcast(scope), on="user_id", how="left_semi").cache()
    try:
        _erase_from_quarantine(store, in_scope.where(F.col("update_type") == "delete"))
        history = T.profile_history(in_scope)
        return inc.sync_scope(store, USER_PROFILE_HISTORY, history, scope, i)
    finally:
        in_scope.unpersist()


def _erase_from_quarantine(store: TableStore, deletes: DataFrame) -> None:
    """Empty the raw line of quarantined profile records of deleted members. Done before the
    history commit, so a crash in between is redone by the retry (erasing twice is harmless)."""
    if deletes.isEmpty():
        return
    rows = store.to_arrow(KAFKA_MULTIPLEX_QR, T.erased_quarantine_rows(store.read(KAFKA_MULTIPLEX_QR), deletes))
    if rows.num_rows:
        store.merge(KAFKA_MULTIPLEX_QR, rows, Merge("t.source_file = s.source_file AND t.line = s.line",
                                                   (Clause("update_all"),)),
                    metadata={"erased_rows": rows.num_rows})


@refresh(USER_PROFILE, [USER_PROFILE_HISTORY], same_columns(USER_PROFILE_HISTORY, *USER_PROFILE.column_names))
def user_profile(store: TableStore, i: Increment) -> CommitResult | None:
    """SCD type 1: each changed member's current version, removed when it is a delete."""
    scope = inc.changed(store, i, USER_PROFILE_HISTORY).select("user_id").distinct()
    current = T.current_profiles(inc.snapshot(store, i, USER_PROFILE_HISTORY).join(
        F.broadcast(scope), on="user_id", how="left_semi"))
    rows = current.where(~F.col("is_deleted")).drop("is_deleted")
    return inc.sync_scope(store, USER_PROFILE, rows, scope, i)


def _binned_at_another_date(store: TableStore, reference: dt.date) -> bool:
    """The table's bins were computed at another reference date (by default the date is today,
    so it moves every day): every member's age bin is computed again (from the Delta log: no
    Spark job to tell)."""
    meta = store.latest_commit_metadata(USER_BINS, "reference_date")
    return meta is not None and meta["reference_date"] != reference.isoformat()


@refresh(USER_BINS, [USER_PROFILE],
         same_columns(USER_PROFILE, "user_id", "gender", "city", "state") | {"age": [(USER_PROFILE, "dob")]},
         needs_reference_date=True, stale=_binned_at_another_date)
def user_bins(store: TableStore, i: Increment, reference: dt.date) -> CommitResult | None:
    """Bins of every member whose current profile changed (deleted members leave), or of every
    member when the reference date is not the one the table's bins were computed at."""
    everyone = _binned_at_another_date(store, reference)
    current = inc.snapshot(store, i, USER_PROFILE)
    scopes = [inc.changed(store, i, USER_PROFILE).select("user_id")] if i.advanced(USER_PROFILE) else []
    if everyone:
        scopes += [current.select("user_id"), store.read(USER_BINS).select("user_id")]
    scope = inc.union_distinct(scopes)
    profiles = current.join(F.broadcast(scope), on="user_id", how="left_semi")
    metadata = {"reference_date": reference.isoformat()}
    written = inc.sync_scope(store, USER_BINS, T.user_bins(profiles, reference), scope, i, metadata=metadata)
    if everyone and (written is None or written.skipped):
        # No bin changed: the date they now hold is recorded all the same (an empty commit), or
        # every later run would compute them again.
        written = store.append(USER_BINS, USER_BINS.schema.empty_table(), metadata=metadata)
    return written


@refresh(COMPLETED_WORKOUTS, [WORKOUTS],
         same_columns(WORKOUTS, *WORKOUT_KEY) | {"start_time": [(WORKOUTS, "time")], "end_time": [(WORKOUTS, "time")]})
def completed_workouts(store: TableStore, i: Increment) -> CommitResult | None:
    """Pair starts and stops of every workout that got a new or changed event."""
    scope = inc.changed(store, i, WORKOUTS).select(*WORKOUT_KEY).distinct()
    events = inc.snapshot(store, i, WORKOUTS).join(F.broadcast(scope), on=WORKOUT_KEY, how="left_semi")
    return inc.sync_scope(store, COMPLETED_WORKOUTS, T.completed_workouts(events), scope, i)


@refresh(WORKOUT_BPM, [COMPLETED_WORKOUTS, HEART_RATE, USERS],
         same_columns(COMPLETED_WORKOUTS, *WORKOUT_KEY, "start_time", "end_time")
         | same_columns(HEART_RATE, "time", "heartrate"))
def workout_bpm(store: TableStore, i: Increment) -> CommitResult | None:
    """Recompute the readings of every workout touched by a new completion, a new or changed
    reading, or a (late) registration of its member."""
    completed = inc.snapshot(store, i, COMPLETED_WORKOUTS)
    members = inc.snapshot(store, i, USERS)
    scopes = []
    changed_workouts = inc.changed(store, i, COMPLETED_WORKOUTS) if i.advanced(COMPLETED_WORKOUTS) else None
    if changed_workouts is not None:
        scopes.append(changed_workouts.select(*WORKOUT_KEY))
    # Taking in every completed workout ever written (a first fill, a rebuild) already scopes
    # them all: the workouts of changed members and readings are among them.
    everything = i.from_start(COMPLETED_WORKOUTS)
    if i.advanced(USERS) and not everything:
        users = inc.changed(store, i, USERS).select("user_id").distinct()
        scopes.append(completed.join(F.broadcast(users), on="user_id", how="left_semi").select(*WORKOUT_KEY))
    if i.advanced(HEART_RATE) and not everything:
        new_readings = inc.changed(store, i, HEART_RATE).select("device_id", "time").distinct()
        owners = members.select("user_id", "device_id")
        touched = new_readings.join(owners, on="device_id", how="inner")
        scopes.append(completed.join(touched, on=[completed["user_id"] == touched["user_id"],
                                                  touched["time"] > completed["start_time"],
                                                  touched["time"] <= completed["end_time"]], how="inner")
                      .select(completed["user_id"], "workout_id", "session_id"))
    scope = inc.union_distinct(scopes).cache()
    in_scope = completed.join(F.broadcast(scope), on=WORKOUT_KEY, how="left_semi").cache()
    try:
        devices = in_scope.join(members.select("user_id", "device_id"),
                                on="user_id", how="inner").select("device_id").distinct()
        # Literal time bounds: heart_rate and workout_bpm are clustered by time, so only the
        # files and row groups of the workouts in scope are read, not the whole tables. The
        # readings are those of the workouts in scope as they are now; the stored rows to
        # compare with carry each workout's start as workout_bpm last took it in, which is
        # its start now or one in the change feed (a changed or removed workout).
        spans = in_scope.select(F.lit(True).alias("now"), "start_time", "end_time")
        if changed_workouts is not None:
            spans = spans.unionByName(changed_workouts.select(F.lit(False).alias("now"), "start_time", "end_time"))
        start, end = F.unix_micros("start_time"), F.unix_micros("end_time")
        first, last, first_start, last_start = spans.agg(
            F.min(F.when(F.col("now"), start)), F.max(F.when(F.col("now"), end)), F.min(start), F.max(start)).first()
        if first is None:
            relevant = store.empty_frame(HEART_RATE)
        else:
            relevant = (inc.snapshot(store, i, HEART_RATE, Within("time", inc.utc(first), inc.utc(last)))
                        .where(F.col("time") > F.timestamp_micros(F.lit(first))))
        stored = None if first_start is None else Within("start_time", inc.utc(first_start), inc.utc(last_start))
        relevant = relevant.join(F.broadcast(devices), on="device_id", how="left_semi")
        # Measured at 5M readings and 11k workouts: 6.6 -> 1.4 s to hand the 4.7M rows to
        # delta-rs with the broadcast and no distinct.
        small = store.row_count(COMPLETED_WORKOUTS) <= BROADCAST_WORKOUTS
        rows = T.workout_bpm(in_scope, members, relevant, broadcast_workouts=small)
        return inc.sync_scope(store, WORKOUT_BPM, rows, scope, i, within=stored, unique_rows=True)
    finally:
        scope.unpersist()
        in_scope.unpersist()


REFRESHES = [users, gym_logs, user_profile_history, user_profile, workouts, heart_rate, user_bins,
             completed_workouts, workout_bpm]
