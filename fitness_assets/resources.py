"""Dagster resources. The keys ``spark``, ``lakehouse`` and ``kafka`` are the same in every environment;
local, Spark Connect and Databricks differ only in the values given to them."""


import datetime as dt

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr
from pyspark.sql import SparkSession

from fitness_assets.lakehouse.codegen import DEFAULT_COMPILE_FROM_ROWS, CodegenBySize
from fitness_assets.lakehouse.spark import (
    DEFAULT_DRIVER_MEMORY,
    DEFAULT_JIT,
    DEFAULT_MASTER,
    DEFAULT_MODE,
    DEFAULT_SHUFFLE_PARTITIONS,
    JIT_MODES,
    QUICK_JIT_BELOW_BYTES,
    SparkSettings,
    get_session,
)
from fitness_assets.lakehouse.store import DeltaRsTableStore, SparkDeltaTableStore, TableStore
from fitness_assets.streaming.settings import DEFAULT_GROUP_ID, KafkaSettings
from fitness_assets.tables import KAFKA_TOPICS

try:
    from dagster_pyspark import PySparkResource
except ImportError:  # on a Databricks job cluster: dagster-pyspark would bring PyPI's pyspark over the runtime's
    PySparkResource = ConfigurableResource


class SparkResource(PySparkResource):
    """The process's Spark session: local (default), Spark Connect, or Databricks.

    dagster-pyspark's resource, so ``spark_config`` (any ``spark.*`` setting) and
    ``spark_session`` work as Dagster users know them (the same fields on a plain resource where
    dagster-pyspark is not installed: a Databricks job cluster); the session is started on first use
    (a step with nothing to do starts no JVM) and shared by the whole process. Local mode
    runs an embedded JVM, ``connect`` talks to a Spark Connect server (``fitness-assets
    spark-connect``), ``databricks`` uses Databricks Connect from a workstation or the
    cluster's own session on a Databricks cluster; credentials come from the environment or a
    Databricks config profile, never from this resource's fields."""

    spark_config: dict[str, str] = Field(default_factory=dict, description="extra spark.* settings")
    mode: str = Field(default=DEFAULT_MODE, description="local | connect | databricks")
    master: str = Field(default=DEFAULT_MASTER, description="Spark master for local mode")
    connect_url: str | None = Field(default=None, description="sc://host:port for connect mode")
    driver_memory: str = Field(default=DEFAULT_DRIVER_MEMORY, description="driver memory for local mode")
    shuffle_partitions: int = Field(default=DEFAULT_SHUFFLE_PARTITIONS, description="spark.sql.shuffle.partitions")
    compile_from_rows: int = Field(
        default=DEFAULT_COMPILE_FROM_ROWS,
        description="local and Spark Connect modes: a step runs its queries interpreted (no code generation) until the rows it has "
                    "read reach this many; 0 = always compiled")
    jit: str = Field(
        default=DEFAULT_JIT, description=f"local mode, when the driver starts: {' | '.join(JIT_MODES)}; tiered = "
                                         "Java's C1 then C2, quick = C1 only (faster over little data), auto = quick "
                                         f"while the data_roots hold under {QUICK_JIT_BELOW_BYTES // 2**20} MiB")
    data_roots: list[str] = Field(default_factory=list,
                                  description="the folders of the data the runs work on (what jit=auto measures)")

    @classmethod
    def _is_dagster_maintained(cls) -> bool:
        return False

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Nothing at start-up: the session starts when a step first asks for it."""

    def settings(self) -> SparkSettings:
        return SparkSettings(mode=self.mode, master=self.master, connect_url=self.connect_url,
                             driver_memory=self.driver_memory, shuffle_partitions=self.shuffle_partitions,
                             extra_conf=dict(self.spark_config), jit=self.jit, data_roots=tuple(self.data_roots))

    def session(self) -> SparkSession:
        return get_session(self.settings())

    @property
    def spark_session(self) -> SparkSession:
        return self.session()

    def codegen(self) -> CodegenBySize:
        """Code generation by the size of a step's reads, on the local driver and on a Spark
        Connect server (measured there too: a warm server's 5M micro-batch took 47.1 s always
        compiled, 34.9 s by size); a Databricks cluster is left as configured (not measured)."""
        return CodegenBySize(self.session, self.compile_from_rows if self.mode in ("local", "connect") else 0)


class LakehouseResource(ConfigurableResource):
    """Where the landing zone and the Delta tables live, the settings that shape results, and
    the Spark they are computed with (the nested ``spark`` resource)."""

    spark: SparkResource
    root: str = Field(description="Delta tables at <root>/<layer>/<table> (path or object-store URI)")
    landing_root: str = Field(description="Landing zone, one folder per source")
    backend: str = Field(default="delta-rs", description="delta-rs | spark-delta (Databricks/Unity Catalog)")
    catalog: str | None = Field(default=None, description="Unity Catalog catalog for the spark-delta backend")
    schemas: dict[str, str] = Field(default_factory=dict,
                                    description="layer -> schema where it is not the layer's name (spark-delta)")
    reference_date: str | None = Field(default=None, description="ISO date ages are computed at; today when unset")
    date_lookup_start: str = "2020-01-01"
    date_lookup_end: str = "2030-12-31"
    max_files_per_batch: int = 64
    max_batches_per_run: int = 1000
    erasure_retention_hours: int = Field(
        default=168, description="hours erased personal data may stay in files the tables no longer use "
                                 "(old versions, change data) before the vacuum deletes them")

    _store: TableStore | None = PrivateAttr(default=None)

    def store(self) -> TableStore:
        """The table store every Delta read and write of a run goes through."""
        if self._store is None:
            if self.backend == "delta-rs":
                self._store = DeltaRsTableStore(self.root, self.spark.session, codegen=self.spark.codegen())
            elif self.backend == "spark-delta":
                self._store = SparkDeltaTableStore(self.spark.session, self.catalog, self.schemas or None,
                                                   codegen=self.spark.codegen())
            else:
                raise ValueError(f"unknown table backend {self.backend!r}: set FITNESS_TABLE_BACKEND to delta-rs "
                                 "or spark-delta")
        return self._store

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
