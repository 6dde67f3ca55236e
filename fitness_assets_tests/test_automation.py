"""Automation conditions of the real asset graph, evaluated tick by tick against a real
Dagster instance (`evaluate_automation_conditions`): what new upstream data, a run that
changed nothing, a failed blocking check and a freshness failure make the platform do."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    evaluate_automation_conditions,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.definitions.freshness import FreshnessState, FreshnessStateChange

from fitness_assets.definitions import build_definitions
from fitness_assets.settings import AutomationSettings
from fitness_assets.streaming.settings import KafkaSettings

USERS = AssetKey(["silver", "users"])
GYM_LOGS = AssetKey(["silver", "gym_logs"])
REGISTRATIONS = AssetKey(["bronze", "registered_users_bz"])
GYM_LOGINS = AssetKey(["bronze", "gym_logins_bz"])
GYM_SUMMARY = AssetKey(["gold", "gym_summary"])


@pytest.fixture
def defs(settings):
    return build_definitions(settings, kafka=KafkaSettings(), automation=AutomationSettings())


class Ticks:
    """Successive evaluations of the automation conditions, carrying the cursor."""

    def __init__(self, defs, instance):
        self.defs, self.instance, self.cursor = defs, instance, None
        self.time = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> set[AssetKey]:
        self.time += dt.timedelta(seconds=30)
        result = evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor,
                                                evaluation_time=self.time)
        self.cursor = result.cursor
        keys = self.defs.resolve_asset_graph().materializable_asset_keys
        return {key for key in keys if result.get_requested_partitions(key)}


def _materialize(instance, key: AssetKey, version: str) -> None:
    instance.report_runless_asset_event(AssetMaterialization(key, tags={DATA_VERSION_TAG: version}))


def _check(instance, defs, key: AssetKey, name: str, passed: bool) -> None:
    instance.report_runless_asset_event(AssetCheckEvaluation(
        asset_key=key, check_name=name, passed=passed, severity=AssetCheckSeverity.ERROR))


def _everything_materialized_and_checked(instance, defs) -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        _materialize(instance, key, "1")
    for check_key in graph.asset_check_keys:
        _check(instance, defs, check_key.asset_key, check_key.name, True)


def test_new_upstream_data_requests_the_tables_that_read_it_and_nothing_else(defs, dagster_instance):
    tick = Ticks(defs, dagster_instance)
    assert tick() == set()  # nothing materialized: every silver table misses an upstream
    _everything_materialized_and_checked(dagster_instance, defs)
    assert tick() == set()  # a first evaluation only records data versions
    assert tick() == set()

    _materialize(dagster_instance, REGISTRATIONS, "2")
    requested = tick()
    assert USERS in requested and GYM_SUMMARY in requested  # gold rides in the same run
    assert GYM_LOGS not in requested and AssetKey(["silver", "heart_rate"]) not in requested
    assert tick() == set()  # handled: nothing new, nothing requested


def test_a_fresh_graph_fills_in_one_run_once_bronze_has_data(defs, dagster_instance):
    tick = Ticks(defs, dagster_instance)
    assert tick() == set()
    graph = defs.resolve_asset_graph()
    ingested = [k for k in graph.materializable_asset_keys if k.path[0] in ("reference", "bronze", "quarantine")]
    for key in ingested:
        _materialize(dagster_instance, key, "0")
    for check_key in graph.asset_check_keys:
        if check_key.asset_key in ingested:
            _check(dagster_instance, defs, check_key.asset_key, check_key.name, True)
    requested = tick()
    assert requested == {k for k in graph.materializable_asset_keys if k.path[0] in ("silver", "gold")}


def test_tables_never_materialized_are_requested_when_bronze_was_filled_before_automation_started(
        defs, dagster_instance):
    """Bronze filled by hand (the CLI) before the first tick: no data version moves after it,
    but the silver and gold tables were never made, so the first tick requests them, once."""
    graph = defs.resolve_asset_graph()
    ingested = [k for k in graph.materializable_asset_keys if k.path[0] in ("reference", "bronze", "quarantine")]
    for key in ingested:
        _materialize(dagster_instance, key, "3")
    tick = Ticks(defs, dagster_instance)
    assert tick() == {k for k in graph.materializable_asset_keys if k.path[0] in ("silver", "gold")}
    assert tick() == set()  # requested once: a run is on its way (or failed: not asked again every tick)
    assert tick() == set()


def test_a_run_that_changed_nothing_triggers_nothing(defs, dagster_instance):
    tick = Ticks(defs, dagster_instance)
    _everything_materialized_and_checked(dagster_instance, defs)
    tick()
    _materialize(dagster_instance, REGISTRATIONS, "1")  # same Delta version: a no-op run
    assert tick() == set()
    _materialize(dagster_instance, REGISTRATIONS, "2")
    assert USERS in tick()


def test_a_failed_blocking_check_upstream_holds_the_refresh(defs, dagster_instance):
    tick = Ticks(defs, dagster_instance)
    _everything_materialized_and_checked(dagster_instance, defs)
    tick()
    _materialize(dagster_instance, GYM_LOGINS, "2")
    _check(dagster_instance, defs, GYM_LOGINS, "reconciled_with_landing", False)
    assert GYM_LOGS not in tick()
    _check(dagster_instance, defs, GYM_LOGINS, "reconciled_with_landing", True)
    assert GYM_LOGS in tick()  # the new data is still waiting: requested once the check passes


def _freshness(instance, key: AssetKey, state: FreshnessState) -> None:
    instance.report_runless_asset_event(FreshnessStateChange(
        key=key, new_state=state, previous_state=FreshnessState.PASS,
        state_change_timestamp=dt.datetime.now(dt.UTC).timestamp()))


def test_a_freshness_failure_requests_a_catch_up_unless_the_cause_is_upstream(defs, dagster_instance):
    tick = Ticks(defs, dagster_instance)
    _everything_materialized_and_checked(dagster_instance, defs)
    tick()
    _freshness(dagster_instance, GYM_LOGS, FreshnessState.FAIL)
    assert GYM_LOGS in tick()
    assert GYM_LOGS not in tick()  # once, not on every tick while it stays failed

    _freshness(dagster_instance, GYM_LOGINS, FreshnessState.FAIL)  # no data arriving upstream
    _freshness(dagster_instance, GYM_LOGS, FreshnessState.PASS)
    tick()
    _freshness(dagster_instance, GYM_LOGS, FreshnessState.FAIL)
    assert GYM_LOGS not in tick()


def test_every_table_has_a_freshness_policy_and_the_sources_are_on_the_graph(defs):
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        layer = key.path[0]
        if layer == "reference":
            continue
        assert node.freshness_policy is not None, key
        if layer in ("silver", "gold"):
            assert node.automation_condition.get_label() == "refresh_on_new_data", key
    sources = {k for k in graph.get_all_asset_keys() if k.path[0] in ("landing", "kafka")}
    assert sources == {AssetKey(["landing", s]) for s in ("registered_users", "gym_logins", "kafka_multiplex")} | {
        AssetKey(["kafka", t]) for t in ("user_info", "workout", "bpm")}
    assert set(graph.get(AssetKey(["bronze", "kafka_multiplex_bz"])).parent_keys) >= {
        AssetKey(["kafka", "bpm"]), AssetKey(["landing", "kafka_multiplex"])}


def test_freshness_windows_and_the_automation_switch_come_from_the_environment(settings):
    quiet = AutomationSettings.from_env({"FITNESS_AUTOMATION": "off", "FITNESS_FRESHNESS_GOLD_MINUTES": "3",
                                         "FITNESS_MICROBATCH_SECONDS": "7"})
    defs = build_definitions(settings, kafka=KafkaSettings(), automation=quiet)
    for sensor in defs.sensors:
        assert sensor.default_status.value == "STOPPED"
        assert sensor.minimum_interval_seconds == 7
    policy = defs.resolve_asset_graph().get(GYM_SUMMARY).freshness_policy
    assert policy.fail_window.to_timedelta() == dt.timedelta(minutes=3)
    assert policy.warn_window.to_timedelta() == dt.timedelta(minutes=1.5)
    running = build_definitions(settings, kafka=KafkaSettings(), automation=AutomationSettings.from_env({}))
    assert {s.default_status.value for s in running.sensors} == {"RUNNING"}
    with pytest.raises(ValueError, match="FITNESS_AUTOMATION"):
        AutomationSettings.from_env({"FITNESS_AUTOMATION": "sometimes"})


def test_a_refresh_that_only_records_its_progress_keeps_its_data_version(settings, run, store, dagster_instance,
                                                                          tmp_path):
    """A new member with no workout: the tables that read `users` but hold nothing of that
    member commit their progress on it (a commit of no rows, a new Delta version). Their data
    version stays, so automation sees no new data below them; `users` itself takes its new
    version. Real runs of the whole graph."""
    from pathlib import Path

    from fitness_assets.simulator import SimulatorConfig
    from fitness_assets.tables import ALL_TABLES
    from fitness_assets_tests.helpers import deliver, stage

    stage(SimulatorConfig.tiny(seed=5, batches=1), tmp_path / "staging")
    deliver(tmp_path / "staging", Path(settings.landing_root))
    run()
    tables = [t for t in ALL_TABLES if t.layer in ("silver", "gold")]

    def latest(spec):
        return dagster_instance.get_latest_materialization_event(AssetKey(spec.asset_key_path)).asset_materialization

    before = {t.qualified_name: latest(t) for t in tables}
    (Path(settings.landing_root) / "registered_users" / "late-member.csv").write_text(
        "user_id,device_id,mac_address,registration_timestamp\n990001,990001,aa:bb:cc:dd:ee:99,1690000000\n")
    run()
    progress_only = []
    for spec in tables:
        old, new = before[spec.qualified_name], latest(spec)
        moved = new.metadata["delta_version"].value > old.metadata["delta_version"].value
        if new.metadata["rows_changed"].value == 0:
            assert new.tags[DATA_VERSION_TAG] == old.tags[DATA_VERSION_TAG], spec.qualified_name
            progress_only += [spec.qualified_name] if moved else []
        else:
            assert new.tags[DATA_VERSION_TAG] == str(store.version(spec)) != old.tags[DATA_VERSION_TAG]
    assert progress_only, "no table recorded progress without rows: the test shows nothing"
    # The date its ages are computed at is on the asset's page, not only in the Delta log.
    bins = latest(next(t for t in tables if t.qualified_name == "silver.user_bins"))
    assert bins.metadata["reference_date"].value == "2024-01-01"
    assert latest(next(t for t in tables if t.qualified_name == "silver.users")).metadata["rows_changed"].value == 1


def test_new_upstream_data_is_requested_while_the_next_bronze_run_is_in_progress(defs, dagster_instance):
    """Under a steady stream the sensors' next bronze run is queued or running at almost every
    tick: the tables below must not wait for a moment with no bronze run in progress. The
    instance runs one run at a time, so the refresh runs after that bronze run, on committed
    data."""

    from dagster import DagsterRunStatus
    from dagster._core.execution.api import create_execution_plan

    from fitness_assets.definitions import ALL_ASSETS_JOB

    tick = Ticks(defs, dagster_instance)
    _everything_materialized_and_checked(dagster_instance, defs)
    tick()
    _materialize(dagster_instance, REGISTRATIONS, "2")
    bronze = {REGISTRATIONS, AssetKey(["quarantine", "registered_users_bz"])}
    job = defs.resolve_job_def(ALL_ASSETS_JOB).get_subset(asset_selection=bronze)
    # Started, not finished: its planned materializations make bronze in progress.
    dagster_instance.create_run_for_job(job, execution_plan=create_execution_plan(job),
                                        asset_selection=frozenset(bronze), status=DagsterRunStatus.STARTED)
    assert USERS in tick()
