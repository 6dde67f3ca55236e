"""Checks run as one step per table: nothing is evaluated again on unchanged data (no Spark
job at all for an asset and its checks when nothing changed upstream, a standing warning
included), row rules look at the rows written since their own last evaluation (a failure's
count carried over, following the change feed), and a blocking failure is always evaluated
again."""

import pytest
from dagster import AssetCheckKey, AssetKey

from fitness_assets.assets.checks_lib import CARRIED_KEY, KEPT_KEY, SAMPLE_ROWS, SINCE_KEY, key_checks
from fitness_assets.definitions import ALL_ASSETS_JOB, build_definitions
from fitness_assets.simulator import SimulatorConfig
from fitness_assets.tables import COMPLETED_WORKOUTS, HEART_RATE, LONG, USERS, WORKOUT_BPM, TableSpec
from fitness_assets_tests.conftest import TEST_SPARK, skip_on_connect
from fitness_assets_tests.helpers import deliver, spark_reads, stage


def _spark_jobs(spark) -> int:
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup())


def _record_reads(monkeypatch, store, spec: TableSpec) -> list:
    """From now on, the ``within`` of every ``store.read`` of ``spec`` (None: the whole table),
    for a test that a table is not read into Spark."""
    seen = []
    read = store.read

    def recording(s, version=None, within=None):
        if s == spec:
            seen.append(within)
        return read(s, version, within)

    monkeypatch.setattr(store, "read", recording)
    return seen


def _run_one(defs, instance, spec):
    """Materialize one asset with its checks, in process, as a user would select it in the UI."""
    job = defs.resolve_job_def(ALL_ASSETS_JOB)
    return job.execute_in_process(instance=instance, asset_selection=[AssetKey(spec.asset_key_path)],
                                  raise_on_error=False)


@skip_on_connect  # counts jobs on the SparkContext's status tracker
def test_unchanged_upstream_costs_no_spark_job_and_checks_are_not_reevaluated(settings, store, run, spark,
                                                                              dagster_instance, tmp_path):
    stage(SimulatorConfig.tiny(seed=5, batches=1), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    first = run()
    assert {c.check for c in first.checks if c.asset == "silver/users"} >= {"keys_unique"}
    defs = build_definitions(settings, TEST_SPARK)
    version = store.version(USERS)

    before = _spark_jobs(spark)
    result = _run_one(defs, dagster_instance, USERS)
    assert result.success
    assert _spark_jobs(spark) == before, "a run with nothing new upstream started Spark jobs"
    assert store.version(USERS) == version
    # Kept from the evaluation on this very data: recorded again unchanged, with the run that evaluated them.
    kept = result.get_asset_check_evaluations()
    assert {e.check_name: e.passed for e in kept} == {c.check: c.passed for c in first.checks
                                                      if c.asset == "silver/users"}
    assert all(e.metadata[KEPT_KEY].value not in ("", result.run_id) for e in kept)
    [materialization] = [e.materialization for e in result.get_asset_materialization_events()
                         if e.materialization.asset_key == AssetKey(USERS.asset_key_path)]
    assert materialization.metadata["rows_changed"].value == 0


@skip_on_connect  # counts jobs on the SparkContext's status tracker
def test_a_standing_warning_on_unchanged_data_costs_no_spark_job(settings, store, run, spark, dagster_instance,
                                                                 tmp_path):
    """A warning (not blocking) evaluated on exactly this data is kept, not evaluated again."""
    stage(SimulatorConfig.tiny(seed=5, batches=1), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    run()
    store.append(HEART_RATE, store.read(HEART_RATE).limit(1).selectExpr(
        "987654321 AS device_id", "time", "heartrate", "valid"))
    defs = build_definitions(settings, TEST_SPARK)
    warned = {e.check_name: e for e in _run_one(defs, dagster_instance, HEART_RATE).get_asset_check_evaluations()}
    assert not warned["device_id_in_users"].passed and warned["keys_unique"].passed

    before = _spark_jobs(spark)
    result = _run_one(defs, dagster_instance, HEART_RATE)
    assert _spark_jobs(spark) == before, "a standing warning on unchanged data started Spark jobs"
    # The warning stays the latest materialization's result (not shown skipped), as evaluated.
    kept = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert result.success and set(kept) == set(warned)
    for name, evaluation in warned.items():
        assert (kept[name].passed, kept[name].severity) == (evaluation.passed, evaluation.severity)
        assert kept[name].metadata["offending_rows"] == evaluation.metadata["offending_rows"]
        assert kept[name].metadata[KEPT_KEY].value not in ("", result.run_id)
    again = _run_one(defs, dagster_instance, HEART_RATE)  # kept again: still the run that evaluated it
    assert {e.metadata[KEPT_KEY].value for e in again.get_asset_check_evaluations()} == {
        kept["device_id_in_users"].metadata[KEPT_KEY].value}
    latest = dagster_instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey(HEART_RATE.asset_key_path), "device_id_in_users"), limit=1)[0]
    assert latest.run_id == again.run_id and latest.status.value == "FAILED"


def test_row_rules_look_at_new_rows_and_a_failure_is_evaluated_again(settings, store, run, spark,
                                                                     dagster_instance, tmp_path):
    stage(SimulatorConfig.tiny(seed=6, batches=1), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    run()
    passed_at = store.version(COMPLETED_WORKOUTS)
    bad = store.read(COMPLETED_WORKOUTS).limit(1).selectExpr(
        "user_id", "99999 AS workout_id", "session_id", "end_time AS start_time", "start_time AS end_time")
    store.append(COMPLETED_WORKOUTS, bad)
    defs = build_definitions(settings, TEST_SPARK)

    failed_at = store.version(COMPLETED_WORKOUTS)
    for attempt in range(2):  # the table does not change between the two: the failure is evaluated both times
        result = _run_one(defs, dagster_instance, COMPLETED_WORKOUTS)
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        failed = evaluations["ends_after_start"]
        assert not failed.passed
        assert failed.metadata["offending_rows"].value == 1
        assert failed.metadata["sample"].value[0]["workout_id"] == 99999
        if attempt == 0:  # after a passing evaluation, only the rows written since are read
            assert failed.metadata[SINCE_KEY].value == f"written after version {passed_at}"
            assert CARRIED_KEY not in failed.metadata
        else:  # after a failure, its count is carried over and nothing new is read
            assert failed.metadata[SINCE_KEY].value == f"written after version {failed_at}"
            assert failed.metadata[CARRIED_KEY].value == 1
        assert evaluations["keys_unique"].passed


def _evaluations(defs, instance, spec) -> dict:
    result = _run_one(defs, instance, spec)  # fails where a blocking check fails
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_carried_counts_follow_the_change_feed_and_equal_a_whole_table_count(settings, store, run, spark,
                                                                            dagster_instance, tmp_path):
    """A failing rule's count is carried over: plus the offending rows written since, minus the
    ones updated or deleted since (the change data feed). At every step it equals the count
    over the whole table made independently; a changed parent table counts a link whole."""
    from deltalake import DeltaTable

    stage(SimulatorConfig.tiny(seed=7, batches=1), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    run()
    defs = build_definitions(settings, TEST_SPARK)
    inverted = "NOT (end_time > start_time)"
    unknown_device = "device_id NOT IN (SELECT device_id FROM users WHERE device_id IS NOT NULL)"

    def whole(spec, condition):
        store.read(USERS).createOrReplaceTempView("users")
        store.read(spec).createOrReplaceTempView("checked")
        return spark.sql(f"SELECT count(*) AS n FROM checked WHERE {condition}").first()["n"]

    def add_inverted(workout_id):
        store.append(COMPLETED_WORKOUTS, store.read(COMPLETED_WORKOUTS).where("end_time > start_time").limit(1).selectExpr(
            "user_id", f"{workout_id} AS workout_id", "session_id", "end_time AS start_time", "start_time AS end_time"))

    add_inverted(90001)
    first = _evaluations(defs, dagster_instance, COMPLETED_WORKOUTS)["ends_after_start"]
    assert first.metadata["offending_rows"].value == whole(COMPLETED_WORKOUTS, inverted) >= 1
    add_inverted(90002)
    add_inverted(90003)
    second = _evaluations(defs, dagster_instance, COMPLETED_WORKOUTS)["ends_after_start"]
    assert second.metadata[CARRIED_KEY].value == first.metadata["offending_rows"].value
    assert second.metadata["offending_rows"].value == whole(COMPLETED_WORKOUTS, inverted) \
        == first.metadata["offending_rows"].value + 2
    # Repair one (an UPDATE: pre- and post-image in the change feed) and delete another.
    table = DeltaTable(store.location(COMPLETED_WORKOUTS))
    table.update(predicate="workout_id = 90002",
                 updates={"start_time": "end_time - INTERVAL '1' HOUR"})
    DeltaTable(store.location(COMPLETED_WORKOUTS)).delete("workout_id = 90003")
    third = _evaluations(defs, dagster_instance, COMPLETED_WORKOUTS)["ends_after_start"]
    assert third.metadata[CARRIED_KEY].value == second.metadata["offending_rows"].value
    assert third.metadata["offending_rows"].value == whole(COMPLETED_WORKOUTS, inverted) \
        == first.metadata["offending_rows"].value

    # A link: readings of unknown devices are counted on top of the carried count while
    # silver.users is unchanged; once users changes, the whole table is counted again.
    link = "device_id_in_users"

    def add_reading(device_id):
        store.append(HEART_RATE, store.read(HEART_RATE).limit(1).selectExpr(
            f"{device_id} AS device_id", "time", "heartrate", "valid"))

    add_reading(987654321)
    before = _evaluations(defs, dagster_instance, HEART_RATE)[link]
    assert not before.passed
    assert before.metadata["offending_rows"].value == whole(HEART_RATE, unknown_device) >= 1
    add_reading(987654322)
    after = _evaluations(defs, dagster_instance, HEART_RATE)[link]
    assert after.metadata[SINCE_KEY].value.startswith("written after version")
    assert after.metadata[CARRIED_KEY].value == before.metadata["offending_rows"].value
    assert after.metadata["offending_rows"].value == whole(HEART_RATE, unknown_device) \
        == before.metadata["offending_rows"].value + 1
    store.append(USERS, store.read(USERS).limit(1).selectExpr(
        *[("987654321 AS device_id" if c == "device_id" else "user_id + 1000000 AS user_id" if c == "user_id" else c)
          for c in USERS.column_names]))
    relinked = _evaluations(defs, dagster_instance, HEART_RATE)[link]
    assert relinked.metadata[SINCE_KEY].value == "whole table"
    assert relinked.metadata["offending_rows"].value == whole(HEART_RATE, unknown_device) \
        == before.metadata["offending_rows"].value


def test_duplicates_written_later_are_found_in_a_table_clustered_by_a_key(settings, store, run, dagster_instance,
                                                                           tmp_path):
    """`keys_unique` on `heart_rate` (clustered by `time`, one of its keys) reads only the
    stretch of time of the keys written since it passed: a duplicate of the earliest reading
    and one of the latest are both found."""
    from pyspark.sql import functions as F

    stage(SimulatorConfig.tiny(seed=6, batches=1), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    run()
    readings = store.read(HEART_RATE)
    store.append(HEART_RATE, readings.orderBy("time").limit(1).unionByName(readings.orderBy(F.desc("time")).limit(1)))
    evaluations = _evaluations(build_definitions(settings, TEST_SPARK), dagster_instance, HEART_RATE)
    failed = evaluations["keys_unique"]
    assert not failed.passed
    assert failed.metadata["offending_rows"].value == 2
    assert failed.metadata[SINCE_KEY].value.startswith("written after version")


def test_a_key_column_that_could_hold_null_is_refused_at_definition():
    """No check counts NULL keys because key columns are NOT NULL (the write refuses a NULL:
    test_store.py); a table declared with a nullable key column would lose that guarantee."""
    spec = TableSpec(layer="test", name="t", columns=(("k", LONG), ("j", LONG)), description="t", keys=("k", "j"),
                     not_null=("k",))
    with pytest.raises(ValueError, match=r"test.t: key columns \['j'\] must be in not_null"):
        key_checks(spec)
    assert [c.name for c in key_checks(TableSpec(layer="test", name="t", columns=(("k", LONG),), description="t",
                                                 keys=("k",), not_null=("k",)))] == ["keys_unique"]


def test_a_duplicate_key_is_found_when_the_whole_table_is_checked(settings, store, run, dagster_instance, tmp_path):
    """With no evaluation to start from, `keys_unique` counts the whole table (by Arrow on
    delta-rs): a duplicated reading of `heart_rate` (two keys) and a duplicated row of
    `workout_bpm` (four keys) are each one offending key, shown in the sample."""
    from dagster import DagsterInstance

    stage(SimulatorConfig.tiny(seed=6, batches=1), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    run()
    for spec in (HEART_RATE, WORKOUT_BPM):
        store.append(spec, store.read(spec).orderBy(*spec.keys).limit(1))
    defs = build_definitions(settings, TEST_SPARK)
    with DagsterInstance.ephemeral() as fresh:  # no earlier evaluation: the whole table
        for spec in (HEART_RATE, WORKOUT_BPM):
            failed = _evaluations(defs, fresh, spec)["keys_unique"]
            assert not failed.passed
            assert failed.metadata["offending_rows"].value == 1
            assert failed.metadata[SINCE_KEY].value == "whole table"
            (sample,) = failed.metadata["sample"].value
            assert sample["n"] == 2 and set(spec.keys) <= set(sample)
    report = run(expect_success=False)  # the CLI's report names each failed blocking check
    assert report.failures["silver__heart_rate__checks"] == (
        "DagsterAssetCheckFailedError: 1 blocking asset check failed with ERROR severity: silver/heart_rate: keys_unique")


@pytest.mark.parametrize("reads", ["arrow", "spark"])
def test_a_link_counted_over_the_whole_table_equals_an_independent_count(store, run, spark, tmp_path, reads,
                                                                       monkeypatch):
    """A link checked over the whole table (no earlier evaluation, or its parent changed) is
    counted by Arrow on delta-rs and by Spark's anti-join elsewhere: both equal a count made
    independently in SQL, and the sample shows offending rows."""
    from fitness_assets.assets.checks_lib import evaluate_checks
    from fitness_assets.assets.silver.checks import silver_checks

    stage(SimulatorConfig.tiny(seed=7, batches=1), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    run()
    for device in (987654321, 987654322):
        store.append(HEART_RATE, store.read(HEART_RATE).limit(1).selectExpr(
            f"{device} AS device_id", "time", "heartrate", "valid"))
    store.read(USERS).createOrReplaceTempView("users")
    store.read(HEART_RATE).createOrReplaceTempView("readings")
    expected = spark.sql("SELECT count(*) AS n FROM readings WHERE device_id NOT IN "
                         "(SELECT device_id FROM users WHERE device_id IS NOT NULL)").first()["n"]
    (check,) = [c for c in silver_checks if c.name == "device_id_in_users"]
    checked = store if reads == "arrow" else spark_reads(store)
    spark_reads_of_readings = _record_reads(monkeypatch, checked, HEART_RATE)
    result = evaluate_checks(checked, None, [check])[check.name]
    # by Arrow, the sample too: the readings are not read into Spark
    assert (spark_reads_of_readings == []) == (reads == "arrow"), spark_reads_of_readings
    assert not result.passed and result.metadata["offending_rows"].value == expected >= 2
    known = {r["device_id"] for r in store.read(USERS).collect()}
    sample = result.metadata["sample"].value
    assert 0 < len(sample) <= SAMPLE_ROWS and all(r["device_id"] not in known for r in sample)
    # whole rows of the table (every column), each one of its offending rows
    readings = {(r["device_id"], str(r["time"])[:19]) for r in store.read(HEART_RATE).collect()}
    assert all(set(r) == set(HEART_RATE.column_names) and (r["device_id"], r["time"][:19]) in readings
               for r in sample), sample


@pytest.mark.parametrize("reads", ["arrow", "spark"])
@pytest.mark.parametrize("feed", ["change feed", "append-only"])
def test_keys_unique_counts_the_duplicates_among_keys_written_since(store, reads, feed):
    """`keys_unique` after a pass looks up the keys written since in the table (only its
    stretch of their range when clustered by a key): duplicates of the earliest and latest
    stored keys, a key written twice in one commit, and nothing for an update (whose pre- and
    post-images share a key), by Arrow on delta-rs and by Spark elsewhere, from the change
    data feed or from the appended files."""
    import datetime as dt

    import pyarrow as pa

    from fitness_assets.assets.checks_lib import Scope, evaluate_checks
    from fitness_assets.lakehouse.store import Clause, Merge
    from fitness_assets.tables import STRING, TIMESTAMP

    spec = TableSpec(layer="test", name="events", columns=(("k", LONG), ("t", TIMESTAMP), ("v", STRING)),
                     description="t", keys=("k", "t"), not_null=("k", "t"), cluster_by="t",
                     change_data_feed=feed == "change feed")
    (check,) = key_checks(spec)
    checked = store if reads == "arrow" else spark_reads(store)
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

    def rows(*pairs):
        return pa.table({"k": [k for k, _ in pairs], "t": [t0 + dt.timedelta(hours=h) for _, h in pairs],
                         "v": ["x"] * len(pairs)}, schema=spec.schema)

    def since(version):
        return evaluate_checks(checked, None, [check], {check.name: Scope(version)})[check.name]

    store.append(spec, rows((1, 1), (2, 2), (3, 3), (4, 4)))
    assert since(-1).passed
    v = store.version(spec)
    store.append(spec, rows((5, 5)))
    assert since(v).passed and since(v).metadata["offending_rows"].value == 0
    v = store.version(spec)
    store.append(spec, rows((1, 1), (4, 4), (6, 6), (6, 6)))  # the earliest and latest again, one twice
    failed = since(v)
    assert not failed.passed and failed.metadata["offending_rows"].value == 3
    if feed == "change feed":  # an update writes a post-image of a stored key: no duplicate
        store.overwrite(spec, rows((1, 1), (2, 2), (3, 3), (4, 4), (5, 5)))
        v = store.version(spec)
        store.merge(spec, rows((2, 2)), Merge("t.k = s.k AND t.t = s.t", (Clause("update_all"),)))
        assert since(v).passed


@pytest.mark.parametrize("feed", ["change feed", "append-only"])
def test_a_condition_counts_the_offending_rows_written_and_removed_since(store, spark, feed):
    """A row rule after a pass counts the offending rows written since, less those deleted or
    replaced (the change feed's pre-images), on top of the count carried over: equal to a count
    of the whole table made independently in SQL."""
    import pyarrow as pa

    from fitness_assets.assets.checks_lib import Scope, evaluate_checks, rule_check
    from fitness_assets.lakehouse.store import Clause, Merge
    from fitness_assets.tables import STRING

    spec = TableSpec(layer="test", name="ranges", columns=(("k", LONG), ("lo", LONG), ("hi", LONG), ("note", STRING)),
                     description="t", keys=("k",), not_null=("k",), change_data_feed=feed == "change feed")
    check = rule_check(spec, "lo_below_hi", "lo > hi OR note = 'bad'", "t")

    def rows(*triples):
        return pa.table({"k": [t[0] for t in triples], "lo": [t[1] for t in triples], "hi": [t[2] for t in triples],
                         "note": [t[3] if len(t) > 3 else None for t in triples]}, schema=spec.schema)

    def whole() -> int:
        store.read(spec).createOrReplaceTempView("ranges")
        return spark.sql("SELECT count(*) AS n FROM ranges WHERE lo > hi OR note = 'bad'").first()["n"]

    def since(version, carried):
        result = evaluate_checks(store, None, [check], {check.name: Scope(version, carried)})[check.name]
        return result.metadata["offending_rows"].value

    store.append(spec, rows((1, 1, 2), (2, 5, 3), (3, 1, 9)))
    v, count = store.version(spec), whole()
    assert count == 1
    store.append(spec, rows((4, 7, 1), (5, 0, 1), (6, 0, 1, "bad")))
    assert since(v, count) == whole() == 3
    if feed == "change feed":  # repair one offending row (an update) and delete another
        v, count = store.version(spec), whole()
        store.merge(spec, rows((2, 1, 3), (4, 7, 1)), Merge("t.k = s.k", (Clause("update_all", "s.k = 2"),
                                                                         Clause("delete", "s.k = 4"))))
        assert since(v, count) == whole() == 1


@pytest.mark.parametrize("feed", ["change feed", "append-only"])
def test_a_carried_failure_keeps_its_sample_until_an_offending_row_is_written_or_removed(store, feed, monkeypatch):
    """While no offending row is written or removed, the offending rows are those of the last
    evaluation: its sample is kept and the table is not read for a new one. A new offending
    row is shown from the rows written since; once one is removed, the sample is taken again
    (it may have shown the removed row)."""
    import pyarrow as pa

    from fitness_assets.assets.checks_lib import Scope, evaluate_checks, rule_check
    from fitness_assets.lakehouse.store import Clause, Merge

    spec = TableSpec(layer="test", name="spans", columns=(("k", LONG), ("lo", LONG), ("hi", LONG)),
                     description="t", keys=("k",), not_null=("k",), change_data_feed=feed == "change feed")
    check = rule_check(spec, "lo_below_hi", "lo > hi", "t")

    def rows(*triples):
        return pa.table({name: [t[i] for t in triples] for i, name in enumerate(("k", "lo", "hi"))}, schema=spec.schema)

    def since(version, carried, sample):
        result = evaluate_checks(store, None, [check], {check.name: Scope(version, carried, sample=sample)})[check.name]
        return result.metadata["offending_rows"].value, sorted(r["k"] for r in result.metadata["sample"].value)

    store.append(spec, rows((1, 5, 3), (2, 6, 1), (3, 0, 1)))
    first = evaluate_checks(store, None, [check])[check.name]
    sample = first.metadata["sample"].value
    assert sorted(r["k"] for r in sample) == [1, 2]

    v, reads = store.version(spec), _record_reads(monkeypatch, store, spec)
    store.append(spec, rows((4, 0, 9)))  # nothing offending written
    assert since(v, 2, sample) == (2, [1, 2])
    assert None not in reads, "the table was read for a sample the last evaluation already took"

    v = store.version(spec)
    store.append(spec, rows((5, 9, 1)))  # a new offending row: shown from the rows written since
    assert since(v, 2, sample) == (3, [5])
    if feed == "change feed":  # an offending row shown in the sample is deleted: the sample is taken again
        v = store.version(spec)
        store.merge(spec, rows((1, 0, 0)), Merge("t.k = s.k", (Clause("delete"),)))
        assert since(v, 3, sample) == (2, [2, 5])


def test_a_sample_collected_through_spark_shows_utc_times_whatever_the_process_zone(spark):
    """PySpark hands a timestamp back as a naive datetime in the process's zone, whatever the
    session's zone: on a machine in Berlin a reading at 10:05 UTC came out as '11:05:00'."""
    import datetime as dt
    import os
    import time

    from fitness_assets.assets.checks_lib import result_from_offenders

    rows = spark.createDataFrame([(dt.datetime(2024, 1, 1, 10, 5, tzinfo=dt.UTC), 7)], "time timestamp, device_id long")
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    try:
        result = result_from_offenders(rows, 1)
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()
    assert result.metadata["sample"].value == [{"time": "2024-01-01 10:05:00+00:00", "device_id": 7}]
