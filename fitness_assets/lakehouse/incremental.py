"""Incremental processing: what is new upstream since a table's last successful run, and
writing a table so that its progress is committed atomically with its data.

Progress is one application transaction per upstream table, ``<target><-<upstream>``, whose
version is the upstream version the target has taken in. It is written in the same Delta
commit as the target's rows, so a crash before the commit redoes the work and a crash after
it finds nothing left to do.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fitness_assets.lakehouse.store import OP_COLUMN, Clause, CommitResult, Merge, TableStore, Txn, Within
from fitness_assets.tables import TableSpec

UPSERT, DELETE = "upsert", "delete"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def progress_app_id(target: TableSpec, upstream: TableSpec) -> str:
    return f"{target.qualified_name}<-{upstream.qualified_name}"


def identity_app_id(target: TableSpec, upstream: TableSpec) -> str:
    """Beside the progress: which table ``upstream`` was (its Delta table id, as a number)."""
    return f"{progress_app_id(target, upstream)}#table"


def table_number(table_id: str) -> int:
    """A Delta table id (a UUID) as a number an application transaction can hold (60 bits)."""
    return int(table_id.replace("-", "")[:15], 16)


class UpstreamRemade(RuntimeError):
    """An upstream table was made again (a new Delta table) after the target took in the old one."""


@dataclass(frozen=True)
class Increment:
    """The upstream versions ``(after, up_to]`` that one run of ``target`` takes in."""

    target: TableSpec
    after: dict[str, int]
    up_to: dict[str, int]
    upstreams: dict[str, TableSpec]
    identities: dict[str, int] = field(default_factory=dict)  # each upstream's ``table_number``

    @property
    def is_empty(self) -> bool:
        return all(self.up_to[n] <= self.after[n] for n in self.up_to)

    def advanced(self, upstream: TableSpec) -> bool:
        return self.up_to[upstream.qualified_name] > self.after[upstream.qualified_name]

    def from_start(self, upstream: TableSpec) -> bool:
        """The increment takes in the upstream's whole history (the target never took it in)."""
        return self.after[upstream.qualified_name] < 0 <= self.up_to[upstream.qualified_name]

    def txns(self) -> list[Txn]:
        """Progress to commit with the target's write: only upstreams that moved, so a
        recorded version is never written again (which would read as 'already applied'); with
        each, the identity of the upstream table it is a version of. Each carries the position
        it was planned from, so a run that another run overtook between its plan and its
        commit does not commit (``StalePlan``) and plans again."""
        moved = [(name, spec) for name, spec in self.upstreams.items() if self.up_to[name] > self.after[name]]
        return ([Txn(progress_app_id(self.target, spec), self.up_to[name], after=self.after[name])
                 for name, spec in moved]
                + [Txn(identity_app_id(self.target, spec), self.identities[name], guard=False)
                   for name, spec in moved if name in self.identities])

    def describe(self) -> dict[str, str]:
        return {name: f"{self.after[name]}..{self.up_to[name]}" for name in self.up_to}


def plan(store: TableStore, target: TableSpec, upstreams: Sequence[TableSpec]) -> Increment:
    """What ``target`` has not taken in yet from each of ``upstreams``.

    Raises ``UpstreamRemade`` when an upstream is no longer the table the target took in
    (deleted and made again: a new Delta table id, or a version below the one taken in):
    its versions count from the start again, so the target would silently miss its rows."""
    store.ensure(target)
    after, up_to, identities = {}, {}, {}
    for spec in upstreams:
        name = spec.qualified_name
        recorded = store.transaction_version(target, progress_app_id(target, spec))
        after[name] = -1 if recorded is None else recorded
        up_to[name] = store.version(spec)
        table_id = store.table_id(spec) if up_to[name] >= 0 else None
        if table_id is not None:
            identities[name] = table_number(table_id)
        if recorded is None:
            continue
        # A target written before identities were recorded has none: only the version tells.
        was = store.transaction_version(target, identity_app_id(target, spec))
        if recorded > up_to[name] or (was is not None and was != identities.get(name)):
            raise UpstreamRemade(
                f"{name} was deleted or made again after {target.qualified_name} took in version {recorded} of the "
                f"table it replaced, whose rows {target.qualified_name} still holds: rebuild {target.layer} "
                f"and what is downstream of it (fitness-assets rebuild {target.layer}; on Databricks the "
                "databricks_rebuild_layer job)")
    return Increment(target, after, up_to, {s.qualified_name: s for s in upstreams}, identities)


# ---------------------------------------------------------------------------- lineage

Upstreams = Mapping[str, Sequence[TableSpec]]
"""The tables each table is refreshed from, by qualified name (the asset graph's table edges)."""


def _closure(spec: TableSpec, upstreams: Upstreams) -> dict[str, TableSpec]:
    """``spec`` and every table upstream of it, by qualified name."""
    seen, todo = {spec.qualified_name: spec}, [spec]
    while todo:
        for parent in upstreams.get(todo.pop().qualified_name, ()):
            if parent.qualified_name not in seen:
                seen[parent.qualified_name] = parent
                todo.append(parent)
    return seen


def reflected_version(store: TableStore, spec: TableSpec, source: TableSpec, upstreams: Upstreams) -> int | None:
    """The version of ``source`` (``spec`` itself or a table upstream of it) that ``spec``'s
    current data reflects: its own version; for a direct upstream, the progress ``spec``
    recorded; further up, the version its upstreams reflect, when ``spec`` has taken in
    everything they hold. None when that is not known (``spec`` is behind an upstream that
    leads to ``source``, or two paths reflect different versions)."""
    if spec.qualified_name == source.qualified_name:
        return store.version(spec)
    found: set[int | None] = set()
    for parent in upstreams.get(spec.qualified_name, ()):
        taken = store.transaction_version(spec, progress_app_id(spec, parent))
        taken = -1 if taken is None else taken
        if parent.qualified_name == source.qualified_name:
            found.add(taken)
        elif source.qualified_name in _closure(parent, upstreams):
            found.add(reflected_version(store, parent, source, upstreams)
                      if taken >= store.version(parent) else None)
    return found.pop() if len(found) == 1 else None


def out_of_step(store: TableStore, table: TableSpec, other: TableSpec, upstreams: Upstreams) -> str | None:
    """Why ``table`` and ``other`` may not hold the same upstream data, or None when they do.

    Two tables that compare with each other (a summary and a finer table from the same
    readings, a table and the one it is made from) agree only on the same upstream data. A
    run may refresh one while the other is still behind (not selected, in another run, held
    back by a failed check). They are in step when, at every table shared by both their
    lineages that feeds a table of only one of them (or one of them), both reflect the same
    version."""
    mine, theirs = _closure(table, upstreams), _closure(other, upstreams)
    shared = mine.keys() & theirs.keys()
    apart = [n for n in {**mine, **theirs} if n not in shared]
    frontier = sorted({p.qualified_name: p for n in apart for p in upstreams.get(n, ())
                       if p.qualified_name in shared}.items())
    for name, source in frontier:
        held = [(spec, reflected_version(store, spec, source, upstreams)) for spec in (table, other)]
        if held[0][1] is None or held[0][1] != held[1][1]:
            return ", ".join(f"{spec.qualified_name} holds {name} at version {version}" if version is not None
                             else f"{spec.qualified_name} has not taken in everything upstream of it from {name}"
                             for spec, version in held)
    return None


def appended(store: TableStore, inc: Increment, upstream: TableSpec, within: Within | None = None) -> DataFrame:
    """Rows appended to an append-only upstream within the increment (only those ``within`` a
    range, when given)."""
    name = upstream.qualified_name
    return store.read_appended(upstream, inc.after[name], inc.up_to[name], within)


def changed(store: TableStore, inc: Increment, upstream: TableSpec) -> DataFrame:
    """Change-feed rows (pre- and post-images, inserts, deletes) of an upstream within the increment."""
    name = upstream.qualified_name
    return store.read_changes(upstream, inc.after[name], inc.up_to[name])


def snapshot(store: TableStore, inc: Increment, upstream: TableSpec, within: Within | None = None) -> DataFrame:
    """The upstream as of the version this increment reads up to (only its rows ``within`` a
    range, when given)."""
    version = inc.up_to[upstream.qualified_name]
    return store.read(upstream, version if version >= 0 else None, within=within)


def utc(micros: int) -> dt.datetime:
    """A timestamp collected as epoch microseconds (``F.unix_micros``; Spark would hand a naive
    datetime in the process's zone) as an aware UTC datetime, for a ``Within`` bound."""
    return EPOCH + dt.timedelta(microseconds=micros)


def union_distinct(frames: Sequence[DataFrame]) -> DataFrame:
    """The distinct rows of several scope frames with the same columns."""
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame)
    return out.distinct()


def _first_fill(store: TableStore, target: TableSpec, rows: DataFrame | pa.Table, inc: Increment,
                metadata: dict | None) -> CommitResult | None:
    """``rows`` appended with the increment's progress when the target is empty; None (nothing
    written) when it is not, or when there is no progress to record (the general path then
    commits nothing when there is nothing to write)."""
    progress = inc.txns()
    if not progress or not store.is_empty(target):
        return None
    return store.append(target, rows.select(list(target.column_names)), txns=progress,
                        metadata=(metadata or {}) | {"increment": inc.describe()})


def key_predicate(keys: Sequence[str]) -> str:
    return " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)


def merge_rows(store: TableStore, target: TableSpec, rows: DataFrame | pa.Table, inc: Increment, clauses: Sequence[Clause],
               extra_predicate: str | None = None, metadata: dict | None = None) -> CommitResult | None:
    """MERGE ``rows`` on the target's key with ``clauses``, recording the increment's progress.

    Into an empty target (a first fill, a rebuild) a MERGE whose only insert is an
    unconditional ``insert_all`` inserts every source row and nothing else: the rows are
    appended instead, without the MERGE's join (measured at 5M heart-rate readings: the
    write 5.4 s as a MERGE)."""
    inserts = [c for c in clauses if c.kind.startswith("insert")]
    if len(inserts) == 1 and inserts[0].kind == "insert_all" and inserts[0].predicate is None:
        first = _first_fill(store, target, rows, inc, metadata)
        if first is not None:
            return first
    predicate = key_predicate(target.keys) + (f" AND {extra_predicate}" if extra_predicate else "")
    return store.merge(target, rows, Merge(predicate, tuple(clauses)), txns=inc.txns(),
                       metadata=(metadata or {}) | {"increment": inc.describe()})


SYNC_CLAUSES = (
    Clause("delete", f"s.{OP_COLUMN} = '{DELETE}'"),
    Clause("update_all", f"s.{OP_COLUMN} = '{UPSERT}'"),
    Clause("insert_all", f"s.{OP_COLUMN} = '{UPSERT}'"),
)


def sync_scope(store: TableStore, target: TableSpec, rows: DataFrame, scope: DataFrame, inc: Increment,
               metadata: dict | None = None, within: Within | None = None,
               unique_rows: bool = False) -> CommitResult | None:
    """Make the target's rows inside ``scope`` (distinct values of some key columns) equal to
    ``rows``: new and changed rows are upserted, rows no longer produced are deleted, unchanged
    rows are left alone (so the change feed shows only real changes). One atomic commit.
    ``within``, when given, is a range that holds every target row of the scope: only the
    target's rows in it are read for the comparison.

    Into an empty target (a first fill, a full rebuild) there is nothing to compare with: the
    distinct rows are appended, one Spark job instead of a diff against the table and a MERGE
    (with the increment's progress; without progress to record, the general path commits
    nothing when there is nothing to write). ``unique_rows``: ``rows`` holds no row twice by
    construction, so they are appended as they are (the distinct is a shuffle of every row:
    4.2 s of the 6.6 s it took to hand 4.7M `workout_bpm` rows to delta-rs); the table's
    ``keys_unique`` check would fail on a transform that broke that promise."""
    fresh = rows.select(*target.column_names)
    if not unique_rows:
        fresh = fresh.distinct()
    first = _first_fill(store, target, fresh, inc, metadata)
    if first is not None:
        return first
    scope = scope.distinct()
    existing = store.read(target, within=within).join(F.broadcast(scope), on=scope.columns, how="left_semi")
    return merge_rows(store, target, _differences(target, fresh, existing), inc, SYNC_CLAUSES, metadata=metadata)


def _differences(target: TableSpec, rows: DataFrame, existing: DataFrame) -> DataFrame:
    """The MERGE source that turns ``existing`` (the target's rows in a scope) into ``rows``
    (distinct): rows new or changed, to upsert, and rows whose key is no longer produced, to
    delete. One outer join on the key (NULL-safe, like the comparison of whole rows), so
    ``rows``, a transform's whole plan, is computed once."""
    columns = list(target.column_names)
    new = rows.select(*[F.col(c).alias(f"n_{c}") for c in columns], F.lit(True).alias("n__row"))
    old = existing.select(*[F.col(c).alias(f"o_{c}") for c in columns], F.lit(True).alias("o__row"))
    on = [new[f"n_{k}"].eqNullSafe(old[f"o_{k}"]) for k in target.keys]
    produced, stored = F.col("n__row").isNotNull(), F.col("o__row").isNotNull()
    same = stored
    for c in columns:
        same = same & F.col(f"n_{c}").eqNullSafe(F.col(f"o_{c}"))
    return (new.join(old, on=on, how="full_outer").where(~produced | ~same)
            .select(*[F.when(produced, F.col(f"n_{c}")).otherwise(F.col(f"o_{c}")).alias(c) for c in columns],
                    F.when(produced, F.lit(UPSERT)).otherwise(F.lit(DELETE)).alias(OP_COLUMN)))
