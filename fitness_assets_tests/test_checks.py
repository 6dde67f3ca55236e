"""Checks run as one step per table: nothing is evaluated again on unchanged data (no Spark
job at all for an asset and its checks when nothing changed upstream), row rules look at the
rows written since the last passing evaluation, and an earlier failure is always re-evaluated."""

from dagster import AssetKey

from fitness_assets.assets.checks_lib import SINCE_KEY
from fitness_assets.definitions import ALL_ASSETS_JOB, build_definitions
from fitness_assets.simulator import SimulatorConfig
from fitness_assets.tables import COMPLETED_WORKOUTS, USERS
from fitness_assets_tests.conftest import TEST_SPARK, skip_on_connect
from fitness_assets_tests.helpers import deliver, stage


def _spark_jobs(spark) -> int:
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup())


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
    assert {c.check for c in first.checks if c.asset == "silver/users"} >= {"keys_unique", "keys_not_null"}
    defs = build_definitions(settings, TEST_SPARK)
    version = store.version(USERS)

    before = _spark_jobs(spark)
    result = _run_one(defs, dagster_instance, USERS)
    assert result.success
    assert _spark_jobs(spark) == before, "a run with nothing new upstream started Spark jobs"
    assert store.version(USERS) == version
    assert result.get_asset_check_evaluations() == []  # kept from the evaluation on this very data
    [materialization] = [e.materialization for e in result.get_asset_materialization_events()
                         if e.materialization.asset_key == AssetKey(USERS.asset_key_path)]
    assert materialization.metadata["rows_changed"].value == 0


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

    for attempt in range(2):  # the table does not change between the two: the failure is evaluated both times
        result = _run_one(defs, dagster_instance, COMPLETED_WORKOUTS)
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        failed = evaluations["ends_after_start"]
        assert not failed.passed
        assert failed.metadata["offending_rows"].value == 1
        if attempt == 0:  # after a passing evaluation, only the rows written since are read
            assert failed.metadata[SINCE_KEY].value == f"written after version {passed_at}"
        else:  # after a failure, the whole table
            assert failed.metadata[SINCE_KEY].value == "whole table"
        assert evaluations["keys_unique"].passed


def test_a_table_deleted_and_built_again_is_checked_again_in_full(settings, store, run, dagster_instance, tmp_path):
    """Delta versions restart when a table is made again (the README's way to rebuild one): the
    checks tell the new table from the old by its Delta identity, not by the version number."""
    import shutil

    stage(SimulatorConfig.tiny(seed=5, batches=1), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    run()
    version, identity = store.version(USERS), store.table_id(USERS)
    shutil.rmtree(store.location(USERS))
    defs = build_definitions(settings, TEST_SPARK)
    result = _run_one(defs, dagster_instance, USERS)
    assert result.success
    assert store.version(USERS) == version, "the rebuilt table should reach the same version for this test"
    assert store.table_id(USERS) not in (None, identity)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {"keys_unique", "keys_not_null"} <= set(evaluations), "the checks of the new table were skipped"
    assert all(e.passed and e.metadata[SINCE_KEY].value == "whole table" for e in evaluations.values())
