"""One configuration model: defaults in one place, the nested Spark resource, Unity Catalog
names per environment, and a second, different Spark session in one process refused."""

import pytest

from fitness_assets.definitions import build_resources
from fitness_assets.lakehouse.codegen import DEFAULT_COMPILE_FROM_ROWS
from fitness_assets.lakehouse.spark import DEFAULT_MASTER, SparkSettings, get_session
from fitness_assets.settings import Settings, SparkEnv


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


def test_an_unknown_table_backend_fails_in_one_line():
    resources = build_resources(Settings.from_env({"FITNESS_TABLE_BACKEND": "parquet"}), SparkEnv())
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
