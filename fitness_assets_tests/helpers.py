"""Test helpers: landing data from the simulator, table snapshots."""

from __future__ import annotations

import shutil
from pathlib import Path

from deltalake import DeltaTable

from fitness_assets.lakehouse.store import DeltaRsTableStore, TableStore
from fitness_assets.simulator import Simulator, SimulatorConfig
from fitness_assets.tables import ALL_TABLES, TableSpec

SOURCES = ("registered_users", "gym_logins", "kafka_multiplex")
BRONZE_SELECTION = ["reference/date_lookup", "bronze/registered_users_bz", "bronze/gym_logins_bz",
                    "bronze/kafka_multiplex_bz"]


def stage(config: SimulatorConfig, root: Path):
    """Simulate every batch into a staging folder; returns the Truth."""
    return Simulator(config).write_all(root)


def deliver(staging: Path, landing: Path, batch: int | None = None) -> list[str]:
    """Copy the staged files of one batch (all when None) into the landing zone."""
    copied = []
    for source in SOURCES:
        folder = staging / source
        if not folder.is_dir():
            continue
        (landing / source).mkdir(parents=True, exist_ok=True)
        for f in sorted(folder.iterdir()):
            if batch is None or f.name.startswith(f"batch-{batch:05d}-"):
                shutil.copy2(f, landing / source / f.name)
                copied.append(f"{source}/{f.name}")
    return copied


def table_rows(store, spec: TableSpec, drop: tuple[str, ...] = ()) -> list[tuple]:
    """The table's rows as a sorted list of tuples (a multiset, compared exactly)."""
    if not store.exists(spec):
        return []
    table = DeltaTable(store.location(spec)).to_pyarrow_table()
    cols = [c for c in spec.column_names if c not in drop]
    rows = table.select(cols).to_pylist()
    return sorted((tuple(r[c] for c in cols) for r in rows), key=repr)


def versions(store) -> dict[str, int]:
    return {spec.qualified_name: store.version(spec) for spec in ALL_TABLES}


class SparkReadsStore(DeltaRsTableStore):
    """The delta-rs store reading through Spark only, as the Spark-Delta store (Databricks)
    does: the Spark paths of checks that read Arrow on delta-rs, on the same tables."""

    def read_columns_arrow(self, *args, **kwargs):
        return None

    def read_appended_arrow(self, *args, **kwargs):
        return None

    def read_changes_arrow(self, *args, **kwargs):
        return None

    def read_arrow(self, spec, version=None):
        return TableStore.read_arrow(self, spec, version)


def spark_reads(store: DeltaRsTableStore) -> SparkReadsStore:
    return SparkReadsStore(store.root, store._spark)
