"""What every table asset shares: keys, groups, column schemas and materialization metadata."""

import time
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
    asset,
)
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from fitness_assets.catalog import column_description
from fitness_assets.lakehouse.store import CommitResult, TableStore
from fitness_assets.pipelines import TableRefresh
from fitness_assets.resources import LakehouseResource, SparkResource
from fitness_assets.tables import TableSpec

OWNERS = ["team:data-engineering"]


def asset_key(spec: TableSpec) -> AssetKey:
    return AssetKey(spec.asset_key_path)


def _type_name(dtype: pa.DataType) -> str:
    if pa.types.is_timestamp(dtype):
        return "timestamp"
    if pa.types.is_decimal(dtype):
        return f"decimal({dtype.precision},{dtype.scale})"  # as Spark and Delta name it
    return {"int64": "long", "int32": "int", "date32[day]": "date", "bool": "boolean"}.get(str(dtype), str(dtype))


def column_schema(spec: TableSpec) -> TableSchema:
    return TableSchema(columns=[
        TableColumn(
            name=f.name, type=_type_name(f.type), description=column_description(spec, f.name),
            constraints=TableColumnConstraints(nullable=f.nullable, unique=spec.keys == (f.name,)),
        )
        for f in spec.schema
    ])


def definition_metadata(spec: TableSpec) -> dict[str, Any]:
    return {
        "dagster/column_schema": column_schema(spec),
        "dagster/table_name": spec.qualified_name,
        "primary_key": ", ".join(spec.keys) or "(append-only)",
        "partitioned_by": ", ".join(spec.partition_by) or "(none)",
    }


def asset_kwargs(spec: TableSpec) -> dict[str, Any]:
    """Keyword arguments that make ``spec``'s asset: key, group, description, owners, kinds."""
    return {
        "key": asset_key(spec),
        "group_name": spec.layer,
        "description": spec.description,
        "owners": OWNERS,
        "kinds": {"spark", "deltalake"},
        "metadata": definition_metadata(spec),
    }


def materialization_metadata(store: TableStore, spec: TableSpec, *results: CommitResult, **extra: Any) -> dict[str, Any]:
    """Row count, Delta version, location and the commits' metrics of a materialization."""
    meta: dict[str, Any] = {
        "dagster/row_count": store.row_count(spec),
        "dagster/uri": store.location(spec),
        "delta_version": store.version(spec),
    }
    commits = [{"operation": r.operation, "version": r.version, "skipped": r.skipped, **r.metrics} for r in results]
    if commits:
        meta["commits"] = MetadataValue.json(commits)
    meta.update(extra)
    return meta


CHANGE_METRICS = ("num_target_rows_inserted", "num_target_rows_updated", "num_target_rows_deleted",
                  "num_added_rows")


def rows_changed(commits: Sequence[CommitResult]) -> int:
    """Rows a refresh inserted, updated or deleted (from Delta's operation metrics): a number
    the UI plots per materialization."""
    return sum(int(c.metrics.get(m) or 0) for c in commits if not c.skipped for m in CHANGE_METRICS)


def _last_commit(store: TableStore, spec: TableSpec) -> dict[str, Any]:
    """What the table's latest commit says of itself (its commit metadata: ``erased_rows``...)."""
    meta = store.latest_commit_metadata(spec) or {}  # newest first: not the whole history
    return {k: v for k, v in meta.items() if not k.startswith("_") and isinstance(v, int | str)}


def data_version(context: AssetExecutionContext, store: TableStore, spec: TableSpec,
                 commits: Sequence[CommitResult]) -> DataVersion:
    """The Delta version of the table, except after a refresh that changed no row: one that
    only recorded its progress on its upstreams (a commit of no rows, which moves the Delta
    version) keeps the data version it had, so nothing downstream runs or looks stale. A table
    whose row count differs from its last materialization's (made again, written by someone
    else) takes its version."""
    if rows_changed(commits) == 0:
        event = context.instance.get_latest_materialization_event(asset_key(spec))
        last = event.asset_materialization if event is not None else None
        before = last.tags.get(DATA_VERSION_TAG) if last is not None and last.tags else None
        rows = getattr(last.metadata.get("dagster/row_count"), "value", None) if last is not None else None
        if before is not None and rows == store.row_count(spec):
            return DataVersion(before)
    return DataVersion(str(store.version(spec)))


def column_lineage(lineage: dict[str, list[tuple[TableSpec, str]]]) -> TableColumnLineage:
    """Column lineage from ``{column: [(upstream spec, upstream column), ...]}``."""
    return TableColumnLineage(deps_by_column={
        column: [TableColumnDep(asset_key=asset_key(spec), column_name=name) for spec, name in deps]
        for column, deps in lineage.items()
    })


def lineage_table(lineage: dict[str, list[tuple[TableSpec, str]]]) -> MetadataValue:
    """Column lineage as a Markdown table: the open-source UI shows it (it does not draw
    ``dagster/column_lineage``, a Dagster+ feature)."""
    rows = [f"| `{column}` | " + "<br>".join(f"`{spec.qualified_name}.{name}`" for spec, name in deps) + " |"
            for column, deps in lineage.items()]
    return MetadataValue.md("\n".join(["| column | comes from |", "|---|---|", *rows]))


def refresh_asset(refresh: TableRefresh, extra_args: Callable[[], tuple] = tuple) -> AssetsDefinition:
    """A thin asset around a declared refresh: run it, report rows, version and what it read.
    Its dependencies are the refresh's upstreams; ``extra_args()`` are passed after the
    reference date (settings read when the asset runs)."""
    spec, deps, lineage = refresh.target, refresh.upstreams, refresh.lineage
    kwargs = asset_kwargs(spec)
    if lineage:
        kwargs["metadata"]["dagster/column_lineage"] = column_lineage(lineage)
        kwargs["metadata"]["column_lineage"] = lineage_table(lineage)

    @asset(deps=[asset_key(d) for d in deps], **kwargs)
    def _asset(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource) -> MaterializeResult:
        store = lakehouse.store()
        args = ((lakehouse.reference(),) if refresh.needs_reference_date else ()) + extra_args()
        started = time.perf_counter()
        with store.step():
            others = [(other, store.version(other)) for other in refresh.also_writes]
            result = refresh(store, *args)
            for other, version in others:
                if store.version(other) != version:  # written here too: on that table's page as well
                    context.log_event(AssetMaterialization(
                        asset_key(other), description=f"written by the refresh of {spec.qualified_name}",
                        metadata=materialization_metadata(store, other, written_by=spec.qualified_name,
                                                          **_last_commit(store, other)),
                        tags={DATA_VERSION_TAG: str(store.version(other))}))
        seconds = time.perf_counter() - started
        if result.skipped:
            context.log.info("%s: nothing new upstream (%s)", spec.qualified_name, result.increment.describe())
        commits = [result.commit] if result.commit is not None else []
        return MaterializeResult(
            data_version=data_version(context, store, spec, commits),
            metadata=materialization_metadata(
                store, spec, *commits, upstream_versions=MetadataValue.json(result.increment.describe()),
                rows_changed=rows_changed(commits), refresh_seconds=round(seconds, 3),
                # Ages and the like are computed at this date (FITNESS_REFERENCE_DATE, else the day of the run).
                **({"reference_date": args[0].isoformat()} if refresh.needs_reference_date else {})))

    return _asset
