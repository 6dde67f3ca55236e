"""``sync_scope``: into an empty table the rows are appended (no diff, no MERGE); into a table
with rows they are diffed and merged. Both give the same table and record the same progress."""

from __future__ import annotations

import datetime as dt
import shutil

import pyarrow as pa
import pytest

from fitness_assets.lakehouse import incremental as inc
from fitness_assets.lakehouse.incremental import Increment
from fitness_assets.tables import USER_BINS, USER_PROFILE

ROWS = [(1, "18-25", "f", "Oslo", "NO"), (2, "25-35", "m", "Bergen", "NO"), (2, "25-35", "m", "Bergen", "NO")]


def _increment(after: int, up_to: int) -> Increment:
    return Increment(USER_BINS, {USER_PROFILE.qualified_name: after}, {USER_PROFILE.qualified_name: up_to},
                     {USER_PROFILE.qualified_name: USER_PROFILE})


def _sync(store, spark, rows, step: Increment):
    frame = spark.createDataFrame(rows, USER_BINS.column_names)
    frame = frame.select(*[frame[c].cast(t) for c, t in zip(USER_BINS.column_names,
                                                              ("long", "string", "string", "string", "string"),
                                                              strict=True)])
    return inc.sync_scope(store, USER_BINS, frame, frame.select("user_id"), step)


def _table(store):
    return sorted(tuple(r) for r in store.read(USER_BINS).collect())


def test_a_first_fill_appends_distinct_rows_and_equals_the_merge_path(store, spark):
    store.ensure(USER_BINS)
    first = _sync(store, spark, ROWS, _increment(-1, 3))
    assert first.operation == "append" and not first.skipped
    assert _table(store) == sorted(set(ROWS))  # the exact duplicate is written once
    assert store.transaction_version(USER_BINS, inc.progress_app_id(USER_BINS, USER_PROFILE)) == 3

    # The same rows synced again, now into a table that has them: the general path, which
    # changes nothing, and a changed row is updated in place.
    again = _sync(store, spark, ROWS, _increment(3, 4))
    assert again.operation == "merge"
    assert _table(store) == sorted(set(ROWS))
    moved = [(2, "25-35", "m", "Stavanger", "NO")]
    assert _sync(store, spark, moved, _increment(4, 5)).operation == "merge"
    assert _table(store) == [ROWS[0], moved[0]]
    assert store.transaction_version(USER_BINS, inc.progress_app_id(USER_BINS, USER_PROFILE)) == 5


def test_a_retried_first_fill_writes_nothing_twice(store, spark):
    store.ensure(USER_BINS)
    _sync(store, spark, ROWS, _increment(-1, 3))
    version = store.version(USER_BINS)
    retried = _sync(store, spark, ROWS, _increment(-1, 3))  # the same progress again: already applied
    assert retried.skipped
    assert store.version(USER_BINS) == version and _table(store) == sorted(set(ROWS))


def test_a_workout_removed_upstream_loses_its_readings_whatever_the_range_of_the_others(store):
    """``workout_bpm`` diffs only its rows whose start lies in the range of the workouts in
    scope; a workout removed from ``completed_workouts`` (here: an earlier start made it longer
    than three hours) is in scope from the change feed only, with its old start, and its rows
    must still go, while another workout far later in time gets a new reading."""
    from fitness_assets.lakehouse.store import Clause, Merge
    from fitness_assets.pipelines.silver import workout_bpm
    from fitness_assets.tables import COMPLETED_WORKOUTS, HEART_RATE, USERS, WORKOUT_BPM

    def at(hour: int, minute: int = 0) -> dt.datetime:
        return dt.datetime(2024, 3, 1, hour, minute, tzinfo=dt.UTC)

    def readings(*rows):
        return pa.Table.from_pylist([{"device_id": d, "time": t, "heartrate": 100.0, "valid": True} for d, t in rows],
                                    schema=HEART_RATE.schema)

    store.append(USERS, pa.Table.from_pylist(
        [{"user_id": u, "device_id": 10 * u, "mac_address": f"aa:aa:aa:aa:aa:0{u}", "registration_timestamp": at(0)}
         for u in (1, 2)], schema=USERS.schema))
    store.append(COMPLETED_WORKOUTS, pa.Table.from_pylist(
        [{"user_id": 1, "workout_id": 1, "session_id": 1, "start_time": at(10), "end_time": at(10, 30)},
         {"user_id": 2, "workout_id": 1, "session_id": 1, "start_time": at(20), "end_time": at(20, 30)}],
        schema=COMPLETED_WORKOUTS.schema))
    store.append(HEART_RATE, readings((10, at(10, 10)), (10, at(10, 20)), (20, at(20, 10))))
    workout_bpm(store)
    assert len(store.read(WORKOUT_BPM).collect()) == 3

    key = "t.user_id = s.user_id AND t.workout_id = s.workout_id AND t.session_id = s.session_id"
    store.merge(COMPLETED_WORKOUTS, pa.Table.from_pylist(
        [{"user_id": 1, "workout_id": 1, "session_id": 1, "start_time": at(10), "end_time": at(10, 30)}],
        schema=COMPLETED_WORKOUTS.schema), Merge(key, (Clause("delete"),)))
    store.append(HEART_RATE, readings((20, at(20, 20))))
    workout_bpm(store)
    assert sorted((r["user_id"], r["time"].hour, r["time"].minute) for r in store.read(WORKOUT_BPM).collect()) == [
        (2, 20, 10), (2, 20, 20)]


def test_the_general_path_writes_only_real_changes(store, spark):
    """Into a table with rows, a sync commits exactly the differences inside its scope: a changed
    row is updated (a value that became NULL too), a key no longer produced is deleted, a new
    key is inserted; an unchanged row (one with a NULL value too) and a row outside the scope
    are not written. The change feed of the commit shows nothing else."""
    store.ensure(USER_BINS)
    before = [(1, "18-25", "f", "Oslo", "NO"), (2, "25-35", "m", None, "NO"), (3, "35-45", "f", "Bergen", "NO"),
              (4, "45-55", "m", "Molde", "NO"), (6, "55-65", "f", "Bodo", "NO")]
    _sync(store, spark, before, _increment(-1, 1))
    version = store.version(USER_BINS)

    now = [(1, "18-25", "f", "Oslo", "NO"), (2, "25-35", "m", None, "NO"), (3, "35-45", "f", None, "NO"),
           (5, "18-25", "m", "Tromso", "NO")]
    frame = spark.createDataFrame(now, "user_id long, age string, gender string, city string, state string")
    scope = spark.createDataFrame([(u,) for u in (1, 2, 3, 5, 6)], "user_id long")
    assert inc.sync_scope(store, USER_BINS, frame, scope, _increment(1, 2)).operation == "merge"

    assert _table(store) == sorted([*now, before[3]], key=lambda r: r[0])
    changes = sorted((r["_change_type"], r["user_id"], r["city"])
                     for r in store.read_changes(USER_BINS, version, store.version(USER_BINS)).collect())
    assert changes == [("delete", 6, "Bodo"), ("insert", 5, "Tromso"),
                       ("update_postimage", 3, None), ("update_preimage", 3, "Bergen")]


def _profiles(store, *user_ids: int) -> None:
    store.append(USER_PROFILE, pa.Table.from_pylist(
        [{"user_id": u, "updated": dt.datetime(2024, 3, 1, tzinfo=dt.UTC)} for u in user_ids],
        schema=USER_PROFILE.schema))


def _take_in(store, spark, rows) -> Increment:
    """One refresh of USER_BINS from USER_PROFILE: plan, then write with its progress."""
    step = inc.plan(store, USER_BINS, [USER_PROFILE])
    _sync(store, spark, rows, step)
    return step


def test_an_upstream_made_again_is_refused_not_silently_taken_in_from_where_the_old_one_was(store, spark):
    """Progress is a version of the upstream; a table deleted and filled again counts its
    versions from 0, so without its identity a target would take in nothing (or the new
    table's later versions only) and keep the old table's rows."""
    for user_id in (1, 2, 3):
        _profiles(store, user_id)  # versions 0, 1, 2 (the first append creates the table)
    _take_in(store, spark, ROWS)
    assert store.transaction_version(USER_BINS, inc.identity_app_id(USER_BINS, USER_PROFILE)) == \
        inc.table_number(store.table_id(USER_PROFILE))

    # The same table moving on and compacted keeps its identity: no refusal.
    _profiles(store, 4)
    store.compact(USER_PROFILE)
    assert not _take_in(store, spark, ROWS).is_empty

    # Deleted and made again, then grown past the version taken in: refused, naming what to do.
    taken = store.transaction_version(USER_BINS, inc.progress_app_id(USER_BINS, USER_PROFILE))
    shutil.rmtree(store.location(USER_PROFILE))
    for user_id in range(taken + 3):
        _profiles(store, 10 + user_id)
    assert store.version(USER_PROFILE) > taken
    with pytest.raises(inc.UpstreamRemade, match=r"silver\.user_profile was deleted or made again after silver\.user_bins"
                                                 r".*fitness-assets rebuild silver"):
        inc.plan(store, USER_BINS, [USER_PROFILE])

    # Dropped and made again: the target takes in the new table from its start.
    store.drop(USER_BINS)
    assert _take_in(store, spark, ROWS).from_start(USER_PROFILE)


def test_a_target_without_recorded_identities_is_judged_by_version_and_then_records_them(store, spark):
    """A lakehouse written before identities were recorded: its progress alone is trusted
    while the upstream's version is not below it (then the upstream was surely made again),
    and its next write records the identity."""
    for user_id in (1, 2, 3):
        _profiles(store, user_id)
    legacy = Increment(USER_BINS, {USER_PROFILE.qualified_name: -1}, {USER_PROFILE.qualified_name: 2},
                       {USER_PROFILE.qualified_name: USER_PROFILE})  # no identities, as written before
    store.ensure(USER_BINS)
    _sync(store, spark, ROWS, legacy)
    assert store.transaction_version(USER_BINS, inc.identity_app_id(USER_BINS, USER_PROFILE)) is None

    _profiles(store, 4)
    _take_in(store, spark, ROWS)  # trusted, and the identity is recorded with this write
    assert store.transaction_version(USER_BINS, inc.identity_app_id(USER_BINS, USER_PROFILE)) == \
        inc.table_number(store.table_id(USER_PROFILE))

    # Without an identity, a version below the one taken in still tells a table made again.
    store.drop(USER_BINS)
    store.ensure(USER_BINS)
    _sync(store, spark, ROWS, legacy)
    shutil.rmtree(store.location(USER_PROFILE))
    _profiles(store, 5)
    with pytest.raises(inc.UpstreamRemade):
        inc.plan(store, USER_BINS, [USER_PROFILE])


def test_a_refresh_another_run_overtook_plans_again_and_takes_nothing_in_twice(store):
    """Two overlapping runs (a CLI run beside the daemon's) fill the same empty table. The other
    run planned earlier, when the upstream held member 1 only, and commits first; this run,
    planned with members 1 and 2, must not append member 1 again: it plans again from the
    other run's progress and merges member 2."""
    from fitness_assets.pipelines.silver import user_bins

    def profile(user_id: int, city: str) -> dict:
        return {"user_id": user_id, "dob": dt.date(1990, 5, 1), "sex": "f", "gender": "female", "first_name": "A",
                "last_name": "B", "street_address": "1 Road", "city": city, "state": "NO", "zip": 1234,
                "updated": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}

    reference, name = dt.date(2026, 1, 1), USER_PROFILE.qualified_name
    store.append(USER_PROFILE, pa.Table.from_pylist([profile(1, "Oslo")], schema=USER_PROFILE.schema))
    early = store.version(USER_PROFILE)
    store.append(USER_PROFILE, pa.Table.from_pylist([profile(2, "Bergen")], schema=USER_PROFILE.schema))
    overtaken = []

    def other_run(spec):
        if spec.qualified_name != USER_BINS.qualified_name or overtaken:
            return
        overtaken.append(True)
        store.before_commit = None
        user_bins.body(store, Increment(USER_BINS, {name: -1}, {name: early}, {name: USER_PROFILE}), reference)

    store.before_commit = other_run
    result = user_bins(store, reference)
    assert overtaken and not result.skipped and result.increment.after[name] == early
    assert sorted((r["user_id"], r["city"]) for r in store.read(USER_BINS).collect()) == [(1, "Oslo"), (2, "Bergen")]
    assert store.transaction_version(USER_BINS, inc.progress_app_id(USER_BINS, USER_PROFILE)) == store.version(USER_PROFILE)


@pytest.mark.parametrize("batches", [1, 2])
def test_the_first_registration_is_the_same_however_registrations_are_batched(store, batches):
    """Two registrations of a member less than a microsecond apart are one instant in
    `silver.users` (microseconds): in one batch the earlier double won, across two the tie
    rule (lowest device), so the member's device depended on the batching."""
    from fitness_assets.pipelines.silver import users
    from fitness_assets.tables import REGISTERED_USERS_BZ, USERS

    def registration(device: int, seconds: float) -> dict:
        return {"user_id": 1, "device_id": device, "mac_address": f"aa:bb:cc:dd:ee:{device:02d}",
                "registration_timestamp": seconds, "load_time": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                "source_file": "registered_users/a.csv"}

    rows = [registration(11, 1700000000.0000002), registration(19, 1700000000.0)]
    for part in ([rows] if batches == 1 else [rows[:1], rows[1:]]):
        store.append(REGISTERED_USERS_BZ, pa.Table.from_pylist(part, schema=REGISTERED_USERS_BZ.schema))
        users(store)
    assert [(r["device_id"], r["registration_timestamp"]) for r in store.read(USERS).collect()] == [
        (11, dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC).replace(tzinfo=None))]


def test_age_bins_follow_the_reference_date_for_every_member_not_only_those_whose_profile_changed(store):
    """The reference date is today by default, so it moves every day: a member whose profile
    never changes again still turns 18 in `silver.user_bins`."""
    from fitness_assets.pipelines.silver import user_bins

    def profile(user_id: int, dob: dt.date) -> dict:
        return {"user_id": user_id, "dob": dob, "sex": "f", "gender": "female", "first_name": "A", "last_name": "B",
                "street_address": "1 Road", "city": "Oslo", "state": "NO", "zip": 1234,
                "updated": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}

    store.append(USER_PROFILE, pa.Table.from_pylist([profile(3, dt.date(2006, 3, 10)), profile(4, dt.date(1980, 1, 1))],
                                                    schema=USER_PROFILE.schema))
    bins = lambda: sorted((r["user_id"], r["age"]) for r in store.read(USER_BINS).collect())  # noqa: E731
    user_bins(store, dt.date(2024, 3, 9))
    assert bins() == [(3, "under 18"), (4, "35-45")]
    assert not user_bins(store, dt.date(2024, 3, 9)).commit  # same date, nothing new: not run
    user_bins(store, dt.date(2024, 3, 11))  # member 3 turned 18; no profile changed
    assert bins() == [(3, "18-25"), (4, "35-45")]
    version = store.version(USER_BINS)
    restamped = user_bins(store, dt.date(2024, 3, 12))  # no bin changes: the date is recorded all the same
    assert restamped.commit is not None and store.version(USER_BINS) == version + 1 and bins() == [(3, "18-25"), (4, "35-45")]
    assert not user_bins(store, dt.date(2024, 3, 12)).commit  # and is not computed again


@pytest.mark.parametrize("batches", [1, 2])
def test_gym_summary_keeps_one_row_per_key_for_overlapping_visits_and_a_shared_badge(store, batches):
    """A badge shared by members 3 and 6, each with workout (1, 1) starting inside two
    overlapping visits of the badge: four candidate rows for one key of the table. Appended
    whole they doubled the key; merged later, delta-rs refused the MERGE for good. The row of
    the earliest visit and the lower member is kept, however the visits arrived."""
    from fitness_assets.lakehouse.store import Clause, Merge
    from fitness_assets.pipelines.gold import gym_summary
    from fitness_assets.tables import COMPLETED_WORKOUTS, GYM_LOGS, GYM_SUMMARY, USERS

    def at(hour: int, minute: int = 0) -> dt.datetime:
        return dt.datetime(2024, 2, 29, hour, minute, tzinfo=dt.UTC)

    badge = "aa:bb:cc:dd:ee:03"
    store.append(USERS, pa.Table.from_pylist([{"user_id": u, "device_id": u, "mac_address": badge,
                                               "registration_timestamp": at(0)} for u in (3, 6)], schema=USERS.schema))
    store.append(COMPLETED_WORKOUTS, pa.Table.from_pylist([
        {"user_id": 3, "workout_id": 1, "session_id": 1, "start_time": at(10, 15), "end_time": at(10, 45)},
        {"user_id": 6, "workout_id": 1, "session_id": 1, "start_time": at(10, 20), "end_time": at(11, 10)}],
        schema=COMPLETED_WORKOUTS.schema))
    visits = [[{"mac_address": badge, "gym": 1, "login": at(9, 50), "logout": at(12, 10)}],
              [{"mac_address": badge, "gym": 1, "login": at(10), "logout": at(10, 30)},
               {"mac_address": badge, "gym": 1, "login": at(9, 50), "logout": at(12, 20)}]]  # a later logout
    upsert = Merge("t.mac_address = s.mac_address AND t.gym = s.gym AND t.login = s.login",
                   (Clause("update_all"), Clause("insert_all")))
    for part in ([visits[0] + visits[1][:1] + [visits[1][1]]] if batches == 1 else visits):
        rows = {(r["mac_address"], r["gym"], r["login"]): r for r in part}  # one row per visit, the latest
        store.merge(GYM_LOGS, pa.Table.from_pylist(list(rows.values()), schema=GYM_LOGS.schema), upsert)
        gym_summary(store)
    rows = [(r["workout_id"], r["session_id"], r["minutes_in_gym"], r["minutes_exercising"])
            for r in store.read(GYM_SUMMARY).collect()]
    assert rows == [(1, 1, 150.0, 30.0)]
