"""Dagster resources. The keys ``spark``, ``lakehouse`` and ``kafka`` are the same in every environment;
local, Spark Connect and Databricks differ only in the values given to them."""


import datetime as dt
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr
from pyspark.sql import SparkSession

from fitness_assets.lakehouse.spark import SparkSettings, get_session
from fitness_assets.lakehouse.store import DeltaRsTableStore, SparkDeltaTableStore, TableStore
from fitness_assets.streaming.settings import DEFAULT_GROUP_ID, KafkaSettings
from fitness_assets.tables import KAFKA_TOPICS


class SparkResource(ConfigurableResource):
    """The process's Spark session: local (default), Spark Connect, or Databricks."""

    mode: str = Field(default="local", description="local | connect | databricks")
    master: str = Field(default="local[2]", description="Spark master for local mode")
    connect_url: str | None = Field(default=None, description="sc://host:port for connect mode")
    driver_memory: str = "4g"
    shuffle_partitions: int = 4

    def settings(self) -> SparkSettings:
        return SparkSettings(mode=self.mode, master=self.master, connect_url=self.connect_url,
                             driver_memory=self.driver_memory, shuffle_partitions=self.shuffle_partitions)

    def session(self) -> SparkSession:
        return get_session(self.settings())


class LakehouseResource(ConfigurableResource):
    """Where the landing zone and the Delta tables live, and the settings that shape results."""

    root: str = Field(description="Delta tables at <root>/<layer>/<table> (path or object-store URI)")
    landing_root: str = Field(description="Landing zone, one folder per source")
    backend: str = Field(default="delta-rs", description="delta-rs | spark-delta (Databricks/Unity Catalog)")
    catalog: str | None = Field(default=None, description="Catalog for the spark-delta backend")
    reference_date: str | None = Field(default=None, description="ISO date ages are computed at; today when unset")
    date_lookup_start: str = "2020-01-01"
    date_lookup_end: str = "2030-12-31"
    max_files_per_batch: int = 64
    max_batches_per_run: int = 1000
    erasure_retention_hours: int = Field(
        default=168, description="hours erased personal data may stay in files the tables no longer use "
                                 "(old versions, change data) before the vacuum deletes them")

    _stores: dict = PrivateAttr(default_factory=dict)

    def store(self, spark: SparkResource) -> TableStore:
        key = id(spark)
        if key not in self._stores:
            if self.backend == "delta-rs":
                self._stores[key] = DeltaRsTableStore(self.root, spark.session)
            elif self.backend == "spark-delta":
                self._stores[key] = SparkDeltaTableStore(spark.session, self.catalog)
            else:
                raise ValueError(f"unknown lakehouse backend {self.backend!r}: use delta-rs or spark-delta")
        return self._stores[key]

    def staging_dir(self, spark: SparkResource) -> Path | None:
        """A folder on this machine that Spark reads too (local Spark, or a Connect server
        beside the tables), for handing it files; None where there is no such folder."""
        local = not ("://" in self.root and not self.root.startswith("file://"))
        if self.backend != "delta-rs" or spark.mode == "databricks" or not local:
            return None
        return Path(self.root.removeprefix("file://")) / "_staging"

    def reference(self) -> dt.date:
        if self.reference_date:
            return dt.date.fromisoformat(self.reference_date)
        return dt.datetime.now(dt.UTC).date()

    def date_range(self) -> tuple[dt.date, dt.date]:
        return dt.date.fromisoformat(self.date_lookup_start), dt.date.fromisoformat(self.date_lookup_end)


class KafkaResource(ConfigurableResource):
    """The Kafka cluster the multiplex streams from; off while ``bootstrap_servers`` is unset.

    Client secrets (SASL and the like) are not fields: they are read from
    ``FITNESS_KAFKA_CONFIG_*`` variables when a client is built, so they never show in the UI.
    """

    bootstrap_servers: str | None = Field(default=None, description="host:port[,host:port]; unset = Kafka off")
    topics: list[str] = Field(default_factory=lambda: list(KAFKA_TOPICS), description="topics of the multiplex")
    group_id: str = Field(default=DEFAULT_GROUP_ID, description="consumer group offsets are reported to (for lag tools)")
    max_records_per_batch: int = Field(default=100_000, description="records per bronze commit")
    max_batches_per_run: int = Field(default=20, description="bronze commits per run")

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap_servers)

    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers, topics=tuple(self.topics),
                             group_id=self.group_id, max_records_per_batch=self.max_records_per_batch,
                             max_batches_per_run=self.max_batches_per_run)

    def reader(self):
        from fitness_assets.streaming.source import KafkaReader

        return KafkaReader(self.settings())
