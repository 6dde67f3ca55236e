"""Erasure is final: after a member's delete their personal data is gone from the tables'
current files at once, and from storage (old versions, change data) after the retention,
when the vacuum job runs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetKey

from fitness_assets.automation.maintenance import VACUUM_JOB
from fitness_assets.definitions import build_definitions
from fitness_assets.settings import Settings
from fitness_assets.tables import KAFKA_MULTIPLEX_QR, USER_PROFILE, USER_PROFILE_HISTORY
from fitness_assets_tests.conftest import TEST_SPARK

NAME, STREET = "Zebulonia", "77 Quixotic Lane"
SELECTION = ("reference/date_lookup", "bronze/kafka_multiplex_bz", "silver/user_profile_history",
             "silver/user_profile")


def _profile_change(offset: int, update_type: str, timestamp: int) -> str:
    payload = {"user_id": 4242, "update_type": update_type, "timestamp": timestamp, "dob": "02/03/1990",
               "sex": "F", "gender": "F", "first_name": NAME, "last_name": "Erasable",
               "address": {"street_address": STREET, "city": "Springfield", "state": "IL", "zip": 62701}}
    return json.dumps({"key": "4242", "value": json.dumps(payload), "topic": "user_info", "partition": 0,
                       "offset": offset, "timestamp": timestamp * 1000})


def _deliver(landing: Path, name: str, *lines: str) -> None:
    folder = landing / "kafka_multiplex"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n")


def _is_text(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype)


def _files_holding_the_person(lakehouse: Path, current_only: bool, store) -> list[str]:
    """Parquet files of the two profile tables (current snapshot, or everything in storage
    including old versions and change data) with a value equal to the member's name or street."""
    found = []
    for spec in (USER_PROFILE_HISTORY, USER_PROFILE):
        folder = lakehouse / spec.layer / spec.name
        files = ([Path(u.removeprefix("file://")) for u in store._table(spec).file_uris()] if current_only
                 else folder.rglob("*.parquet"))
        for path in files:
            table = pq.read_table(path)
            values = {v for column in table.column_names if _is_text(table.schema.field(column).type)
                      for v in table.column(column).to_pylist()}
            if NAME in values or STREET in values:
                found.append(str(path.relative_to(lakehouse)))
    return found


def test_a_delete_erases_at_once_and_the_vacuum_removes_the_old_files(settings, store, run, dagster_instance):
    landing, lakehouse = Path(settings.landing_root), Path(settings.lakehouse_root)
    # Besides the record, two lines quarantined: an array of the member's records, and another's.
    other = _profile_change(5, "new", 1_690_000_000).replace("4242", "5151")
    _deliver(landing, "batch-1.json", _profile_change(0, "new", 1_690_000_000),
             "[" + _profile_change(3, "update", 1_690_000_100) + "]", "[" + other + "]")
    run(*SELECTION)
    assert _files_holding_the_person(lakehouse, True, store)  # the member is there, as themselves
    quarantined = {r["line"]: r["raw"] for r in store.read(KAFKA_MULTIPLEX_QR).collect()}
    assert set(quarantined) == {2, 3} and NAME in quarantined[2]

    _deliver(landing, "batch-2.json", _profile_change(1, "delete", 1_690_100_000))
    run(*SELECTION)
    assert _files_holding_the_person(lakehouse, True, store) == []  # erased from what the tables show
    quarantined = {r["line"]: r["raw"] for r in store.read(KAFKA_MULTIPLEX_QR).collect()}
    assert quarantined[2] is None and "5151" in quarantined[3]  # the member's line, not the other's
    # The write shows on the quarantine table's page, with what it did.
    event = dagster_instance.get_latest_materialization_event(AssetKey(KAFKA_MULTIPLEX_QR.asset_key_path))
    written = event.asset_materialization
    assert written.description == "written by the refresh of silver.user_profile_history"
    assert written.metadata["erased_rows"].value == 1
    assert written.metadata["delta_version"].value == store.version(KAFKA_MULTIPLEX_QR)
    assert _files_holding_the_person(lakehouse, False, store)  # but still in files of older versions

    keep_a_week = build_definitions(settings, TEST_SPARK)
    keep_a_week.resolve_job_def(VACUUM_JOB).execute_in_process(instance=dagster_instance)
    assert _files_holding_the_person(lakehouse, False, store)  # inside the retention: kept

    no_retention = Settings.from_env({"FITNESS_LANDING_ROOT": settings.landing_root,
                                      "FITNESS_LAKEHOUSE_ROOT": settings.lakehouse_root,
                                      "FITNESS_REFERENCE_DATE": "2024-01-01",
                                      "FITNESS_ERASURE_RETENTION_HOURS": "0"})
    result = build_definitions(no_retention, TEST_SPARK).resolve_job_def(VACUUM_JOB).execute_in_process(
        instance=dagster_instance)
    assert result.success
    assert _files_holding_the_person(lakehouse, False, store) == []  # gone from storage
    history = store.read(USER_PROFILE_HISTORY).collect()
    assert history and all(r["first_name"] is None and r["street_address"] is None for r in history)
    assert store.row_count(USER_PROFILE) == 0


def test_change_data_vacuumed_before_a_reader_took_it_in_stops_the_reader_saying_rebuild(settings, store, run,
                                                                                           dagster_instance):
    """A retention shorter than a table lagged: the vacuum deleted change data its reader had
    not taken in yet. The reader stops in one line that says to rebuild (not a storage error),
    and a rebuild of its layer gives the tables a run from scratch gives."""
    from fitness_assets.cli import rebuild_graph

    landing = Path(settings.landing_root)
    _deliver(landing, "batch-1.json", _profile_change(0, "new", 1_690_000_000))
    run(*SELECTION)
    _deliver(landing, "batch-2.json", _profile_change(1, "delete", 1_690_100_000))
    run(*SELECTION[:3])  # user_profile lags one version of the history behind
    no_retention = Settings.from_env({"FITNESS_LANDING_ROOT": settings.landing_root,
                                      "FITNESS_LAKEHOUSE_ROOT": settings.lakehouse_root,
                                      "FITNESS_REFERENCE_DATE": "2024-01-01",
                                      "FITNESS_ERASURE_RETENTION_HOURS": "0"})
    build_definitions(no_retention, TEST_SPARK).resolve_job_def(VACUUM_JOB).execute_in_process(
        instance=dagster_instance)
    report = run("silver/user_profile", expect_success=False)
    assert report.failures["silver__user_profile"].startswith(
        "ChangesGone: the change data of silver.user_profile_history after version ")
    assert "run `fitness-assets rebuild <layer>` with the layer of the step that failed" in \
        report.failures["silver__user_profile"]
    assert rebuild_graph("silver", settings, TEST_SPARK, instance=dagster_instance).success
    assert store.row_count(USER_PROFILE) == 0  # the delete is in: the member is gone


def test_spark_deltas_missing_change_data_error_becomes_the_same_rebuild_line(settings, store, run):
    """Spark's Delta (Databricks) finds vacuumed change data missing only when the query runs,
    and says so by its error condition, which the refresh turns into the delta-rs store's
    ChangesGone. Spark's Delta does not run here: the error is the one Databricks Connect
    raises, the refresh and its planning are real."""
    import dataclasses

    import pytest
    from pyspark.errors.exceptions.connect import SparkConnectGrpcException

    from fitness_assets.lakehouse.store import ChangesGone
    from fitness_assets.pipelines import silver

    landing = Path(settings.landing_root)
    _deliver(landing, "batch-1.json", _profile_change(0, "new", 1_690_000_000))
    run(*SELECTION)
    _deliver(landing, "batch-2.json", _profile_change(1, "delete", 1_690_100_000))
    run(*SELECTION[:3])  # user_profile has a version of the history to take in

    def vacuumed(store, increment):
        raise SparkConnectGrpcException(
            "[FAILED_READ_FILE.DBR_FILE_NOT_EXIST] Error while reading file. [DELTA_CHANGE_DATA_FILE_NOT_FOUND] File "
            "_change_data/cdc-00000.snappy.parquet referenced in the transaction log cannot be found.",
            errorClass="FAILED_READ_FILE.DBR_FILE_NOT_EXIST")

    with pytest.raises(ChangesGone) as gone:
        dataclasses.replace(silver.user_profile, body=vacuumed)(store)
    assert "\n" not in str(gone.value) and str(gone.value).endswith("run `fitness-assets rebuild silver`")

    def other(store, increment):
        raise SparkConnectGrpcException("[DELTA_FILE_NOT_FOUND] a data file is missing", errorClass="DELTA_FILE_NOT_FOUND")

    with pytest.raises(SparkConnectGrpcException):  # any other error is left as it is
        dataclasses.replace(silver.user_profile, body=other)(store)


def test_appended_files_compacted_and_vacuumed_before_a_reader_took_them_in_say_rebuild(store):
    """An append (a first fill, a progress-only commit) has no change-data files: its change
    feed is its data files, which the hourly compaction replaces and the vacuum then deletes.
    A reader that lagged past them stopped on a raw Arrow error ("Failed to fetch metadata for
    file part-...parquet"); it now stops on the same rebuild line as for vacuumed change data."""
    import datetime as dt

    import pytest

    from fitness_assets.lakehouse.store import ChangesGone
    from fitness_assets.tables import USERS

    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for user in (1, 2, 3):
        store.append(USERS, pa.Table.from_pylist([{"user_id": user, "device_id": 10 + user, "mac_address": "aa",
                                                   "registration_timestamp": when}], schema=USERS.schema))
    assert store.read_changes(USERS, 0, store.version(USERS)).count() == 3  # appends: the feed is their files
    assert store.compact(USERS).removed == 3
    store.vacuum(USERS, 0)
    with pytest.raises(ChangesGone, match="run `fitness-assets rebuild <layer>`"):
        store.read_changes(USERS, 0, store.version(USERS) - 1)


def test_a_table_the_vacuum_cannot_open_does_not_keep_it_from_the_others(settings, store, dagster_instance):
    """The first vacuumed table's log is damaged: the job fails naming it, and the tables
    after it are vacuumed all the same (their erasures become final on the day)."""
    from fitness_assets.automation.maintenance import VACUUMED
    from fitness_assets.tables import USERS

    broken, lakehouse = VACUUMED[0], Path(settings.lakehouse_root)
    log = lakehouse / broken.layer / broken.name / "_delta_log"
    log.mkdir(parents=True)
    (log / "00000000000000000000.json").write_text("this is not a Delta log\n")
    row = {"user_id": 1, "device_id": 10, "mac_address": "aa:aa:aa:aa:aa:01",
           "registration_timestamp": pa.scalar(0, pa.timestamp("us", "UTC")).as_py()}
    store.append(USERS, pa.Table.from_pylist([row], schema=USERS.schema))
    store.overwrite(USERS, pa.Table.from_pylist([row], schema=USERS.schema))  # the first file is no longer used
    files = lambda: sorted(p.name for p in (lakehouse / USERS.layer / USERS.name).glob("*.parquet"))  # noqa: E731
    assert len(files()) == 2

    no_retention = Settings.from_env({"FITNESS_LANDING_ROOT": settings.landing_root,
                                      "FITNESS_LAKEHOUSE_ROOT": settings.lakehouse_root,
                                      "FITNESS_REFERENCE_DATE": "2024-01-01",
                                      "FITNESS_ERASURE_RETENTION_HOURS": "0"})
    result = build_definitions(no_retention, TEST_SPARK).resolve_job_def(VACUUM_JOB).execute_in_process(
        instance=dagster_instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.cause.message
    assert f"not vacuumed (erased data may still be in their old files): {broken.qualified_name};" in failure
    assert files() == [Path(u.removeprefix("file://")).name for u in store._table(USERS).file_uris()]  # vacuumed
