"""What every table asset shares: keys, groups, column schemas and materialization metadata."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from dagster import AssetKey, MetadataValue, TableColumn, TableColumnConstraints, TableSchema

from fitness_assets.lakehouse.store import CommitResult, TableStore
from fitness_assets.tables import TableSpec

OWNERS = ["team:data-engineering"]


def asset_key(spec: TableSpec) -> AssetKey:
    return AssetKey(spec.asset_key_path)


def _type_name(dtype: pa.DataType) -> str:
    if pa.types.is_timestamp(dtype):
        return "timestamp"
    return {"int64": "long", "int32": "int", "date32[day]": "date", "bool": "boolean"}.get(str(dtype), str(dtype))


def column_schema(spec: TableSpec) -> TableSchema:
    return TableSchema(columns=[
        TableColumn(
            name=f.name, type=_type_name(f.type),
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
        "kinds": {"spark", "delta"},
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
