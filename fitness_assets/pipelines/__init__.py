"""Refresh procedures of the silver and gold tables: plan the increment, read what changed
upstream, call the pure transforms, write through the table store. No Dagster here.

Each table's refresh is declared once, with ``@refresh(target, upstreams, lineage)``: the
upstreams are both what the increment is planned over and the asset's dependencies, and the
column lineage is what the asset shows, so they cannot drift apart."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fitness_assets.lakehouse import incremental as inc
from fitness_assets.lakehouse.incremental import Increment
from fitness_assets.lakehouse.store import ChangesGone, CommitResult, StalePlan, TableStore
from fitness_assets.tables import TableSpec

Lineage = dict[str, list[tuple[TableSpec, str]]]

#: How many times a refresh plans again when another run overtook it (each time that run
#: committed something new, so more than a few means runs that never stop overlapping).
REPLANS = 3


@dataclass
class Refresh:
    """What one refresh of a table did."""

    increment: Increment
    commit: CommitResult | None = None

    @property
    def skipped(self) -> bool:
        return self.commit is None or self.commit.skipped


@dataclass(frozen=True)
class TableRefresh:
    """One table's refresh: ``body(store, increment, *args)`` runs only when an upstream has
    versions the target has not taken in (planning reads Delta logs only: no Spark job)."""

    target: TableSpec
    upstreams: tuple[TableSpec, ...]
    body: Callable[..., CommitResult | None]
    lineage: Lineage
    needs_reference_date: bool = False
    # A table whose rows depend on more than its upstreams' data (a reference date, a
    # threshold): ``stale(store, *args)`` is true when it was computed with other values, and
    # the body then runs with nothing new upstream too.
    stale: Callable[..., bool] | None = None
    # Other tables the body may write besides its target (an erasure in a quarantine table):
    # the asset reports a materialization of each one it changed.
    also_writes: tuple[TableSpec, ...] = ()

    def __call__(self, store: TableStore, *args) -> Refresh:
        for attempt in range(1, REPLANS + 1):
            try:
                return self._once(store, *args)
            except StalePlan:
                # Another run (a CLI run beside the daemon's) committed this table between our
                # plan and our commit: what it took in is not taken in twice; plan again.
                if attempt == REPLANS:
                    raise
        raise AssertionError("unreachable")

    def _once(self, store: TableStore, *args) -> Refresh:
        i = inc.plan(store, self.target, self.upstreams)
        if i.is_empty and not (self.stale is not None and self.stale(store, *args)):
            return Refresh(i)
        try:
            return Refresh(i, self.body(store, i, *args))
        except Exception as error:
            if not _change_data_gone(error):
                raise
            # Spark's Delta finds the files missing only when the query runs (the delta-rs
            # store raises ChangesGone itself, when it reads them).
            raise ChangesGone(
                f"the change data of an upstream of {self.target.qualified_name} is gone (vacuumed before "
                f"{self.target.qualified_name} took it in: FITNESS_ERASURE_RETENTION_HOURS is shorter than it "
                f"lagged): run `fitness-assets rebuild {self.target.layer}`") from None


#: Delta's error condition for a change data file that is missing (vacuumed).
CHANGE_DATA_GONE = "DELTA_CHANGE_DATA_FILE_NOT_FOUND"


def _change_data_gone(error: BaseException) -> bool:
    """Whether Spark's Delta failed on vacuumed change data: by its error condition, which
    classic PySpark and Spark Connect both put in the message (Databricks may wrap it in a
    read-file error, so the causes are looked at too)."""
    seen: BaseException | None = error
    for _ in range(10):  # a chain of causes, never a long one
        if seen is None:
            break
        if CHANGE_DATA_GONE in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def refresh(target: TableSpec, upstreams: Sequence[TableSpec], lineage: Lineage, needs_reference_date: bool = False,
            stale: Callable[..., bool] | None = None,
            also_writes: Sequence[TableSpec] = ()) -> Callable[[Callable[..., CommitResult | None]], TableRefresh]:
    """Declare ``target``'s refresh from the function that computes and writes an increment."""
    def declare(body: Callable[..., CommitResult | None]) -> TableRefresh:
        return TableRefresh(target, tuple(upstreams), body, lineage, needs_reference_date, stale, tuple(also_writes))

    return declare


def same_columns(upstream: TableSpec, *columns: str) -> Lineage:
    """Lineage of columns copied under the same name from ``upstream``."""
    return {c: [(upstream, c)] for c in columns}
