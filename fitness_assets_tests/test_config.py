"""One configuration model: defaults in one place, the nested Spark resource, Unity Catalog
names per environment, and a second, different Spark session in one process refused."""

import os
import re

import pytest

from fitness_assets.definitions import build_resources
from fitness_assets.lakehouse.codegen import DEFAULT_COMPILE_FROM_ROWS
from fitness_assets.lakehouse.spark import (
    DEFAULT_MASTER,
    DRIVER_GC,
    QUICK_JIT,
    QUICK_JIT_BELOW_BYTES,
    SparkSettings,
    _base_conf,
    _driver_java_options,
    data_bytes,
    get_session,
    jit_of,
    running_description,
)
from fitness_assets.settings import ConfigError, Settings, SparkEnv
from fitness_assets_tests.conftest import skip_on_connect


def test_a_second_different_session_in_one_process_is_an_error(spark):
    running = get_session(SparkSettings(driver_memory="2g", shuffle_partitions=3))
    assert running is spark  # same static settings: the same session, runtime settings applied
    assert spark.conf.get("spark.sql.shuffle.partitions") == "3"
    spark.conf.set("spark.sql.shuffle.partitions", "2")
    with pytest.raises(RuntimeError, match="second, different Spark session.*same Spark settings"):
        get_session(SparkSettings(driver_memory="3g"))
    with pytest.raises(RuntimeError, match="Spark Connect at sc://127.0.0.1:1"):
        get_session(SparkSettings(mode="connect", connect_url="sc://127.0.0.1:1"))


def test_the_lakehouse_takes_the_spark_resource_nested_and_one_default_each():
    resources = build_resources(Settings.from_env({}), SparkEnv.from_env({}))
    assert resources["lakehouse"].spark is resources["spark"]
    assert resources["spark"].master == SparkEnv().master == SparkSettings().master == DEFAULT_MASTER
    from dagster_pyspark import PySparkResource

    assert isinstance(resources["spark"], PySparkResource)  # spark_config / spark_session as Dagster users know


def test_unity_catalog_names_come_from_the_environment():
    env = {"FITNESS_TABLE_BACKEND": "spark-delta", "FITNESS_ENV": "staging", "FITNESS_SCHEMA_SILVER": "dev_ann_silver"}
    settings = Settings.from_env(env)
    assert settings.catalog == "fitness_staging" and dict(settings.schemas) == {"silver": "dev_ann_silver"}
    assert Settings.from_env(env | {"FITNESS_CATALOG": "main"}).catalog == "main"
    assert Settings.from_env({"FITNESS_ENV": "prod"}).catalog is None  # delta-rs: paths, no catalog
    store = build_resources(settings, SparkEnv())["lakehouse"].store()
    from fitness_assets.tables import GYM_SUMMARY, USERS

    assert store.location(USERS).replace("`", "") == "fitness_staging.dev_ann_silver.users"
    assert store.location(GYM_SUMMARY).replace("`", "") == "fitness_staging.gold.gym_summary"
    # The asset pages name the same tables the store writes (not the local lakehouse's paths).
    from dagster import AssetKey

    from fitness_assets.definitions import build_definitions

    specs = {s.key: s for s in build_definitions(settings, SparkEnv()).resolve_all_asset_specs()}
    users = specs[AssetKey(USERS.asset_key_path)].metadata
    assert users["dagster/table_name"] == users["dagster/uri"] == store.location(USERS)
    local = build_definitions(Settings.from_env({"FITNESS_LAKEHOUSE_ROOT": "/data/lake"}), SparkEnv())
    local_users = {s.key: s for s in local.resolve_all_asset_specs()}[AssetKey(USERS.asset_key_path)].metadata
    assert (local_users["dagster/uri"], local_users["dagster/table_name"]) == ("/data/lake/silver/users", "silver.users")
    landing = {s.key: s for s in build_definitions(Settings.from_env({"FITNESS_LANDING_ROOT": "/data/in"}),
                                                   SparkEnv()).resolve_all_asset_specs()}
    assert landing[AssetKey(["landing", "gym_logins"])].metadata["folder"] == "/data/in/gym_logins/"


def test_an_unknown_table_backend_fails_in_one_line():
    import dataclasses

    with pytest.raises(ValueError, match="FITNESS_TABLE_BACKEND must be one of delta-rs, spark-delta, not 'parquet'"):
        Settings.from_env({"FITNESS_TABLE_BACKEND": "parquet"})
    # A resource configured some other way (the UI's launchpad) checks it too.
    resources = build_resources(dataclasses.replace(Settings.from_env({}), backend="parquet"), SparkEnv())
    with pytest.raises(ValueError, match="FITNESS_TABLE_BACKEND to delta-rs or spark-delta"):
        resources["lakehouse"].store()


def test_the_databricks_client_and_rebuild_job_exist_only_where_a_workspace_is_configured(monkeypatch):
    from fitness_assets.definitions import build_definitions

    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    without = build_definitions(Settings.from_env({}), SparkEnv())
    assert "databricks" not in without.resources
    assert "databricks_rebuild_layer" not in {j.name for j in without.jobs}
    monkeypatch.setenv("DATABRICKS_HOST", "https://example.cloud.databricks.com")
    with_workspace = build_definitions(Settings.from_env({}), SparkEnv())
    assert "databricks_rebuild_layer" in {j.name for j in with_workspace.jobs}
    client = with_workspace.resources["databricks"]
    from dagster import EnvVar

    # Both read from the environment when a run uses them, never stored in the definitions.
    assert isinstance(client.host, EnvVar) and client.host.env_var_name == "DATABRICKS_HOST"
    assert isinstance(client.token, EnvVar) and client.token.env_var_name == "DATABRICKS_TOKEN"


def test_the_codegen_threshold_comes_from_the_environment_and_a_bad_one_says_what_to_fix():
    assert SparkEnv.from_env({}).compile_from_rows == DEFAULT_COMPILE_FROM_ROWS
    env = SparkEnv.from_env({"FITNESS_SPARK_COMPILE_FROM_ROWS": "0"})
    resources = build_resources(Settings.from_env({}), env)
    assert resources["spark"].compile_from_rows == 0
    assert resources["lakehouse"].store().codegen.compile_from_rows == 0
    with pytest.raises(ValueError, match="FITNESS_SPARK_COMPILE_FROM_ROWS must be a whole number"):
        SparkEnv.from_env({"FITNESS_SPARK_COMPILE_FROM_ROWS": "1e5"})


def test_the_driver_jit_follows_the_size_of_the_data_and_a_bad_one_says_what_to_fix(tmp_path):
    lakehouse, landing = tmp_path / "lakehouse", tmp_path / "landing"
    (landing / "bpm").mkdir(parents=True)
    (landing / "bpm" / "a.json").write_bytes(b"x" * 1000)
    small = SparkSettings(jit="auto", data_roots=(str(lakehouse), str(landing)))  # lakehouse not made yet
    assert data_bytes(small.data_roots, QUICK_JIT_BELOW_BYTES) == 1000
    assert jit_of(small) == "quick"
    (lakehouse / "silver" / "heart_rate").mkdir(parents=True)  # nested, and counted with the landing zone
    with open(lakehouse / "silver" / "heart_rate" / "part-0.parquet", "wb") as f:
        f.truncate(QUICK_JIT_BELOW_BYTES - 1000)
    assert jit_of(small) == "tiered"
    assert jit_of(SparkSettings(jit="auto", data_roots=("s3://bucket/lakehouse",))) == "tiered"  # not measured
    assert jit_of(SparkSettings(jit="quick", data_roots=(str(lakehouse),))) == "quick"
    assert jit_of(SparkSettings()) == "tiered"  # auto, no data to measure
    with pytest.raises(ValueError, match="unknown JIT 'fast'"):
        jit_of(SparkSettings(jit="fast"))

    env = SparkEnv.from_env({"FITNESS_SPARK_JIT": "tiered"})
    resources = build_resources(Settings.from_env({"FITNESS_LAKEHOUSE_ROOT": str(lakehouse),
                                                   "FITNESS_LANDING_ROOT": str(landing)}), env)
    assert resources["spark"].settings().jit == "tiered"
    assert resources["spark"].settings().data_roots == (str(lakehouse), str(landing))
    assert SparkEnv.from_env({}).jit == "auto"
    with pytest.raises(ValueError, match="FITNESS_SPARK_JIT must be one of auto, quick, tiered, not 'fast'"):
        SparkEnv.from_env({"FITNESS_SPARK_JIT": "fast"})


def test_the_driver_gets_the_parallel_collector_unless_its_own_options_name_one():
    options = _driver_java_options(SparkSettings(jit="quick"), archive=False).split()
    assert DRIVER_GC in options and QUICK_JIT in options
    assert QUICK_JIT not in _driver_java_options(SparkSettings(jit="tiered"), archive=False).split()
    own = SparkSettings(extra_conf={"spark.driver.extraJavaOptions": "-XX:+UseG1GC -Xss4m"})
    options = _driver_java_options(own, archive=False).split()
    assert DRIVER_GC not in options and options[-2:] == ["-XX:+UseG1GC", "-Xss4m"]


@skip_on_connect
def test_the_running_driver_has_the_parallel_collector_and_the_jit_it_was_given(spark):
    management = spark._jvm.java.lang.management.ManagementFactory
    assert {gc.getName() for gc in management.getGarbageCollectorMXBeans()} == {"PS Scavenge", "PS MarkSweep"}
    quick = QUICK_JIT in list(management.getRuntimeMXBean().getInputArguments())
    assert running_description().endswith("(quick JIT)" if quick else "(tiered JIT)")


@pytest.mark.connect
def test_column_functions_do_not_record_their_python_call_site_unless_asked(spark):
    """PySpark's DataFrame debugging (a stack walk and, on local Spark, JVM calls for every
    column function) is off in every Spark this platform starts; spark_config turns it on. It
    is a static setting: a Spark Connect client does not send it (the server would refuse it
    with a warning), the server this project starts has it on its command line. Run on local
    Spark and again on Spark Connect."""
    from pyspark.errors.utils import is_debugging_enabled

    assert _base_conf(SparkSettings())["spark.python.sql.dataFrameDebugging.enabled"] == "false"
    asked = SparkSettings(extra_conf={"spark.python.sql.dataFrameDebugging.enabled": "true"})
    assert _base_conf(asked)["spark.python.sql.dataFrameDebugging.enabled"] == "true"
    remote = SparkSettings(mode="connect", connect_url="sc://127.0.0.1:15002")
    assert "spark.python.sql.dataFrameDebugging.enabled" not in _base_conf(remote)
    assert spark.conf.get("spark.python.sql.dataFrameDebugging.enabled") == "false"
    assert not is_debugging_enabled()


def test_a_databricks_session_gets_the_utc_time_zone_and_the_callers_settings_only(spark):
    """A session made by Databricks (its cluster's, or Databricks Connect's) is not built here:
    it gets what can be set at run time, the contract's UTC time zone and spark_config, and
    keeps the cluster's shuffle partitions and Arrow settings. Applied here to a real session."""
    from fitness_assets.lakehouse.spark import _with_conf

    settings = SparkSettings(mode="databricks", extra_conf={"spark.sql.files.maxPartitionBytes": "64m"})
    assert _base_conf(settings) == {"spark.sql.session.timeZone": "UTC", "spark.sql.files.maxPartitionBytes": "64m"}
    before = spark.conf.get("spark.sql.files.maxPartitionBytes")
    try:
        assert _with_conf(spark, settings) is spark
        assert spark.conf.get("spark.sql.files.maxPartitionBytes") == "64m"
        assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", before)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("FITNESS_REFERENCE_DATE", "tomorrow", "FITNESS_REFERENCE_DATE must be an ISO date from 1900-01-01 to 9999-12-31, "
                                           "such as 2024-01-01, not 'tomorrow'"),
    ("FITNESS_DATE_LOOKUP_START", "0999-12-25", "FITNESS_DATE_LOOKUP_START must be an ISO date from 1900-01-01"),
    ("FITNESS_DATE_LOOKUP_END", "2019-12-31", "FITNESS_DATE_LOOKUP_END (2019-12-31) is before FITNESS_DATE_LOOKUP_START"),
    ("FITNESS_MAX_FILES_PER_BATCH", "0", "FITNESS_MAX_FILES_PER_BATCH must be a whole number from 1 to 2147483647, not '0'"),
    ("FITNESS_MAX_BATCHES_PER_RUN", "ten", "FITNESS_MAX_BATCHES_PER_RUN must be a whole number from 1"),
    ("FITNESS_ERASURE_RETENTION_HOURS", "-1", "FITNESS_ERASURE_RETENTION_HOURS must be a whole number from 0"),
    ("FITNESS_MICROBATCH_SECONDS", "0", "FITNESS_MICROBATCH_SECONDS must be a whole number from 1 to 2147483647, not '0'"),
    ("FITNESS_FRESHNESS_GOLD_MINUTES", "-5", "FITNESS_FRESHNESS_GOLD_MINUTES must be a number of minutes from 2"),
    ("FITNESS_FRESHNESS_SILVER_MINUTES", "inf", "FITNESS_FRESHNESS_SILVER_MINUTES must be a number of minutes"),
    ("FITNESS_FRESHNESS_GOLD_MINUTES", "1e300", "FITNESS_FRESHNESS_GOLD_MINUTES must be a number of minutes from 2 to "
                                                "527040 (a year), not '1e300'"),
    ("FITNESS_FRESHNESS_SILVER_MINUTES", "1.5", "FITNESS_FRESHNESS_SILVER_MINUTES must be a number of minutes from 2"),
    ("FITNESS_LAKEHOUSE_ROOT", "/tmp/a%20b", "FITNESS_LAKEHOUSE_ROOT (/tmp/a%20b) must not hold a '%'"),
    ("FITNESS_MAX_BATCHES_PER_RUN", str(10**30), "FITNESS_MAX_BATCHES_PER_RUN must be a whole number from 1 to"),
    ("FITNESS_KAFKA_MAX_RECORDS_PER_BATCH", "1e5", "FITNESS_KAFKA_MAX_RECORDS_PER_BATCH must be a whole number"),
    ("FITNESS_SPARK_JIT", "fast", "FITNESS_SPARK_JIT must be one of auto, quick, tiered, not 'fast'"),
    ("FITNESS_SPARK_MODE", "remote", "FITNESS_SPARK_MODE must be one of local, connect, databricks, not 'remote'"),
    ("FITNESS_TABLE_BACKEND", "iceberg", "FITNESS_TABLE_BACKEND must be one of delta-rs, spark-delta, not 'iceberg'"),
    # Each of these started Spark or Kafka and failed in the middle of a run, in the JVM's words
    # ("Invalid maximum heap size") or not at all (librdkafka retries any address for ever).
    ("FITNESS_SPARK_DRIVER_MEMORY", "3gb", "FITNESS_SPARK_DRIVER_MEMORY must be a size Java reads, such as 3g"),
    ("FITNESS_SPARK_DRIVER_MEMORY", "256m", "FITNESS_SPARK_DRIVER_MEMORY must be at least 450m (Spark's driver does "
                                            "not start with less), not '256m'"),
    ("FITNESS_SPARK_MASTER", "local[two]", "FITNESS_SPARK_MASTER must be a Spark master such as local[2]"),
    ("FITNESS_SPARK_CONNECT_URL", "localhost:15002", "FITNESS_SPARK_CONNECT_URL must be a Spark Connect URL such as "
                                                     "sc://127.0.0.1:15002, not 'localhost:15002'"),
    ("FITNESS_KAFKA_BOOTSTRAP_SERVERS", "localhost:99092", "FITNESS_KAFKA_BOOTSTRAP_SERVERS must be "
                                                          "host:port[,host:port] with ports from 1 to 65535"),
    ("FITNESS_KAFKA_BOOTSTRAP_SERVERS", "broker one:9092", "FITNESS_KAFKA_BOOTSTRAP_SERVERS must be host:port"),
    # Read only when gold/member_engagement runs: it failed that step after bronze and silver had run.
    ("FITNESS_AT_RISK_DAYS", "two weeks", "FITNESS_AT_RISK_DAYS must be a whole number from 1 to 2147483647, "
                                          "not 'two weeks'"),
])
def test_a_setting_the_platform_cannot_use_stops_the_cli_in_one_line_before_anything_runs(
        variable, value, message, tmp_path, monkeypatch, capsys):
    from fitness_assets.cli import main

    landing, lakehouse = tmp_path / "landing", tmp_path / "lakehouse"
    landing.mkdir()
    for name, setting in {"FITNESS_LANDING_ROOT": str(landing), "FITNESS_LAKEHOUSE_ROOT": str(lakehouse),
                          "DAGSTER_HOME": str(tmp_path / "home"), variable: value}.items():
        monkeypatch.setenv(name, setting)
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fitness-assets: {message}") and err.count("\n") == 1
    assert not lakehouse.exists()  # stopped before Spark, before any table


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("FITNESS_KAFKA_CONFIG_SASL_USERNAM", "me", 'FITNESS_KAFKA_CONFIG_SASL_USERNAM is not a Kafka client setting '
                                              'librdkafka accepts (No such configuration property: "sasl.usernam")'),
    ("FITNESS_KAFKA_CONFIG_SECURITY_PROTOCOL", "SASL-SSL", "FITNESS_KAFKA_CONFIG_SECURITY_PROTOCOL is not a Kafka "
                                                          'client setting librdkafka accepts (Invalid value "SASL-SSL"'),
])
def test_a_kafka_client_setting_librdkafka_refuses_stops_the_cli_in_one_line(variable, value, message, tmp_path,
                                                                             monkeypatch, capsys):
    """Client settings were first read by the run's consumer, so a misspelt one failed the
    bronze step; and with Kafka off they are not used, so not checked."""
    from fitness_assets.cli import main
    from fitness_assets.streaming.settings import KafkaSettings

    (tmp_path / "landing").mkdir()
    for name, setting in {"FITNESS_LANDING_ROOT": str(tmp_path / "landing"),
                          "FITNESS_LAKEHOUSE_ROOT": str(tmp_path / "lakehouse"), "DAGSTER_HOME": str(tmp_path / "home"),
                          "FITNESS_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", variable: value}.items():
        monkeypatch.setenv(name, setting)
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fitness-assets: {message}") and err.count("\n") == 1
    assert not (tmp_path / "lakehouse").exists()
    monkeypatch.delenv("FITNESS_KAFKA_BOOTSTRAP_SERVERS")
    assert not KafkaSettings.from_env().enabled


def test_databricks_spark_over_a_local_delta_rs_lakehouse_stops_the_cli_in_one_line(tmp_path, monkeypatch, capsys):
    """A Databricks cluster cannot read the Parquet files of a lakehouse on this machine."""
    from fitness_assets.cli import main

    landing, lakehouse = tmp_path / "landing", tmp_path / "lakehouse"
    landing.mkdir()
    for name, setting in {"FITNESS_LANDING_ROOT": str(landing), "FITNESS_LAKEHOUSE_ROOT": str(lakehouse),
                          "DAGSTER_HOME": str(tmp_path / "home"), "FITNESS_SPARK_MODE": "databricks"}.items():
        monkeypatch.setenv(name, setting)
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err == (f"fitness-assets: FITNESS_SPARK_MODE=databricks cannot read the tables of a local lakehouse "
                   f"({lakehouse}): set FITNESS_TABLE_BACKEND=spark-delta (Delta on Databricks), or "
                   "FITNESS_LAKEHOUSE_ROOT to object storage the cluster reads\n")
    assert not lakehouse.exists()


@pytest.mark.parametrize(("selection", "message"), [
    ("silver/nope", "no table 'silver/nope' in the graph: name one as <layer>/<table> (e.g. silver/users) or a "
                    "layer (bronze, gold, quarantine, reference, silver)"),
    ("gold/*", "no table 'gold/*' in the graph"),
    ("landing/gym_logins", "landing/gym_logins is a source, observed and never materialized: select the bronze "
                           "table it feeds instead"),
])
def test_a_selection_that_names_no_table_stops_the_cli_in_one_line(selection, message, tmp_path, monkeypatch,
                                                                   capsys):
    from fitness_assets.cli import main

    (tmp_path / "landing").mkdir()
    for name, setting in {"FITNESS_LANDING_ROOT": str(tmp_path / "landing"),
                          "FITNESS_LAKEHOUSE_ROOT": str(tmp_path / "lakehouse"),
                          "DAGSTER_HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(name, setting)
    assert main(["run", "--select", selection]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fitness-assets: {message}") and err.count("\n") == 1
    assert not (tmp_path / "lakehouse").exists()


def test_a_layer_selects_its_tables_and_a_bronze_table_its_quarantine():
    from fitness_assets.cli import SelectionError, selected_keys
    from fitness_assets.definitions import build_definitions

    defs = build_definitions(Settings.from_env({"FITNESS_LANDING_ROOT": "/l", "FITNESS_LAKEHOUSE_ROOT": "/h"}))
    assert sorted(k.to_user_string() for k in selected_keys(defs, [" bronze/gym_logins_bz", "gold"])) == [
        "bronze/gym_logins_bz", "gold/gym_occupancy", "gold/gym_summary", "gold/member_engagement",
        "gold/workout_bpm_summary", "gold/workout_performance", "gold/workout_zones", "quarantine/gym_logins_bz"]
    assert selected_keys(defs, None) is None and selected_keys(defs, []) is None
    for blank in ([" "], [""], [" ", ""]):  # --select given a blank variable: not the whole graph
        with pytest.raises(SelectionError, match="names no table"):
            selected_keys(defs, blank)


def test_a_rebuild_that_cannot_run_drops_nothing(tmp_path, monkeypatch, capsys, spark):
    """The landing root, the lakehouse and Spark are tried before the first table is dropped:
    a misconfigured rebuild leaves every table as it was."""
    from fitness_assets.cli import main
    from fitness_assets.lakehouse.store import DeltaRsTableStore
    from fitness_assets.tables import REGISTERED_USERS_BZ, USERS

    store = DeltaRsTableStore(str(tmp_path / "lakehouse"), lambda: spark)
    for spec in (REGISTERED_USERS_BZ, USERS):
        store.ensure(spec)
    for name, setting in {"FITNESS_LANDING_ROOT": str(tmp_path / "no-such-landing"),
                          "FITNESS_LAKEHOUSE_ROOT": str(tmp_path / "lakehouse"),
                          "DAGSTER_HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(name, setting)
    assert main(["rebuild", "bronze"]) == 2
    assert "FITNESS_LANDING_ROOT" in capsys.readouterr().err
    assert store.exists(REGISTERED_USERS_BZ) and store.exists(USERS)


def test_the_databricks_jobs_rebuild_that_cannot_run_drops_nothing(tmp_path, monkeypatch, spark):
    """The rebuild job on Databricks (databricks/jobs/rebuild_layer.py) prepares its run, with
    the CLI's checks, before it drops a table: here Spark cannot read the lakehouse."""
    from fitness_assets.cli import prepare_graph
    from fitness_assets.databricks.rebuild import rebuild
    from fitness_assets.lakehouse.store import DeltaRsTableStore
    from fitness_assets.tables import GOLD_TABLES, GYM_SUMMARY

    store = DeltaRsTableStore(str(tmp_path / "lakehouse"), lambda: spark)
    store.ensure(GYM_SUMMARY)
    for name, setting in {"FITNESS_LANDING_ROOT": str(tmp_path), "FITNESS_LAKEHOUSE_ROOT": str(tmp_path / "lakehouse"),
                          "DAGSTER_HOME": str(tmp_path / "home"), "FITNESS_SPARK_MODE": "databricks"}.items():
        monkeypatch.setenv(name, setting)
    with pytest.raises(ConfigError, match="FITNESS_SPARK_MODE=databricks cannot read"):
        rebuild("gold", store, prepare_graph)
    assert store.exists(GYM_SUMMARY)
    # Prepared: the tables are dropped before the run starts.
    dropped_before_run = []
    rebuild("gold", store, lambda selection: lambda: dropped_before_run.append(not store.exists(GYM_SUMMARY)) or True)
    assert dropped_before_run == [True] and not any(store.exists(spec) for spec in GOLD_TABLES)


def test_connect_mode_without_a_server_fails_in_seconds_saying_what_to_start_not_after_pysparks_retries(
        monkeypatch):
    import socket
    import time

    from fitness_assets.lakehouse import spark as spark_module
    from fitness_assets.lakehouse.spark import SparkUnavailable, wait_for_server

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        wait_for_server(f"sc://127.0.0.1:{port}/;session_id=x", seconds=1)  # something answers: no error
    # The port is closed now: the session is refused before PySpark's client is built.
    monkeypatch.setattr(spark_module, "CONNECT_WAIT_SECONDS", 0.5)
    started = time.monotonic()
    with pytest.raises(SparkUnavailable) as raised:
        spark_module._build(SparkSettings(mode="connect", connect_url=f"sc://127.0.0.1:{port}"))
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "\n" not in message and f"sc://127.0.0.1:{port}" in message and "fitness-assets spark-connect" in message
    with pytest.raises(ValueError, match="looks like sc://"):
        wait_for_server("http://127.0.0.1:15002")


def test_dagster_home_is_made_absolute_and_one_that_is_no_folder_stops_the_cli_in_one_line(tmp_path, monkeypatch,
                                                                                          capsys):
    from fitness_assets.cli import main
    from fitness_assets.instance import dagster_home

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", " home ")
    assert dagster_home() == tmp_path / "home" and os.environ["DAGSTER_HOME"] == str(tmp_path / "home")
    (tmp_path / "landing").mkdir()
    (tmp_path / "a-file").write_text("")
    for name, setting in {"FITNESS_LANDING_ROOT": str(tmp_path / "landing"),
                          "FITNESS_LAKEHOUSE_ROOT": str(tmp_path / "lakehouse"),
                          "DAGSTER_HOME": str(tmp_path / "a-file")}.items():
        monkeypatch.setenv(name, setting)
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err == f"fitness-assets: DAGSTER_HOME ({tmp_path / 'a-file'}) is not a folder: point it at a folder for " \
                  "Dagster's runs and events\n"


def test_a_spark_that_cannot_start_is_one_line_after_its_own_log_lines_not_a_traceback(tmp_path):
    """The JVM cannot reserve a heap of 100000 TiB (a size the settings cannot refuse: what a
    machine can reserve is the JVM's to say): the CLI shows what this start wrote to Spark's log
    (not an earlier run's lines) and ends with one line saying what to check, exit code 2."""
    import subprocess
    import sys

    (tmp_path / "landing").mkdir()
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "spark-driver.log").write_text("a line of an earlier run\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FITNESS_")} | {
        "FITNESS_LANDING_ROOT": str(tmp_path / "landing"), "FITNESS_LAKEHOUSE_ROOT": str(tmp_path / "lakehouse"),
        "DAGSTER_HOME": str(tmp_path / "home"), "FITNESS_SPARK_DRIVER_MEMORY": "100000t"}
    done = subprocess.run([sys.executable, "-m", "fitness_assets.cli", "run"], env=env, capture_output=True,
                          text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert lines[-1].startswith("fitness-assets: Spark did not start (") and "spark-driver.log" in lines[-1]
    assert "Could not reserve enough space" in done.stdout + done.stderr  # the JVM writes it to stdout
    assert "earlier run" not in done.stdout + done.stderr


def test_reset_removes_the_dagster_home_runs_use_even_when_given_as_a_relative_path(tmp_path, monkeypatch, capsys):
    from fitness_assets.cli import main

    monkeypatch.chdir(tmp_path)
    for folder in ("landing", "lakehouse", "home"):
        (tmp_path / folder).mkdir()
    for name, setting in {"FITNESS_LANDING_ROOT": str(tmp_path / "landing"),
                          "FITNESS_LAKEHOUSE_ROOT": str(tmp_path / "lakehouse"), "DAGSTER_HOME": "home "}.items():
        monkeypatch.setenv(name, setting)
    assert main(["reset"]) == 0
    assert f"removed {tmp_path / 'home'}" in capsys.readouterr().out
    assert not any((tmp_path / folder).exists() for folder in ("landing", "lakehouse", "home"))


@pytest.mark.parametrize(("fields", "message"), [
    ({"driver_memory": "3x"}, "the Spark resource's driver_memory must be a size Java reads"),
    ({"master": "lokal[2]"}, "the Spark resource's master must be a Spark master such as local[2]"),
    ({"mode": "connect", "connect_url": "http://127.0.0.1:15002"},
     "the Spark resource's connect_url must be a Spark Connect URL such as sc://127.0.0.1:15002"),
])
def test_a_spark_resource_configured_in_the_ui_is_checked_before_spark_starts(fields, message):
    """The launchpad can set the resource's fields past the environment's checks."""
    from fitness_assets.lakehouse import spark as spark_module
    from fitness_assets.lakehouse.spark import SparkSettings

    with pytest.raises(ValueError, match=re.escape(message)):
        spark_module._build(SparkSettings(**fields))


def _local_roots(tmp_path, monkeypatch, lakehouse: str | None = None) -> None:
    for name, setting in {"FITNESS_LANDING_ROOT": str(tmp_path / "landing"),
                          "FITNESS_LAKEHOUSE_ROOT": lakehouse or str(tmp_path / "lakehouse"),
                          "DAGSTER_HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(name, setting)


def test_reset_removes_a_file_uri_lakehouse_says_what_was_absent_and_refuses_what_it_cannot_delete(
        tmp_path, monkeypatch, capsys):
    from fitness_assets.cli import main

    (tmp_path / "lakehouse" / "silver" / "users").mkdir(parents=True)
    _local_roots(tmp_path, monkeypatch, f"file://{tmp_path / 'lakehouse'}")
    assert main(["reset"]) == 0
    out = capsys.readouterr().out
    assert f"removed {tmp_path / 'lakehouse'}\n" in out and f"absent  {tmp_path / 'landing'}\n" in out
    assert not (tmp_path / "lakehouse").exists()

    (tmp_path / "landing").mkdir()
    _local_roots(tmp_path, monkeypatch, "s3://bucket/lake")
    assert main(["reset"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("fitness-assets: reset deletes local folders only") and captured.err.count("\n") == 1
    assert (tmp_path / "landing").exists() and not captured.out  # nothing deleted


def test_reset_is_refused_while_a_run_is_in_progress(tmp_path, monkeypatch, capsys):
    from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

    from fitness_assets.cli import main
    from fitness_assets.instance import ensure_instance

    (tmp_path / "lakehouse").mkdir()
    _local_roots(tmp_path, monkeypatch)
    ensure_instance()
    with DagsterInstance.get() as instance:
        instance.add_run(DagsterRun(job_name="all_assets", run_id="0" * 8 + "-0000-0000-0000-" + "0" * 12,
                                    status=DagsterRunStatus.STARTED))
    assert main(["reset"]) == 2
    assert "is in progress" in capsys.readouterr().err
    assert (tmp_path / "lakehouse").exists() and (tmp_path / "home").exists()


@pytest.mark.parametrize("argv", [
    ["simulate", "--batches", "0"], ["simulate", "--readings", "-5"], ["demo", "--readings", "0"],
    ["simulate", "--kafka-bootstrap-servers", "notaport:abc"], ["broker", "--port", "70000"],
    ["broker", "--partitions", "0"], ["produce-live", "--interval", "-1"], ["produce-live", "--members", "0"],
    ["live", "--ui-port", "x"], ["spark-connect", "--port", "-1"],
])
def test_a_flag_out_of_its_range_stops_the_cli_with_its_usage_not_a_traceback(argv, tmp_path, monkeypatch, capsys):
    from fitness_assets.cli import main

    _local_roots(tmp_path, monkeypatch)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"argument {argv[1]}: " in err
    assert not (tmp_path / "landing").exists()


def test_a_broker_that_does_not_answer_stops_produce_live_in_one_line_before_a_file_lands(tmp_path, monkeypatch,
                                                                                          capsys):
    import socket

    from fitness_assets.cli import main

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        _local_roots(tmp_path, monkeypatch)
        assert main(["produce-live", "--kafka-bootstrap-servers", f"127.0.0.1:{port}", "--batches", "2",
                     "--interval", "0"]) == 2
    err = capsys.readouterr().err
    assert f"fitness-assets: producing to Kafka at 127.0.0.1:{port} failed (" in err and "Traceback" not in err
    assert not [p for p in (tmp_path / "landing").rglob("*") if p.is_file()]


def test_a_report_folder_that_cannot_be_made_stops_the_cli_in_one_line_before_spark(tmp_path, monkeypatch, capsys):
    from fitness_assets.cli import main

    (tmp_path / "landing").mkdir()
    (tmp_path / "report").write_text("a file where the report folder goes")
    _local_roots(tmp_path, monkeypatch)
    assert main(["run", "--select", "reference/date_lookup"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fitness-assets: the report folder {tmp_path / 'report'} (beside the lakehouse) cannot be "
                          "made (") and err.count("\n") == 1


def test_a_file_uri_lakehouse_can_be_dropped_and_an_object_store_says_how_instead(tmp_path, spark):
    from fitness_assets.lakehouse.store import DeltaRsTableStore, LakehouseNotWritable
    from fitness_assets.tables import USERS

    store = DeltaRsTableStore(f"file://{tmp_path / 'lakehouse'}", lambda: spark)
    store.ensure(USERS)
    store.check_droppable()
    store.drop(USERS)
    assert not store.exists(USERS) and not (tmp_path / "lakehouse" / "silver" / "users").exists()
    with pytest.raises(LakehouseNotWritable, match="deletes tables in local folders only"):
        DeltaRsTableStore("s3://bucket/lake", lambda: spark).check_droppable()


def test_live_with_its_spark_port_taken_stops_in_one_line_and_stops_what_it_started(tmp_path, monkeypatch, capsys):
    import signal
    import socket

    from fitness_assets.cli import main
    from fitness_assets.streaming.broker import MockKafkaBroker

    _local_roots(tmp_path, monkeypatch)
    monkeypatch.delenv("FITNESS_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("FITNESS_SPARK_MODE", raising=False)
    stopped, real_stop = [], MockKafkaBroker.stop
    monkeypatch.setattr(MockKafkaBroker, "stop", lambda self: stopped.append(True) or real_stop(self))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            assert main(["live", "--port", "0", "--spark-port", str(port)]) == 2
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    err = capsys.readouterr().err
    assert err.startswith("fitness-assets: the live platform did not start: ") and str(port) in err
    assert "Traceback" not in err
    assert stopped == [True]  # the broker it had started is stopped
