"""Checks that compare two tables (a finer table and its summary, a table and the one it is
made from) are evaluated only when both hold the same upstream data. Automation refreshes a
table as soon as its own upstreams moved, so a run may refresh one while the other is still
behind (in another run, not selected, held back): the comparison then says which ran last, not
that either table is wrong. Such a check is not evaluated (Dagster shows it skipped; it does
not gate downstream assets) and the table's next refresh evaluates it."""

import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetKey

from fitness_assets.assets import checks_lib
from fitness_assets.assets.gold import gold_checks
from fitness_assets.definitions import ALL_ASSETS_JOB, ASSETS, build_definitions, table_upstreams
from fitness_assets.lakehouse.incremental import out_of_step, progress_app_id
from fitness_assets.resources import LakehouseResource, SparkResource
from fitness_assets.simulator import SimulatorConfig
from fitness_assets.tables import (
    ALL_TABLES,
    GYM_LOGS,
    GYM_OCCUPANCY,
    WORKOUT_BPM,
    WORKOUT_BPM_SUMMARY,
    WORKOUT_PERFORMANCE,
    WORKOUT_ZONES,
)
from fitness_assets_tests.conftest import TEST_SPARK
from fitness_assets_tests.helpers import deliver, stage

UPSTREAMS = table_upstreams(ASSETS)
ZONES_CHECK = "matches_summary_per_workout"
PERFORMANCE_CHECK = "matches_workout_bpm_summary"


def _materialize(defs, instance, specs):
    """Materialize ``specs`` with their checks, in process, as a user would select them."""
    job = defs.resolve_job_def(ALL_ASSETS_JOB)
    return job.execute_in_process(instance=instance, asset_selection=[AssetKey(s.asset_key_path) for s in specs],
                                  raise_on_error=False)


def _evaluated(result, spec) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()
            if e.asset_key == AssetKey(spec.asset_key_path)}


def _graph_done(settings, run, tmp_path, then_deliver: bool = True):
    """The whole graph on the first batch; the second batch then delivered (not yet ingested),
    or the whole graph on both batches."""
    stage(SimulatorConfig.tiny(seed=11, batches=2), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing", batch=0 if then_deliver else None)
    run()
    if then_deliver:
        deliver(tmp_path / "staging", tmp_path / "landing", batch=1)
    return build_definitions(settings, TEST_SPARK)


def test_every_edge_of_the_table_graph_records_its_progress(settings, store, run, tmp_path):
    """The graph the comparisons are judged on is the one progress is recorded on: after a
    full run, every silver and gold table has taken in exactly its upstreams' versions, and
    every pair of tables a check compares is in step."""
    stage(SimulatorConfig.tiny(seed=12, batches=1), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    run()
    tables = {t.qualified_name: t for t in ALL_TABLES}
    assert {tables[n].layer for n in UPSTREAMS} == {"silver", "gold"}
    assert sum(len(p) for p in UPSTREAMS.values()) >= 18
    for name, parents in UPSTREAMS.items():
        for parent in parents:
            assert store.transaction_version(tables[name], progress_app_id(tables[name], parent)) \
                == store.version(parent), (name, parent.qualified_name)
    compared = [(c.table, t) for c in gold_checks for t in c.reads if t != c.table and c.link is None]
    assert len(compared) >= 9
    for table, other in compared:
        assert out_of_step(store, table, other, UPSTREAMS) is None, (table.qualified_name, other.qualified_name)


def test_a_comparison_with_a_table_still_behind_is_not_evaluated_then_is_once_in_step(
        settings, store, run, dagster_instance, tmp_path):
    defs = _graph_done(settings, run, tmp_path)
    # A run that refreshes the workout zones (and what they are made from) while the summary
    # stays behind: the automation condition does this when the summary is in another run.
    everything_but_summary = [t for t in ALL_TABLES if t != WORKOUT_BPM_SUMMARY]
    first = _materialize(defs, dagster_instance, everything_but_summary)
    assert first.success
    assert store.transaction_version(WORKOUT_ZONES, progress_app_id(WORKOUT_ZONES, WORKOUT_BPM)) \
        > store.transaction_version(WORKOUT_BPM_SUMMARY, progress_app_id(WORKOUT_BPM_SUMMARY, WORKOUT_BPM))
    zones, performance = _evaluated(first, WORKOUT_ZONES), _evaluated(first, WORKOUT_PERFORMANCE)
    assert ZONES_CHECK not in zones and PERFORMANCE_CHECK not in performance
    assert zones["zones_within_workout"].passed  # the table's own rules are evaluated
    assert performance["matches_completed_workouts"].passed  # in step with completed_workouts
    # Downstream of the skipped blocking check was not held back.
    assert store.transaction_version(WORKOUT_PERFORMANCE, progress_app_id(WORKOUT_PERFORMANCE, WORKOUT_ZONES)) \
        == store.version(WORKOUT_ZONES)
    why = out_of_step(store, WORKOUT_ZONES, WORKOUT_BPM_SUMMARY, UPSTREAMS)
    assert why is not None and "gold.workout_bpm_summary" in why
    assert any(f"{ZONES_CHECK} not evaluated: {why}" in (e.user_message or "")
               for e in dagster_instance.all_logs(first.run_id))
    from fitness_assets.cli import _outcome  # and the CLI's report says which were not

    assert {f"gold/workout_zones :: {ZONES_CHECK}", f"gold/workout_performance :: {PERFORMANCE_CHECK}"} \
        <= set(_outcome(first)["not_evaluated"])
    # Evaluated anyway, the comparison would have failed: the summary lacks the new workouts.
    [zones_check] = [c for c in gold_checks if c.table == WORKOUT_ZONES and c.name == ZONES_CHECK]
    lakehouse = LakehouseResource(spark=SparkResource(), root=settings.lakehouse_root,
                                  landing_root=settings.landing_root)
    assert not checks_lib.evaluate_checks(store, lakehouse, [zones_check])[ZONES_CHECK].passed

    assert _materialize(defs, dagster_instance, [WORKOUT_BPM_SUMMARY]).success
    assert out_of_step(store, WORKOUT_ZONES, WORKOUT_BPM_SUMMARY, UPSTREAMS) is None
    later = _materialize(defs, dagster_instance, [WORKOUT_ZONES, WORKOUT_PERFORMANCE])
    assert later.success
    assert _evaluated(later, WORKOUT_ZONES)[ZONES_CHECK].passed
    assert _evaluated(later, WORKOUT_PERFORMANCE)[PERFORMANCE_CHECK].passed
    assert _outcome(later)["not_evaluated"] == []


def test_a_table_behind_the_one_it_is_made_from_is_out_of_step_until_refreshed(settings, store, run,
                                                                               dagster_instance, tmp_path):
    defs = _graph_done(settings, run, tmp_path)
    bronze = [t for t in ALL_TABLES if t.layer in ("bronze", "quarantine")]
    assert _materialize(defs, dagster_instance, [*bronze, GYM_LOGS]).success
    why = out_of_step(store, GYM_OCCUPANCY, GYM_LOGS, UPSTREAMS)
    assert why is not None and "silver.gym_logs" in why
    result = _materialize(defs, dagster_instance, [GYM_OCCUPANCY])
    assert result.success and _evaluated(result, GYM_OCCUPANCY)["matches_gym_logs"].passed


def test_a_real_difference_fails_once_the_tables_stop_moving(settings, store, run, dagster_instance, tmp_path,
                                                              monkeypatch):
    """A comparison that fails while the other table committed during it is not reported (it
    may have read two states); evaluated again on still tables, the failure is reported."""
    defs = _graph_done(settings, run, tmp_path, then_deliver=False)
    zones = store.to_arrow(WORKOUT_ZONES, store.read(WORKOUT_ZONES))
    first = zones.column("workout_id")[0]
    bumped = pc.if_else(pc.equal(zones.column("workout_id"), first), pc.add(zones.column("max_bpm"), 1),
                        zones.column("max_bpm"))
    store.overwrite(WORKOUT_ZONES, zones.set_column(zones.schema.get_field_index("max_bpm"), "max_bpm", bumped))
    evaluate = checks_lib.evaluate_checks

    def another_run_commits_to_the_summary(*args, **kwargs):
        results = evaluate(*args, **kwargs)
        store.append(WORKOUT_BPM_SUMMARY, pa.Table.from_pylist([], schema=WORKOUT_BPM_SUMMARY.schema))
        return results

    monkeypatch.setattr(checks_lib, "evaluate_checks", another_run_commits_to_the_summary)
    moved = _materialize(defs, dagster_instance, [WORKOUT_ZONES])
    assert moved.success and ZONES_CHECK not in _evaluated(moved, WORKOUT_ZONES)
    monkeypatch.setattr(checks_lib, "evaluate_checks", evaluate)
    still = _materialize(defs, dagster_instance, [WORKOUT_ZONES])
    assert not still.success
    failed = _evaluated(still, WORKOUT_ZONES)[ZONES_CHECK]
    assert not failed.passed and failed.metadata["offending_rows"].value >= 1
