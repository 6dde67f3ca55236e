"""Bronze ingestion through Dagster on simulated landing data (real Spark, real Delta)."""

from collections import Counter

from deltalake import DeltaTable

from fitness_assets.pipelines.bronze import ingested_files
from fitness_assets.simulator import SimulatorConfig
from fitness_assets.tables import BRONZE_TABLES, DATE_LOOKUP, KAFKA_MULTIPLEX_BZ, QUARANTINE_TABLES
from fitness_assets_tests.helpers import BRONZE_SELECTION, SOURCES, deliver, stage, versions

PAIRS = dict(zip(SOURCES, zip(BRONZE_TABLES, QUARANTINE_TABLES, strict=True), strict=True))


def _quarantine_reasons(store, spec):
    return dict(Counter(r["reason"] for r in store.read(spec).select("reason").collect()))


def _assert_matches_truth(store, truth):
    for source, (bronze, quarantine) in PAIRS.items():
        expected = truth.sources[source]
        assert store.row_count(bronze) == expected.valid, source
        assert _quarantine_reasons(store, quarantine) == expected.quarantined, source
    per_topic = Counter(r["topic"] for r in store.read(KAFKA_MULTIPLEX_BZ).select("topic").collect())
    assert dict(per_topic) == truth.sources["kafka_multiplex"].valid_per_topic


def test_bronze_counts_equal_simulator_truth_and_checks_pass(settings, store, run, tmp_path):
    truth = stage(SimulatorConfig.tiny(seed=7), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    report = run(*BRONZE_SELECTION)
    _assert_matches_truth(store, truth)
    errors = [c for c in report.checks if c.severity == "ERROR" and not c.passed]
    assert not errors
    assert {c.check for c in report.checks} >= {"reconciled_with_landing", "date_resolved",
                                                "quarantine_volume", "complete_and_correct"}
    for spec in BRONZE_TABLES:  # the contract's columns, readable by any Delta reader
        assert DeltaTable(store.location(spec)).schema().to_arrow().names == spec.column_names


def test_every_anomaly_family_is_quarantined_with_its_reason(settings, store, run, tmp_path):
    truth = stage(SimulatorConfig.tiny(seed=11), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    run(*BRONZE_SELECTION)
    families = {reason.split(":")[0] for spec in QUARANTINE_TABLES for reason in _quarantine_reasons(store, spec)}
    assert families == {"malformed_csv", "malformed_json", "malformed_payload", "missing_field", "wrong_type",
                        "invalid_value"}
    rows = store.read(QUARANTINE_TABLES[2]).collect()
    assert all(r["raw"] and r["source_file"].startswith("kafka_multiplex/") and r["line"] >= 1 for r in rows)
    assert sum(truth.sources["kafka_multiplex"].quarantined.values()) == len(rows)


def test_a_second_batch_ingests_only_new_files_and_nothing_new_adds_no_version(settings, store, run, tmp_path):
    staging = tmp_path / "staging"
    truth = stage(SimulatorConfig.tiny(seed=3, batches=2), staging)
    first = deliver(staging, tmp_path / "landing", batch=0)
    run(*BRONZE_SELECTION)
    assert ingested_files(store, BRONZE_TABLES[2]) == {f for f in first if f.startswith("kafka_multiplex/")}
    second = deliver(staging, tmp_path / "landing", batch=1)
    assert second
    run(*BRONZE_SELECTION)
    _assert_matches_truth(store, truth)
    before = versions(store)
    run(*BRONZE_SELECTION)
    assert versions(store) == before


def test_a_large_backlog_is_taken_in_bounded_batches_over_several_runs(tmp_path, spark, dagster_instance):
    from fitness_assets.cli import run_graph
    from fitness_assets.lakehouse.store import DeltaRsTableStore
    from fitness_assets.settings import Settings
    from fitness_assets_tests.conftest import TEST_SPARK

    settings = Settings.from_env({
        "FITNESS_LANDING_ROOT": str(tmp_path / "landing"), "FITNESS_LAKEHOUSE_ROOT": str(tmp_path / "lake"),
        "FITNESS_MAX_FILES_PER_BATCH": "1", "FITNESS_MAX_BATCHES_PER_RUN": "2",
    })
    store = DeltaRsTableStore(settings.lakehouse_root, lambda: spark)
    truth = stage(SimulatorConfig.tiny(seed=5, batches=3), tmp_path / "staging")
    files = deliver(tmp_path / "staging", tmp_path / "landing")
    kafka_files = [f for f in files if f.startswith("kafka_multiplex/")]
    assert len(kafka_files) >= 3
    run_graph(["reference/date_lookup", "bronze/kafka_multiplex_bz"], settings, TEST_SPARK, instance=dagster_instance)
    assert len(ingested_files(store, KAFKA_MULTIPLEX_BZ)) == 2  # two one-file batches, the rest waits
    assert store.transaction_version(KAFKA_MULTIPLEX_BZ, "ingest:kafka_multiplex_bz") == 2
    while len(ingested_files(store, KAFKA_MULTIPLEX_BZ)) < len(kafka_files):
        run_graph(["bronze/kafka_multiplex_bz"], settings, TEST_SPARK, instance=dagster_instance)
    assert store.row_count(KAFKA_MULTIPLEX_BZ) == truth.sources["kafka_multiplex"].valid


def test_the_multiplex_alone_on_a_lakehouse_without_its_calendar_stops_in_one_line(settings, store, run, tmp_path,
                                                                                     dagster_instance):
    """Its records' dates come from reference/date_lookup: without the table they would be NULL
    for good. Materialized alone (as from the UI), the step stops before it takes anything in
    and says what to run; the CLI makes the missing calendar first, in the same run."""
    from dagster import AssetKey

    from fitness_assets.definitions import ALL_ASSETS_JOB, build_definitions
    from fitness_assets.progress import failure_reason
    from fitness_assets_tests.conftest import TEST_SPARK

    stage(SimulatorConfig.tiny(seed=9), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    job = build_definitions(settings, TEST_SPARK).resolve_job_def(ALL_ASSETS_JOB)
    result = job.execute_in_process(instance=dagster_instance, raise_on_error=False, asset_selection=[
        AssetKey(["bronze", "kafka_multiplex_bz"]), AssetKey(["quarantine", "kafka_multiplex_bz"])])
    (failed,) = [e for e in result.all_events if e.is_step_failure]
    assert failure_reason(failed.step_failure_data.error) == (
        "CalendarMissing: reference.date_lookup does not exist yet: materialize it with or before "
        "bronze.kafka_multiplex_bz (fitness-assets run --select reference/date_lookup,bronze/kafka_multiplex_bz)")
    assert not store.exists(KAFKA_MULTIPLEX_BZ)
    run("bronze/kafka_multiplex_bz")
    assert store.exists(DATE_LOOKUP) and store.read(KAFKA_MULTIPLEX_BZ).where("date IS NULL").count() == 0


def test_a_crash_after_the_commit_then_a_retry_changes_nothing(settings, store, run, tmp_path, fault_after_commit):
    truth = stage(SimulatorConfig.tiny(seed=9), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    fault_after_commit(KAFKA_MULTIPLEX_BZ)
    crashed = run(*BRONZE_SELECTION, expect_success=False)
    assert not crashed.success
    assert "bronze__kafka_multiplex_bz" in crashed.failed_steps
    fault_after_commit.disarm()
    committed = versions(store)
    rows = store.row_count(KAFKA_MULTIPLEX_BZ)
    assert rows == truth.sources["kafka_multiplex"].valid  # the data did land, once
    run(*BRONZE_SELECTION)
    assert store.row_count(KAFKA_MULTIPLEX_BZ) == rows
    assert versions(store)[KAFKA_MULTIPLEX_BZ.qualified_name] == committed[KAFKA_MULTIPLEX_BZ.qualified_name]
    _assert_matches_truth(store, truth)


def test_a_report_that_cannot_read_the_tables_still_gives_the_run_outcome(settings, run, tmp_path, monkeypatch):
    """Spark gone after the steps (a Connect server that stopped): the report still lists the
    steps' failures and the checks, says why tables and headlines are missing, and that the
    report is incomplete (the CLI's exit code 1), not that the run failed; no traceback instead
    of a report."""
    import fitness_assets.headlines as headlines

    def gone(*_):
        raise RuntimeError("the Spark Connect server at sc://127.0.0.1:1 stopped answering")

    stage(SimulatorConfig.tiny(seed=9), tmp_path / "staging")
    deliver(tmp_path / "staging", tmp_path / "landing")
    monkeypatch.setattr(headlines, "overview", gone)
    report = run(*BRONZE_SELECTION, expect_success=False)
    assert report.success and not report.complete and not report.ok and report.checks and not report.tables
    assert report.render().startswith("Run succeeded in ") and "; its report is incomplete\n" in report.render()
    assert report.failures == {"(report)": "tables, quarantine and headlines not read: RuntimeError: the Spark "
                                           "Connect server at sc://127.0.0.1:1 stopped answering"}
    assert "(report): tables, quarantine and headlines not read" in report.render()


def test_a_cli_run_is_not_held_to_the_daemons_run_time_limit(run, dagster_instance):
    """Run monitoring (on while the daemon runs) marks a run older than the instance's limit (an
    hour) failed, while a CLI run in it still writes, and frees the run slot for a daemon run
    beside it. A CLI run carries no limit: Dagster's own check leaves it alone."""
    import logging

    from dagster._daemon.monitoring.run_monitoring import check_run_timeout

    run("reference/date_lookup")
    (record,) = dagster_instance.get_run_records(limit=1)
    check_run_timeout(dagster_instance, record, logging.getLogger(__name__), default_timeout_seconds=1e-6)
    assert dagster_instance.get_run_by_id(record.dagster_run.run_id).status.value == "SUCCESS"
