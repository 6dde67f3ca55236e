"""The code location: every asset, check, sensor, job and resource of the platform, and the
cross-cutting policy (freshness windows and automation conditions per layer).

Definitions are built by a function, so nothing reads the environment or starts Spark while
this module is imported; ``dagster dev`` and the CLI call it when they load the location.
"""

from __future__ import annotations

import os

from dagster import (
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    Definitions,
    EnvVar,
    LoggerDefinition,
    define_asset_job,
    definitions,
    in_process_executor,
    map_asset_specs,
)

from fitness_assets.assets.bronze import bronze_assets, bronze_checks
from fitness_assets.assets.checks_lib import table_checks
from fitness_assets.assets.gold import gold_assets, gold_checks
from fitness_assets.assets.gold.business import at_risk_days
from fitness_assets.assets.reference import date_lookup, reference_checks
from fitness_assets.assets.silver import silver_assets, silver_checks
from fitness_assets.assets.sources import source_specs
from fitness_assets.automation.maintenance import maintenance
from fitness_assets.automation.policies import condition_for, freshness_policy
from fitness_assets.automation.sensors import build_sensors
from fitness_assets.lakehouse.store import DeltaRsTableStore, SparkDeltaTableStore
from fitness_assets.resources import KafkaResource, LakehouseResource, SparkResource
from fitness_assets.settings import AutomationSettings, ConfigError, Settings, SparkEnv
from fitness_assets.streaming.settings import KafkaSettings
from fitness_assets.tables import ALL_TABLES, TableSpec

ALL_ASSETS_JOB = "all_assets"

ASSETS = [date_lookup, *bronze_assets, *silver_assets, *gold_assets]


def table_upstreams(assets: list[AssetsDefinition]) -> dict[str, tuple[TableSpec, ...]]:
    """The tables each silver and gold table is refreshed from, read off the assets'
    dependencies: exactly the upstreams its refresh records its progress on. (Bronze and
    quarantine are written from landing files and Kafka, with progress of their own.)"""
    tables = {tuple(t.asset_key_path): t for t in ALL_TABLES}
    return {tables[tuple(key.path)].qualified_name: tuple(tables[tuple(p.path)] for p in sorted(parents)
                                                          if tuple(p.path) in tables)
            for a in assets for key, parents in a.asset_deps.items()
            if tuple(key.path) in tables and tables[tuple(key.path)].layer in ("silver", "gold")}


# One multi-check (one step) per table.
CHECKS = table_checks([*reference_checks, *bronze_checks, *silver_checks, *gold_checks], table_upstreams(ASSETS))


def build_resources(settings: Settings | None = None, spark_env: SparkEnv | None = None,
                    kafka: KafkaSettings | None = None) -> dict[str, object]:
    settings = settings or Settings.from_env()
    spark_env = spark_env or SparkEnv.from_env()
    kafka = kafka or KafkaSettings.from_env()
    at_risk_days()  # read again when gold/member_engagement runs; a value it cannot use stops the load now
    root = settings.lakehouse_root
    if spark_env.mode == "databricks" and settings.backend == "delta-rs" and ("://" not in root
                                                                            or root.startswith("file://")):
        raise ConfigError(f"FITNESS_SPARK_MODE=databricks cannot read the tables of a local lakehouse ({root}): set "
                          "FITNESS_TABLE_BACKEND=spark-delta (Delta on Databricks), or FITNESS_LAKEHOUSE_ROOT to "
                          "object storage the cluster reads")
    spark = SparkResource(mode=spark_env.mode, master=spark_env.master, connect_url=spark_env.connect_url,
                          driver_memory=spark_env.driver_memory, compile_from_rows=spark_env.compile_from_rows,
                          jit=spark_env.jit, data_roots=[settings.lakehouse_root, settings.landing_root])
    return {
        "spark": spark,
        "lakehouse": LakehouseResource(
            spark=spark, root=settings.lakehouse_root, landing_root=settings.landing_root,
            backend=settings.backend, catalog=settings.catalog, schemas=dict(settings.schemas),
            reference_date=settings.reference_date.isoformat() if settings.reference_date else None,
            date_lookup_start=settings.date_lookup_start.isoformat(),
            date_lookup_end=settings.date_lookup_end.isoformat(),
            max_files_per_batch=settings.max_files_per_batch, max_batches_per_run=settings.max_batches_per_run,
            erasure_retention_hours=settings.erasure_retention_hours,
        ),
        "kafka": KafkaResource(bootstrap_servers=kafka.bootstrap_servers, topics=list(kafka.topics),
                               group_id=kafka.group_id, max_records_per_batch=kafka.max_records_per_batch,
                               max_batches_per_run=kafka.max_batches_per_run),
    } | databricks_resources()


def databricks_resources() -> dict[str, object]:
    """The Databricks client (finding the deployed rebuild job, Pipes runs), present only where
    a workspace is configured (``DATABRICKS_HOST``); credentials come from the environment:
    ``DATABRICKS_TOKEN``, or ``DATABRICKS_CLIENT_ID`` + ``DATABRICKS_CLIENT_SECRET``. Not on a
    Databricks cluster itself: the rebuild job runs there, and launches no other (nor has
    dagster-databricks installed)."""
    if not os.environ.get("DATABRICKS_HOST") or os.environ.get("DATABRICKS_RUNTIME_VERSION"):
        return {}
    # Imported only here: dagster-databricks and the Databricks SDK take ~1 s to import, paid
    # by every process that loads the code location (each run worker among them). It is in
    # the `local` extra: a Databricks Connect environment (pyspark replaced) goes without it,
    # and without the rebuild job, which is launched from the main environment.
    try:
        from dagster_databricks import DatabricksClientResource
    except ImportError:
        return {}

    if os.environ.get("DATABRICKS_CLIENT_ID"):
        credentials = {"oauth_credentials": {"client_id": EnvVar("DATABRICKS_CLIENT_ID"),
                                             "client_secret": EnvVar("DATABRICKS_CLIENT_SECRET")}}
    else:
        credentials = {"token": EnvVar("DATABRICKS_TOKEN")}
    return {"databricks": DatabricksClientResource(host=EnvVar("DATABRICKS_HOST"), **credentials)}


def _databricks_jobs() -> list:
    """The Pipes rebuild job, where a workspace is configured (see ``databricks_resources``)."""
    if not databricks_resources():
        return []
    from fitness_assets.databricks.pipes import build_databricks_rebuild_job

    return [build_databricks_rebuild_job()]


def apply_layer_policies(assets: list[AssetsDefinition | AssetSpec], automation: AutomationSettings,
                         settings: Settings) -> list[AssetsDefinition | AssetSpec]:
    """Each asset gets its layer's freshness policy and automation condition (the layer is its
    group: sources, reference, bronze, quarantine, silver, gold), and each table its location
    (``dagster/uri``), so the asset page shows where it lives without opening an event."""
    tables = {tuple(t.asset_key_path): t for t in ALL_TABLES}
    # Where the store puts each table (no Spark is started for it): a path on delta-rs, the
    # Unity Catalog name (<catalog>.<schema>.<table>, schemas as configured) on Spark's Delta.
    store = (SparkDeltaTableStore(lambda: None, settings.catalog, dict(settings.schemas))
             if settings.backend == "spark-delta" else DeltaRsTableStore(settings.lakehouse_root, lambda: None))

    def policy(spec: AssetSpec) -> AssetSpec:
        layer = spec.group_name or ""
        table = tables.get(tuple(spec.key.path))
        metadata = dict(spec.metadata)
        if spec.key.path[0] == "landing":  # the folder a landing source is, as configured
            metadata["folder"] = f"{settings.landing_root.rstrip('/')}/{spec.key.path[-1]}/"
        if table is not None:
            metadata["dagster/uri"] = store.location(table)
            if settings.backend == "spark-delta":
                metadata["dagster/table_name"] = store.location(table)
        return spec.replace_attributes(freshness_policy=freshness_policy(automation, layer),
                                       automation_condition=condition_for(layer), metadata=metadata)

    return list(map_asset_specs(policy, assets))


def build_definitions(settings: Settings | None = None, spark_env: SparkEnv | None = None,
                      kafka: KafkaSettings | None = None, automation: AutomationSettings | None = None,
                      loggers: dict[str, LoggerDefinition] | None = None) -> Definitions:
    """The code location; ``loggers`` replaces Dagster's console logger (the CLI's progress)."""
    automation = automation or AutomationSettings.from_env()
    settings = settings or Settings.from_env()
    maintenance_jobs, schedules = maintenance(automation)
    return Definitions(
        assets=apply_layer_policies([*source_specs, *ASSETS], automation, settings),
        asset_checks=CHECKS,
        jobs=[define_asset_job(ALL_ASSETS_JOB, selection=AssetSelection.all() - AssetSelection.groups("sources"),
                               description="Materialize the whole medallion graph with its checks."),
              *maintenance_jobs, *_databricks_jobs()],
        sensors=build_sensors(automation),
        schedules=schedules,
        resources=build_resources(settings, spark_env, kafka),
        # One process, one Spark session for a whole run: a JVM per asset step costs ~10 s each.
        executor=in_process_executor,
        loggers=loggers,
    )


@definitions
def defs() -> Definitions:
    return build_definitions()
