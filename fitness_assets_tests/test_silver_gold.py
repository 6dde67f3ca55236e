"""Silver and gold through Dagster: batch-split invariance, an independent check of the gold
numbers, blocking checks and crash/retry (real Spark, real Delta tables).

``make test`` runs the tests marked ``connect`` a second time on Spark Connect
(FITNESS_TEST_SPARK=connect): one batch split, the gold numbers and the blocking check keep that
run near 7 minutes; the other two splits and the crash/retry tests (delta-rs commits and app
transactions, the same whichever Spark computed the rows) run on local Spark only."""

import datetime as dt
import os
import shutil

import pytest

from fitness_assets.simulator import SimulatorConfig
from fitness_assets.tables import (
    COMPLETED_WORKOUTS,
    GOLD_TABLES,
    GYM_SUMMARY,
    HEART_RATE,
    SILVER_TABLES,
    USERS,
    WORKOUT_BPM,
    WORKOUT_BPM_SUMMARY,
    WORKOUTS,
)
from fitness_assets_tests.helpers import deliver, stage, table_rows, versions
from fitness_assets_tests.reference_impl import expected_gold

DERIVED = (*SILVER_TABLES, *GOLD_TABLES)
REFERENCE = dt.date(2024, 1, 1)  # the `settings` fixture's FITNESS_REFERENCE_DATE


def _snapshot(store):
    return {spec.qualified_name: table_rows(store, spec) for spec in DERIVED}


def _fresh_lakehouse(settings, tmp_path, name):
    """Point the same test at a second, empty lakehouse (the landing zone is shared)."""
    os.environ["FITNESS_LAKEHOUSE_ROOT"] = str(tmp_path / name)


@pytest.mark.slow
@pytest.mark.parametrize("seed,batches,split,compact", [
    (1, 4, "random", False), (2, 3, "time", False), (5, 3, "random", True),
    pytest.param(13, 3, "random", False, marks=pytest.mark.connect)])
def test_batch_split_invariance(seed, batches, split, compact, tmp_path, spark, dagster_instance):
    """One batch or many (starts and stops apart, late readings and registrations, profile
    changes out of order, duplicates): the same silver and gold tables. With ``compact``, the
    daily compaction job runs after every batch of the split run, so each increment after the
    first reads tables whose files it rewrote."""
    from deltalake import DeltaTable

    from fitness_assets.automation.maintenance import COMPACT_JOB
    from fitness_assets.cli import run_graph
    from fitness_assets.definitions import build_definitions
    from fitness_assets.lakehouse.store import DeltaRsTableStore
    from fitness_assets.settings import Settings
    from fitness_assets_tests.conftest import TEST_SPARK

    staging = tmp_path / "staging"
    truth = stage(SimulatorConfig.tiny(seed=seed, batches=batches, split=split, members=6), staging)
    results = {}
    for mode in ("single", "split"):
        settings = Settings.from_env({"FITNESS_LANDING_ROOT": str(tmp_path / mode / "landing"),
                                      "FITNESS_LAKEHOUSE_ROOT": str(tmp_path / mode / "lake"),
                                      "FITNESS_REFERENCE_DATE": REFERENCE.isoformat()})
        store = DeltaRsTableStore(settings.lakehouse_root, lambda: spark)
        for batch in ([None] if mode == "single" else range(batches)):
            deliver(staging, tmp_path / mode / "landing", batch)
            report = run_graph([], settings, TEST_SPARK, instance=dagster_instance)
            assert report.success, report.render()
            if compact and mode == "split":
                job = build_definitions(settings, TEST_SPARK).resolve_job_def(COMPACT_JOB)
                assert job.execute_in_process(instance=dagster_instance).success
        results[mode] = _snapshot(store)
        if compact and mode == "split":  # each batch's writes were compacted: one file per table left
            tables = [DeltaTable(store.location(spec)) for spec in DERIVED]
            assert all(len(table.file_uris()) <= 1 for table in tables)
            assert any(h["operation"] == "OPTIMIZE" for table in tables for h in table.history())
    assert results["split"] == results["single"]
    single = results["single"]
    assert len(single["silver.users"]) == truth.counts.members
    assert len(single["silver.heart_rate"]) == truth.counts.bpm_readings
    assert len(single["silver.completed_workouts"]) == truth.counts.workouts_completed
    assert len(single["silver.workout_bpm"]) == truth.counts.workout_bpm_readings
    assert len(single["silver.user_profile"]) == truth.counts.members - truth.counts.profile_deletes
    assert len(single["gold.workout_bpm_summary"]) > 0 and len(single["gold.gym_summary"]) > 0


def _close(a, b, tol=1e-9):
    return a == b or (isinstance(a, float) and isinstance(b, float) and abs(a - b) <= tol)


def _assert_rows_equal(actual: list[dict], expected: list[dict], key: tuple[str, ...], tolerances: dict[str, float]):
    by_key = {tuple(r[k] for k in key): r for r in actual}
    assert sorted(by_key) == sorted(tuple(r[k] for k in key) for r in expected)
    for row in expected:
        got = by_key[tuple(row[k] for k in key)]
        for column, value in row.items():
            assert _close(got[column], value, tolerances.get(column, 1e-9)), (column, got, row)


@pytest.mark.connect
def test_gold_numbers_match_an_independent_implementation(settings, store, run, tmp_path):
    stage(SimulatorConfig.tiny(seed=21, members=6), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    report = run()
    expected = expected_gold(settings.lakehouse_root, REFERENCE)
    summary = [r.asDict() for r in store.read(WORKOUT_BPM_SUMMARY).collect()]
    gym = [r.asDict() for r in store.read(GYM_SUMMARY).collect()]
    assert expected["workout_bpm_summary"] and expected["gym_summary"]
    # avg_bpm is an exact decimal mean of readings taken at 6 decimals.
    _assert_rows_equal(summary, expected["workout_bpm_summary"], ("user_id", "workout_id", "session_id"),
                       {"avg_bpm": 1e-6})
    # Spark rounds minutes to 2 decimals; the reference keeps them exact.
    _assert_rows_equal(gym, expected["gym_summary"], ("mac_address", "gym", "date", "workout_id", "session_id"),
                       {"minutes_in_gym": 0.005, "minutes_exercising": 0.005})
    assert any(k.startswith("workouts completed") for k in report.headlines)


@pytest.mark.connect
def test_a_failing_blocking_check_stops_downstream_assets(settings, store, run, tmp_path):
    staging = tmp_path / "staging"
    stage(SimulatorConfig.tiny(seed=4, batches=2, split="random"), staging)
    deliver(staging, tmp_path / "landing", 0)
    run()
    # Bad data in silver: a workout that ends before it starts.
    bad = store.read(COMPLETED_WORKOUTS).limit(1).selectExpr(
        "user_id", "99999 AS workout_id", "session_id", "end_time AS start_time", "start_time AS end_time")
    assert bad.count() == 1
    store.append(COMPLETED_WORKOUTS, bad)
    deliver(staging, tmp_path / "landing", 1)
    before = versions(store)
    report = run(expect_success=False)
    failed = [c for c in report.checks if not c.passed]
    assert ("silver/completed_workouts", "ends_after_start") in {(c.asset, c.check) for c in failed}
    after = versions(store)
    assert after[WORKOUTS.qualified_name] > before[WORKOUTS.qualified_name]  # upstream did refresh
    downstream = _downstream_tables(COMPLETED_WORKOUTS)
    assert WORKOUT_BPM in downstream and GYM_SUMMARY in downstream
    for spec in downstream:  # downstream of the failed check did not
        assert after[spec.qualified_name] == before[spec.qualified_name], spec.qualified_name


def _downstream_tables(spec):
    """The tables whose assets depend, directly or not, on ``spec``'s asset."""
    from dagster import AssetKey, AssetSelection

    from fitness_assets.definitions import build_definitions

    graph = build_definitions().resolve_asset_graph()
    keys = AssetSelection.assets(AssetKey(spec.asset_key_path)).downstream(include_self=False).resolve(graph)
    return [t for t in (*SILVER_TABLES, *GOLD_TABLES) if AssetKey(t.asset_key_path) in keys]


@pytest.mark.parametrize("table", [HEART_RATE, WORKOUT_BPM_SUMMARY])
def test_a_crash_after_a_silver_or_gold_commit_then_a_retry_gives_the_clean_result(table, settings, store, run,
                                                                                    tmp_path, fault_after_commit):
    stage(SimulatorConfig.tiny(seed=8), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    fault_after_commit(table)
    crashed = run(expect_success=False)
    assert crashed.failed_steps == [f"{table.layer}__{table.name}"]
    fault_after_commit.disarm()
    version_after_crash = store.version(table)
    run()
    assert store.version(table) == version_after_crash  # the retry found its input already applied
    retried = _snapshot(store)
    clean_root = tmp_path / "clean"
    shutil.rmtree(clean_root, ignore_errors=True)
    from fitness_assets.lakehouse.store import DeltaRsTableStore

    clean_settings = type(settings)(**{**settings.__dict__, "lakehouse_root": str(clean_root)})
    from fitness_assets.cli import run_graph
    from fitness_assets_tests.conftest import TEST_SPARK

    assert run_graph([], clean_settings, TEST_SPARK).success
    assert retried == _snapshot(DeltaRsTableStore(str(clean_root), lambda: store.spark))
    assert len(retried[USERS.qualified_name]) > 0


def test_a_table_made_again_is_refused_downstream_until_a_rebuild_and_a_run_with_nothing_new_is_quiet(
        settings, store, run, dagster_instance, tmp_path, caplog):
    """Deleting a silver table and running again used to leave what reads it silently behind
    (its progress a version of the old table); the refreshes that read it now fail saying what
    to do, and ``fitness-assets rebuild`` gives the same tables as the first run."""
    import logging

    from fitness_assets.cli import rebuild_graph
    from fitness_assets.tables import USER_BINS, USER_PROFILE, WORKOUT_ZONES
    from fitness_assets_tests.conftest import TEST_SPARK

    stage(SimulatorConfig.tiny(seed=8, members=6), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    first_report = run()
    first = _snapshot(store)

    with caplog.at_level(logging.WARNING):  # every check has a result to gate on: no warning per gated step
        quiet = run()  # nothing new: silver's and gold's checks are not evaluated again, their results kept
    later = [c for c in quiet.checks if c.asset.startswith(("silver/", "gold/"))]
    assert later and all(c.kept for c in later)
    assert {(c.asset, c.check, c.passed) for c in later} == {(c.asset, c.check, c.passed) for c in first_report.checks
                                                             if c.asset.startswith(("silver/", "gold/"))}
    assert "kept from an evaluation on the same data" in quiet.render()
    assert not [r for r in caplog.records if "emitted no result" in r.getMessage()]

    store.drop(USER_PROFILE)
    report = run(expect_success=False)
    assert set(report.failed_steps) == {"silver__user_bins", "gold__workout_zones"}
    for step, table in (("silver__user_bins", USER_BINS), ("gold__workout_zones", WORKOUT_ZONES)):
        assert f"silver.user_profile was deleted or made again after {table.qualified_name}" in report.failures[step]
        assert f"fitness-assets rebuild {table.layer}" in report.failures[step]

    rebuilt = rebuild_graph("silver", settings, TEST_SPARK, instance=dagster_instance)
    assert rebuilt.success, rebuilt.render()
    assert _snapshot(store) == first
