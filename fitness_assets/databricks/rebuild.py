"""Full rebuild of a layer: drop its tables and every table downstream of it, then materialize
them again from what is upstream (the landing zone for bronze).

Why downstream too: each silver and gold table records, with its rows, the upstream Delta
version it has taken in (``lakehouse.incremental``). A recreated upstream starts again at
version 0, below what its consumers recorded, so they would never read it again; they are
rebuilt with it. The reference calendar is not dropped: its asset rewrites it whole anyway.

No Dagster and no Databricks here: the job entry point (databricks/jobs/rebuild_layer.py)
gives it the store and a function that runs a selection of assets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fitness_assets.tables import BRONZE_TABLES, DATE_LOOKUP, GOLD_TABLES, QUARANTINE_TABLES, SILVER_TABLES, TableSpec

# Layers in dependency order, with the tables a rebuild of each drops (quarantine is written
# by the bronze assets in the same step, so it goes with bronze).
LAYERS: dict[str, tuple[TableSpec, ...]] = {
    "bronze": (*BRONZE_TABLES, *QUARANTINE_TABLES),
    "silver": SILVER_TABLES,
    "gold": GOLD_TABLES,
}


def rebuild_tables(layer: str) -> list[TableSpec]:
    """The tables a rebuild of ``layer`` drops and materializes again, upstream first."""
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}: rebuild one of {', '.join(LAYERS)}")
    names = list(LAYERS)
    return [spec for later in names[names.index(layer):] for spec in LAYERS[later]]


def asset_key_string(spec: TableSpec) -> str:
    return "/".join(spec.asset_key_path)


def rebuild_selection(layer: str) -> list[str]:
    """Asset keys the rebuild materializes: its tables, and the calendar bronze joins with."""
    keys = [asset_key_string(spec) for spec in rebuild_tables(layer)]
    return ([asset_key_string(DATE_LOOKUP)] if layer == "bronze" else []) + keys


def plan(layer: str) -> dict[str, Any]:
    """What a rebuild of ``layer`` does, as reported before doing it (and in a dry run)."""
    return {"layer": layer, "drops": [spec.qualified_name for spec in rebuild_tables(layer)],
            "materializes": rebuild_selection(layer)}


def rebuild(layer: str, store: Any, prepare: Callable[[Sequence[str]], Callable[[], bool]]) -> list[dict[str, Any]]:
    """Drop the layer's tables and those downstream (downstream first), materialize them again
    and return one result per table (asset key, Delta version, rows, table name).

    ``prepare(selection)`` does everything that can fail on the configuration (the landing
    root, the lakehouse, Spark) and returns the run of the selection (true when it succeeded):
    it is called before the first table is dropped, so a rebuild that cannot run drops nothing.
    ``store`` must be able to drop tables."""
    tables = rebuild_tables(layer)
    run_selection = prepare(rebuild_selection(layer))
    for spec in reversed(tables):
        store.drop(spec)
    if not run_selection():
        raise RuntimeError(f"the rebuild of {layer} failed: see the run's steps above")
    return [{"asset_key": asset_key_string(spec), "table": store.location(spec), "delta_version": store.version(spec),
             "rows": store.row_count(spec)} for spec in tables if store.exists(spec)]
