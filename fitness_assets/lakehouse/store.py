"""The table store: the only code that reads or writes Delta tables.

``DeltaRsTableStore`` (the default) runs delta-rs on local paths or object-store URIs, with no
JVM Delta jars. Data crosses from Spark to delta-rs as Arrow (``DataFrame.toArrow``) and back
as Parquet files that Spark reads directly from the table's current snapshot: measured on
these machines that is the cheaper direction each way (see README, "Why Arrow in, Parquet
out"). ``SparkDeltaTableStore`` implements the same interface on Spark's native Delta
(Databricks, Unity Catalog).

Every write can carry application transactions ``(app_id, version)`` committed atomically with
the data. A write whose transactions are already recorded at that version or later is skipped,
which makes retried runs idempotent; optimistic-concurrency conflicts are retried on a fresh
snapshot.
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from fitness_assets.tables import TableSpec

OP_COLUMN = "_op"
METADATA_PREFIX = "fitness."
# Fault injection for crash tests: a commit to the table named here (``<layer>.<table>``)
# raises right after it succeeded, as a process dying between commit and run end would.
FAULT_ENV = "FITNESS_FAULT_AFTER_COMMIT"


class LakehouseNotWritable(RuntimeError):
    """The lakehouse root cannot be written; the message says what to fix."""


class InjectedFault(RuntimeError):
    """Raised after a successful commit when FITNESS_FAULT_AFTER_COMMIT names the table."""


def _maybe_fail(spec: TableSpec) -> None:
    if os.environ.get(FAULT_ENV) == spec.qualified_name:
        raise InjectedFault(f"injected fault after committing {spec.qualified_name}")


@dataclass(frozen=True)
class Txn:
    """An application transaction: progress of ``app_id`` recorded atomically with a write."""

    app_id: str
    version: int


@dataclass(frozen=True)
class Clause:
    """One MERGE clause. ``kind`` names the action; ``predicate`` is an SQL condition on
    ``s`` (source) and ``t`` (target); ``updates`` maps target columns to SQL expressions."""

    kind: Literal["update_all", "update", "delete", "insert_all", "delete_not_matched_by_source"]
    predicate: str | None = None
    updates: dict[str, str] | None = None


@dataclass(frozen=True)
class Merge:
    predicate: str
    clauses: tuple[Clause, ...]


@dataclass
class CommitResult:
    """What a write did: the table version it produced and delta's operation metrics."""

    table: str
    operation: str
    version: int
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False


class TableStore(ABC):
    """Reads and writes the lakehouse's Delta tables. Same interface on every backend."""

    def __init__(self, spark: Callable[[], SparkSession]):
        self._spark = spark
        # Test seam: called with the table spec right before each commit attempt.
        self.before_commit: Callable[[TableSpec], None] | None = None

    @property
    def spark(self) -> SparkSession:
        return self._spark()

    @abstractmethod
    def location(self, spec: TableSpec) -> str: ...

    @abstractmethod
    def exists(self, spec: TableSpec) -> bool: ...

    @abstractmethod
    def ensure(self, spec: TableSpec) -> None:
        """Create the table with its explicit schema, partitioning and constraints if absent."""

    @abstractmethod
    def version(self, spec: TableSpec) -> int:
        """Current table version, -1 for a table that does not exist yet."""

    @abstractmethod
    def read(self, spec: TableSpec, version: int | None = None) -> DataFrame: ...

    @abstractmethod
    def read_appended(self, spec: TableSpec, after_version: int, up_to_version: int) -> DataFrame:
        """Rows added by the appends in versions ``(after_version, up_to_version]``."""

    @abstractmethod
    def read_changes(self, spec: TableSpec, after_version: int, up_to_version: int) -> DataFrame:
        """Change data feed rows (with ``_change_type``) of versions ``(after_version, up_to_version]``."""

    @abstractmethod
    def transaction_version(self, spec: TableSpec, app_id: str) -> int | None: ...

    def check_writable(self) -> None:
        """Raise ``LakehouseNotWritable`` when tables cannot be written; a backend that cannot
        tell before writing says nothing."""
        return None

    def row_count(self, spec: TableSpec) -> int:
        return self.read(spec).count() if self.exists(spec) else 0

    @abstractmethod
    def commit_metadata(self, spec: TableSpec) -> list[dict[str, Any]]:
        """Custom ``fitness.*`` metadata of every commit, oldest first."""

    def vacuum(self, spec: TableSpec, retention_hours: int) -> list[str]:
        """Delete the files the table stopped using more than ``retention_hours`` ago (old
        versions, change data); returns what was deleted. Time travel and change-feed reads
        further back than the retention are gone with them."""
        raise NotImplementedError(f"{type(self).__name__} does not vacuum; use the platform's own VACUUM")

    def latest_commit_metadata(self, spec: TableSpec, key: str) -> dict[str, Any] | None:
        """Custom metadata of the newest commit whose metadata has ``key``."""
        for meta in reversed(self.commit_metadata(spec)):
            if key in meta:
                return meta
        return None

    @abstractmethod
    def append(self, spec: TableSpec, data: DataFrame | pa.Table, *, txns: Sequence[Txn] = (),
               metadata: dict[str, Any] | None = None) -> CommitResult: ...

    @abstractmethod
    def overwrite(self, spec: TableSpec, data: DataFrame | pa.Table, *, predicate: str | None = None,
                  txns: Sequence[Txn] = (), metadata: dict[str, Any] | None = None) -> CommitResult: ...

    @abstractmethod
    def merge(self, spec: TableSpec, data: DataFrame | pa.Table, merge: Merge, *, txns: Sequence[Txn] = (),
              metadata: dict[str, Any] | None = None) -> CommitResult: ...

    def to_arrow(self, spec: TableSpec, data: DataFrame | pa.Table, extra: Iterable[pa.Field] = ()) -> pa.Table:
        """Data in the spec's exact Arrow schema (plus ``extra`` fields such as the merge op)."""
        fields = list(spec.schema) + list(extra)
        schema = pa.schema(fields)
        if isinstance(data, DataFrame):
            data = data.select(*[f.name for f in fields]).toArrow()
        else:
            data = data.select([f.name for f in fields])
        return data.cast(schema)


def _encode_metadata(metadata: dict[str, Any] | None) -> dict[str, str]:
    return {METADATA_PREFIX + k: json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}


class DeltaRsTableStore(TableStore):
    """delta-rs on ``<root>/<layer>/<table>``; ``root`` may be a path or an object-store URI."""

    max_attempts = 6

    def __init__(self, root: str, spark: Callable[[], SparkSession], storage_options: dict[str, str] | None = None):
        super().__init__(spark)
        self.root = root.rstrip("/")
        self.storage_options = storage_options or None

    def location(self, spec: TableSpec) -> str:
        return f"{self.root}/{spec.layer}/{spec.name}"

    def _table(self, spec: TableSpec, version: int | None = None) -> DeltaTable:
        return DeltaTable(self.location(spec), version=version, storage_options=self.storage_options)

    def exists(self, spec: TableSpec) -> bool:
        return DeltaTable.is_deltatable(self.location(spec), storage_options=self.storage_options)

    def ensure(self, spec: TableSpec) -> None:
        if self.exists(spec):
            self._ensure_constraints(spec)
            return
        configuration = dict(spec.properties)
        if spec.change_data_feed:
            configuration["delta.enableChangeDataFeed"] = "true"
        try:
            dt = DeltaTable.create(
                self.location(spec), spec.schema, mode="error", partition_by=list(spec.partition_by) or None,
                name=spec.name, description=spec.description, configuration=configuration or None,
                storage_options=self.storage_options,
            )
        except Exception:
            if self.exists(spec):  # another process created it first
                self._ensure_constraints(spec)
                return
            raise
        if spec.constraints:
            dt.alter.add_constraint(dict(spec.constraints))

    def _ensure_constraints(self, spec: TableSpec) -> None:
        """Add the spec's CHECK constraints the table lacks: creating a table and adding its
        constraints are two commits, and a process killed between them leaves a table without."""
        if not spec.constraints:
            return
        table = self._table(spec)
        present = table.metadata().configuration
        missing = {name: expr for name, expr in spec.constraints.items() if f"delta.constraints.{name}" not in present}
        if missing:
            try:
                table.alter.add_constraint(missing)
            except Exception:
                # A concurrent writer may have added them first; anything else shows on the re-read.
                present = self._table(spec).metadata().configuration
                if any(f"delta.constraints.{name}" not in present for name in missing):
                    raise

    def version(self, spec: TableSpec) -> int:
        try:
            return self._table(spec).version()
        except TableNotFoundError:
            return -1

    def _read_files(self, spec: TableSpec, files: list[str]) -> DataFrame:
        schema = from_arrow_schema(spec.schema)
        if not files:
            return self.spark.createDataFrame([], schema)
        reader = self.spark.read.schema(schema)
        if spec.partition_by:
            reader = reader.option("basePath", self.location(spec))
        return reader.parquet(*files).select(*spec.column_names)

    def read(self, spec: TableSpec, version: int | None = None) -> DataFrame:
        if not self.exists(spec):
            return self._read_files(spec, [])
        return self._read_files(spec, self._table(spec, version).file_uris())

    def read_appended(self, spec: TableSpec, after_version: int, up_to_version: int) -> DataFrame:
        if up_to_version <= after_version:
            return self._read_files(spec, [])
        new = self._table(spec, up_to_version).file_uris()
        old = set(self._table(spec, after_version).file_uris()) if after_version >= 0 else set()
        if not old.issubset(new):
            raise RuntimeError(
                f"{spec.qualified_name} is not append-only between versions {after_version} and "
                f"{up_to_version} (files were removed); rebuild its consumers with a full refresh"
            )
        return self._read_files(spec, [f for f in new if f not in old])

    def read_changes(self, spec: TableSpec, after_version: int, up_to_version: int) -> DataFrame:
        schema = from_arrow_schema(spec.schema).add("_change_type", "string")
        if up_to_version <= after_version:
            return self.spark.createDataFrame([], schema)
        reader = self._table(spec).load_cdf(starting_version=after_version + 1, ending_version=up_to_version,
                                            columns=[*spec.column_names, "_change_type"])
        table = pa.table(reader)
        if table.num_rows == 0:
            return self.spark.createDataFrame([], schema)
        return self.spark.createDataFrame(table.select([*spec.column_names, "_change_type"]), schema)

    def check_writable(self) -> None:
        """Fail fast, in one line, when the lakehouse root cannot take writes (read-only
        mount, wrong permissions, a file in the way), before any Spark work starts. Object
        stores are left to their first write: probing them needs credentials it may not have."""
        if "://" in self.root and not self.root.startswith("file://"):
            return
        path = self.root.removeprefix("file://")
        probe = os.path.join(path, f".write-probe-{os.getpid()}")
        try:
            os.makedirs(path, exist_ok=True)
            with open(probe, "wb"):
                pass
            os.remove(probe)
        except OSError as e:
            raise LakehouseNotWritable(
                f"lakehouse root {self.root!r} is not writable ({e.strerror}): fix its permissions or set "
                "FITNESS_LAKEHOUSE_ROOT") from None

    def row_count(self, spec: TableSpec) -> int:
        """Rows of the current snapshot from the log's file statistics (no data read)."""
        if not self.exists(spec):
            return 0
        actions = pa.table(self._table(spec).get_add_actions(flatten=True))
        return int(pa.compute.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0

    def transaction_version(self, spec: TableSpec, app_id: str) -> int | None:
        if not self.exists(spec):
            return None
        return self._table(spec).transaction_version(app_id)

    def commit_metadata(self, spec: TableSpec) -> list[dict[str, Any]]:
        if not self.exists(spec):
            return []
        out = []
        for commit in reversed(self._table(spec).history()):
            custom = {k[len(METADATA_PREFIX):]: json.loads(v) for k, v in commit.items()
                      if k.startswith(METADATA_PREFIX)}
            if custom:
                custom["_version"] = commit.get("version")
                out.append(custom)
        return out

    def latest_commit_metadata(self, spec: TableSpec, key: str) -> dict[str, Any] | None:
        """Reads the log newest first and stops at the first match (the whole history only
        when the key is rare), so a table with a long history answers in milliseconds."""
        if not self.exists(spec):
            return None
        table = self._table(spec)
        for limit in (64, None):
            history = table.history(limit)
            for commit in history:
                if METADATA_PREFIX + key in commit:
                    custom = {k[len(METADATA_PREFIX):]: json.loads(v) for k, v in commit.items()
                              if k.startswith(METADATA_PREFIX)}
                    return custom | {"_version": commit.get("version")}
            if limit is None or len(history) < limit:
                break
        return None

    def vacuum(self, spec: TableSpec, retention_hours: int) -> list[str]:
        if not self.exists(spec):
            return []
        # The retention is this platform's setting, not Delta's 7-day floor: erasure may ask for
        # less. `full` also takes the change-data files, which hold pre-images of erased rows.
        return self._table(spec).vacuum(retention_hours=retention_hours, dry_run=False,
                                        enforce_retention_duration=False, full=True)

    def _already_applied(self, dt: DeltaTable, txns: Sequence[Txn]) -> bool:
        for txn in txns:
            recorded = dt.transaction_version(txn.app_id)
            if recorded is not None and recorded >= txn.version:
                return True
        return False

    def _commit(self, spec: TableSpec, operation: str, txns: Sequence[Txn], metadata: dict[str, Any] | None,
                action: Callable[[DeltaTable, CommitProperties], dict[str, Any] | None]) -> CommitResult:
        self.ensure(spec)
        props = CommitProperties(
            custom_metadata=_encode_metadata(metadata) or None,
            app_transactions=[Transaction(t.app_id, t.version) for t in txns] or None,
        )
        for attempt in range(1, self.max_attempts + 1):
            dt = self._table(spec)
            if txns and self._already_applied(dt, txns):
                return CommitResult(spec.qualified_name, operation, dt.version(), skipped=True)
            if self.before_commit is not None:
                self.before_commit(spec)
            try:
                metrics = action(dt, props)
            except CommitFailedError:
                if attempt == self.max_attempts:
                    raise
                time.sleep(0.05 * 2 ** attempt)
                continue
            _maybe_fail(spec)
            after = self._table(spec)
            if metrics is None:
                metrics = after.history(1)[0].get("operationMetrics", {})
            return CommitResult(spec.qualified_name, operation, after.version(), dict(metrics or {}) | {"attempts": attempt})
        raise AssertionError("unreachable")

    def append(self, spec, data, *, txns=(), metadata=None):
        table = self.to_arrow(spec, data)

        def action(dt: DeltaTable, props: CommitProperties) -> None:
            write_deltalake(dt, table, mode="append", commit_properties=props)

        return self._commit(spec, "append", txns, metadata, action)

    def overwrite(self, spec, data, *, predicate=None, txns=(), metadata=None):
        table = self.to_arrow(spec, data)

        def action(dt: DeltaTable, props: CommitProperties) -> None:
            write_deltalake(dt, table, mode="overwrite", predicate=predicate, commit_properties=props)

        return self._commit(spec, "overwrite", txns, metadata, action)

    def merge(self, spec, data, merge, *, txns=(), metadata=None):
        has_op = isinstance(data, DataFrame) and OP_COLUMN in data.columns or (
            isinstance(data, pa.Table) and OP_COLUMN in data.column_names)
        table = self.to_arrow(spec, data, [pa.field(OP_COLUMN, pa.string())] if has_op else [])
        except_cols = [OP_COLUMN] if has_op else None
        if table.num_rows == 0 and not txns:
            return CommitResult(spec.qualified_name, "merge", self.version(spec), skipped=True)

        def action(dt: DeltaTable, props: CommitProperties) -> dict[str, Any]:
            if table.num_rows == 0:
                # delta-rs commits nothing for an empty MERGE; an empty append still records
                # the progress (app transactions) that must advance with this write.
                write_deltalake(dt, spec.schema.empty_table(), mode="append", commit_properties=props)
                return {"num_source_rows": 0}
            merger = dt.merge(table, merge.predicate, source_alias="s", target_alias="t", commit_properties=props)
            for c in merge.clauses:
                if c.kind == "update_all":
                    merger = merger.when_matched_update_all(predicate=c.predicate, except_cols=except_cols)
                elif c.kind == "update":
                    merger = merger.when_matched_update(dict(c.updates or {}), predicate=c.predicate)
                elif c.kind == "delete":
                    merger = merger.when_matched_delete(predicate=c.predicate)
                elif c.kind == "insert_all":
                    merger = merger.when_not_matched_insert_all(predicate=c.predicate, except_cols=except_cols)
                elif c.kind == "delete_not_matched_by_source":
                    merger = merger.when_not_matched_by_source_delete(predicate=c.predicate)
            return merger.execute()

        return self._commit(spec, "merge", txns, metadata, action)


class SparkDeltaTableStore(TableStore):
    """Spark's native Delta (Databricks or a Spark with the Delta jars), tables named
    ``<catalog>.<layer>.<table>`` (or ``<layer>.<table>`` without a catalog).

    Same contract as the delta-rs store: explicit schemas, app transactions through Delta's
    ``txnAppId``/``txnVersion`` writer options, MERGE through ``DeltaTable.merge``. It cannot
    run here (no Delta jars, see README); the Databricks work completes and tests it.
    """

    def __init__(self, spark: Callable[[], SparkSession], catalog: str | None = None):
        super().__init__(spark)
        self.catalog = catalog

    def location(self, spec: TableSpec) -> str:
        return ".".join(p for p in (self.catalog, spec.layer, spec.name) if p)

    def exists(self, spec):
        return self.spark.catalog.tableExists(self.location(spec))

    def ensure(self, spec):
        if self.exists(spec):
            return
        self.spark.sql(f"CREATE SCHEMA IF NOT EXISTS {self.location(spec).rsplit('.', 1)[0]}")
        ddl = ", ".join(f"`{f.name}` {from_arrow_schema(pa.schema([f]))[0].dataType.simpleString()}"
                        + ("" if f.nullable else " NOT NULL") for f in spec.schema)
        parts = f" PARTITIONED BY ({', '.join(spec.partition_by)})" if spec.partition_by else ""
        properties = dict(spec.properties) | ({"delta.enableChangeDataFeed": "true"} if spec.change_data_feed else {})
        props = (" TBLPROPERTIES (" + ", ".join(f"'{k}' = '{v}'" for k, v in properties.items()) + ")"
                 if properties else "")
        self.spark.sql(f"CREATE TABLE IF NOT EXISTS {self.location(spec)} ({ddl}) USING DELTA{parts}{props}")
        for name, expr in spec.constraints.items():
            self.spark.sql(f"ALTER TABLE {self.location(spec)} ADD CONSTRAINT {name} CHECK ({expr})")

    def vacuum(self, spec, retention_hours):
        if not self.exists(spec):
            return []
        self.spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        self.spark.sql(f"VACUUM {self.location(spec)} RETAIN {int(retention_hours)} HOURS")
        return []  # Delta on Spark does not list what it deleted

    def _delta(self, spec):
        from delta.tables import DeltaTable as SparkDeltaTable  # needs the Delta jars at run time

        return SparkDeltaTable.forName(self.spark, self.location(spec))

    def version(self, spec):
        if not self.exists(spec):
            return -1
        return int(self._delta(spec).history(1).collect()[0]["version"])

    def read(self, spec, version=None):
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.table(self.location(spec)).select(*spec.column_names)

    def read_appended(self, spec, after_version, up_to_version):
        return self.read_changes(spec, after_version, up_to_version).where("_change_type = 'insert'").drop("_change_type")

    def read_changes(self, spec, after_version, up_to_version):
        return (self.spark.read.format("delta").option("readChangeFeed", "true")
                .option("startingVersion", after_version + 1).option("endingVersion", up_to_version)
                .table(self.location(spec)).select(*spec.column_names, "_change_type"))

    def _history(self, spec):
        return self._delta(spec).history().orderBy("version").collect()

    def commit_metadata(self, spec):
        out = []
        for row in self._history(spec):
            meta = row["userMetadata"]
            if meta and meta.startswith("{"):
                out.append(json.loads(meta) | {"_version": row["version"]})
        return out

    def transaction_version(self, spec, app_id):
        # Progress is kept in each commit's userMetadata (written in the same commit as the
        # data); Delta's own txn actions are not readable from PySpark.
        versions = [m["_txns"][app_id] for m in self.commit_metadata(spec) if app_id in m.get("_txns", {})]
        return max(versions) if versions else None

    def _user_metadata(self, txns, metadata):
        return json.dumps((metadata or {}) | {"_txns": {t.app_id: t.version for t in txns}}, sort_keys=True)

    def _skip(self, spec, txns):
        return any((self.transaction_version(spec, t.app_id) or -1) >= t.version for t in txns)

    def _writer(self, df, txns, metadata):
        writer = df.write.format("delta").option("userMetadata", self._user_metadata(txns, metadata))
        for txn in txns[:1]:  # Delta's own idempotent-write guard takes one (app id, version)
            writer = writer.option("txnAppId", txn.app_id).option("txnVersion", txn.version)
        return writer

    def _as_df(self, spec, data):
        if isinstance(data, pa.Table):
            data = self.spark.createDataFrame(data, from_arrow_schema(spec.schema))
        return data

    def append(self, spec, data, *, txns=(), metadata=None):
        self.ensure(spec)
        if self._skip(spec, txns):
            return CommitResult(spec.qualified_name, "append", self.version(spec), skipped=True)
        self._writer(self._as_df(spec, data).select(*spec.column_names), list(txns), metadata).mode("append") \
            .saveAsTable(self.location(spec))
        return CommitResult(spec.qualified_name, "append", self.version(spec))

    def overwrite(self, spec, data, *, predicate=None, txns=(), metadata=None):
        self.ensure(spec)
        if self._skip(spec, txns):
            return CommitResult(spec.qualified_name, "overwrite", self.version(spec), skipped=True)
        writer = self._writer(self._as_df(spec, data).select(*spec.column_names), list(txns), metadata).mode("overwrite")
        if predicate:
            writer = writer.option("replaceWhere", predicate)
        writer.saveAsTable(self.location(spec))
        return CommitResult(spec.qualified_name, "overwrite", self.version(spec))

    def merge(self, spec, data, merge, *, txns=(), metadata=None):
        self.ensure(spec)
        if self._skip(spec, txns):
            return CommitResult(spec.qualified_name, "merge", self.version(spec), skipped=True)
        source = self._as_df(spec, data)
        builder = self._delta(spec).alias("t").merge(source.alias("s"), merge.predicate)
        columns = {c: f"s.`{c}`" for c in spec.column_names}
        for c in merge.clauses:
            if c.kind in ("update_all", "update"):
                builder = builder.whenMatchedUpdate(condition=c.predicate, set=c.updates or columns)
            elif c.kind == "delete":
                builder = builder.whenMatchedDelete(condition=c.predicate)
            elif c.kind == "insert_all":
                builder = builder.whenNotMatchedInsert(condition=c.predicate, values=columns)
            elif c.kind == "delete_not_matched_by_source":
                builder = builder.whenNotMatchedBySourceDelete(condition=c.predicate)
        conf_key = "spark.databricks.delta.commitInfo.userMetadata"
        self.spark.conf.set(conf_key, self._user_metadata(list(txns), metadata))
        try:
            builder.execute()
        finally:
            self.spark.conf.unset(conf_key)
        return CommitResult(spec.qualified_name, "merge", self.version(spec))
