"""The checks of every layer, declared as data and run as one step per table.

A layer declares its rules with the factories below (``key_checks``, ``rule_check``,
``table_check``, ``link_check``, ``custom_check``); ``table_checks`` turns them into one
multi-check per table, so a table's rules cost one Dagster step instead of one each, and:

- every rule given by its offending rows (SQL conditions, unique keys, links,
  table rules) is counted in one Spark job per table, the conditions in one pass over the rows;
- rules local to a row (conditions, unique keys, and links while the parent table
  is unchanged) look only at the rows written since the check's own last evaluation of the
  same table, whatever the other checks' outcomes:
  - after a pass, the rows written since are the whole question (key uniqueness compares the
    keys just written with the whole table);
  - after a failure of a condition or a link, the offending rows it counted are carried over:
    the count is that number, plus the offending rows written since, minus the offending rows
    deleted or updated since (from the change data feed; an append-only table has none); when
    no offending row was written or removed since, the offending rows are the same, and so is
    the previous sample (no read of the whole table for it);
  - a failed key uniqueness, a rebuilt table, a changed parent: the whole table again;
- when nothing a table's checks read has changed since their last evaluation (the Delta
  identity and version of the table and of every other table they read, the landing files'
  sizes and times for the reconciliation, the reference date) and none of them failed
  blocking, the step evaluates nothing and says so: no Spark job. It records the previous
  results again, unchanged, with the run that evaluated them (``evaluated_in_run``), so the
  latest materialization has them (a standing warning stays a warning, a blocking check
  gates); a blocking failure is always evaluated again (incrementally, as above), never kept.

Each result carries the number of offending rows and a small sample, never personal columns.
"""


import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    MetadataValue,
    multi_asset_check,
)
from dagster._core.storage.asset_check_execution_record import COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from fitness_assets.assets.common import asset_key
from fitness_assets.lakehouse.incremental import Upstreams, out_of_step, utc
from fitness_assets.lakehouse.store import Condition, OneOf, TableStore, Within
from fitness_assets.resources import LakehouseResource, SparkResource
from fitness_assets.tables import TableSpec
from fitness_assets.transforms import quality

SAMPLE_ROWS = 5
STATE_KEY = "checked_state"  # metadata of every result: what the evaluation read
KEPT_KEY = "evaluated_in_run"  # metadata of a result kept from an evaluation on the same data
SINCE_KEY = "checked_rows"
CARRIED_KEY = "offending_rows_before"  # carried over from the previous evaluation


@dataclass(frozen=True)
class Link:
    """Every non-NULL value of ``columns`` has a row in ``parent`` with it in ``parent_columns``."""

    columns: tuple[str, ...]
    parent: TableSpec
    parent_columns: tuple[str, ...]

    def offenders(self, rows: DataFrame, parent: DataFrame) -> DataFrame:
        """The rows of ``rows`` without a match in ``parent``."""
        keys = parent.select(*[F.col(p).alias(c) for p, c in zip(self.parent_columns, self.columns, strict=True)])
        return (rows.where(F.col(self.columns[0]).isNotNull())
                .join(F.broadcast(keys.distinct()), on=list(self.columns), how="left_anti"))


@dataclass(frozen=True)
class Check:
    """One rule of one table. Exactly one of ``condition`` (a SQL condition true for an
    offending row), ``unique`` (the table's keys occur once), ``offenders`` (the offending
    rows, from the store) or ``evaluate`` (any other rule, given the store and the lakehouse
    resource) says how it is evaluated."""

    table: TableSpec
    name: str
    description: str
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR
    blocking: bool | None = None  # default: ERROR checks block downstream
    condition: str | None = None
    unique: bool = False
    offenders: Callable[[TableStore], DataFrame] | None = None
    link: Link | None = None
    evaluate: Callable[..., AssetCheckResult] | None = None
    # ``evaluate`` takes ``since``: the versions of the tables it reads at its last passing
    # evaluation of the same tables (None: evaluate everything).
    incremental: bool = False
    reads: tuple[TableSpec, ...] = ()  # other tables the rule reads
    landing_state: Callable[[TableStore, LakehouseResource], str] | None = None  # fingerprint of files it reads

    @property
    def is_blocking(self) -> bool:
        return self.severity == AssetCheckSeverity.ERROR if self.blocking is None else self.blocking

    @property
    def is_local(self) -> bool:
        """Decided row by row (a link: as long as its parent table does not change)."""
        return self.condition is not None or self.unique or self.link is not None

    def key(self) -> AssetCheckKey:
        return AssetCheckKey(asset_key(self.table), self.name)


# ---------------------------------------------------------------------------- factories


def rule_check(spec: TableSpec, name: str, bad_condition: str, description: str,
               severity: AssetCheckSeverity = AssetCheckSeverity.ERROR) -> Check:
    """No row satisfies the SQL condition ``bad_condition``."""
    return Check(spec, name, description, severity=severity, condition=bad_condition)


def key_checks(spec: TableSpec) -> list[Check]:
    """The check every keyed table has: its keys occur once. That they are not NULL is no
    check (it could never fail): key columns are NOT NULL columns, and Delta refuses a write
    with a NULL in one (delta-rs and Databricks alike)."""
    nullable = [k for k in spec.keys if k not in spec.not_null]
    if nullable:
        raise ValueError(f"{spec.qualified_name}: key columns {nullable} must be in not_null")
    return [Check(spec, "keys_unique", f"Each ({', '.join(spec.keys)}) occurs once.", unique=True)]


def table_check(spec: TableSpec, name: str, description: str, offenders: Callable[[TableStore], DataFrame], *,
                severity: AssetCheckSeverity = AssetCheckSeverity.ERROR, blocking: bool | None = None,
                reads: Sequence[TableSpec] = ()) -> Check:
    """Passes when ``offenders(store)`` has no rows (a rule over the whole table, or several).
    ``reads`` names the other tables ``offenders`` reads."""
    return Check(spec, name, description, severity=severity, blocking=blocking, offenders=offenders,
                 reads=tuple(reads))


def link_check(spec: TableSpec, columns: Sequence[str], parent: TableSpec, parent_columns: Sequence[str],
               severity: AssetCheckSeverity = AssetCheckSeverity.WARN) -> Check:
    """Every value of ``columns`` exists in ``parent`` (a warning by default: members may
    register after their first visit or reading). Counts the rows without a match."""
    return Check(spec, f"{'_'.join(columns)}_in_{parent.name}",
                 f"Every {', '.join(columns)} has a match in {parent.qualified_name}.", severity=severity,
                 link=Link(tuple(columns), parent, tuple(parent_columns)), reads=(parent,))


def custom_check(spec: TableSpec, name: str, description: str,
                 evaluate: Callable[..., AssetCheckResult], *,
                 severity: AssetCheckSeverity = AssetCheckSeverity.ERROR, blocking: bool | None = None,
                 reads: Sequence[TableSpec] = (),
                 landing_state: Callable[[TableStore, LakehouseResource], str] | None = None,
                 incremental: bool = False) -> Check:
    """A rule with its own evaluation (``evaluate(store, lakehouse)`` returns the result; its
    severity is set here). ``incremental``: it is called with ``since=`` too, the Delta
    versions (by qualified name) of the tables it read at its last passing evaluation of the
    same tables, or None when it must look at everything."""
    return Check(spec, name, description, severity=severity, blocking=blocking, evaluate=evaluate,
                 reads=tuple(reads), landing_state=landing_state, incremental=incremental)


# ---------------------------------------------------------------------------- evaluation


def result_from_offenders(offenders: DataFrame | list | None, count: int, *,
                          personal: Sequence[str] = ()) -> AssetCheckResult:
    """A check result whose outcome is 'no offending rows' (``count`` of them, counted by
    ``count_rows``), with a sample of them (or the sample already taken, a list). The sample
    lands in Dagster's event log, which is not a place for personal data: the ``personal``
    columns are left out of it."""
    sample = []
    if isinstance(offenders, list):
        sample = [{k: v for k, v in row.items() if k not in personal} for row in offenders]
    elif count:
        shown = offenders.drop(*[c for c in personal if c in offenders.columns])
        sample = [{k: _as_utc(v) for k, v in r.asDict().items()} for r in shown.limit(SAMPLE_ROWS).collect()]
    return AssetCheckResult(passed=count == 0,
                            metadata={"offending_rows": count, "sample": MetadataValue.json(_jsonable(sample))})


REMOVED = " (removed)"  # suffix of the count of offending rows deleted or replaced since the last evaluation


def count_rows(frames: dict[str, DataFrame],
               tagged: Sequence[tuple[DataFrame, dict[str, str]]] = ()) -> dict[str, int]:
    """The row count of each of ``frames`` and of each condition of ``tagged``, all in one
    Spark job instead of one each: a union of one column naming what each row counts for,
    counted by name. Each ``(rows, conditions)`` of ``tagged`` is one pass over ``rows``, each
    row tagged with the names of the conditions it satisfies."""
    names = [*frames, *[name for _, conditions in tagged for name in conditions]]
    if not names:
        return {}
    parts = [frame.select(F.lit(name).alias("check")) for name, frame in frames.items()]
    for rows, conditions in tagged:
        if conditions:
            tags = F.array(*[F.when(F.expr(condition), F.lit(name)) for name, condition in conditions.items()])
            parts.append(rows.select(F.explode(F.filter(tags, lambda tag: tag.isNotNull())).alias("check")))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionAll(part)
    counted = {row["check"]: row["count"] for row in union.groupBy("check").count().collect()}
    return {name: int(counted.get(name, 0)) for name in names}


def _as_utc(value: Any) -> Any:
    """A timestamp PySpark collected (a naive datetime in this process's zone, whatever the
    session's zone) as the UTC instant it is, as the rows read by Arrow show it."""
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.astimezone(dt.UTC)
    return value


def _jsonable(rows: list[dict]) -> list[dict]:
    return [{k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in r.items()} for r in rows]


@dataclass(frozen=True)
class Prior:
    """A check's latest completed evaluation: its outcome, the state it recorded (``_state``)
    and the offending rows it counted."""

    passed: bool
    state: dict | None
    offending: int | None
    sample: list | None = None
    evaluation: Any = None  # Dagster's AssetCheckEvaluation, to record it again unchanged
    run_id: str | None = None


@dataclass(frozen=True)
class Scope:
    """What one evaluation of a check reads: the rows written after version ``after`` (None:
    the whole table), on top of ``carried`` offending rows counted before."""

    after: int | None = None
    carried: int = 0
    versions: dict[str, int] | None = None  # an incremental custom check's: every table's ``after``
    sample: list | None = None  # the sample of the ``carried`` offending rows


WHOLE = Scope()


def scope_of(check: Check, prior: Prior | None, state: dict) -> Scope:
    """The least a check must read to know its outcome on the data of ``state``, given its
    previous evaluation (see the module's docstring)."""
    name = check.table.qualified_name
    before = prior.state if prior is not None else None
    if check.incremental:
        same = before and all(before.get("tables", {}).get(t) == state["tables"][t] for t in state["tables"])
        if not (same and prior.passed and before.get("rules", {}).get(check.name) == state["rules"][check.name]):
            return WHOLE
        versions = before.get("versions", {})
        if not all(isinstance(versions.get(t), int) and versions[t] <= state["versions"][t] for t in state["versions"]):
            return WHOLE
        return Scope(versions[name], versions={t: versions[t] for t in state["versions"]})
    if (not check.is_local or not before or before.get("tables", {}).get(name) != state["tables"][name]
            or before.get("rules", {}).get(check.name) != state["rules"][check.name]):
        return WHOLE  # a rule over the whole table, no usable evaluation, a table made again, an edited rule
    if check.link is not None:
        parent = check.link.parent.qualified_name
        if any(before.get(kind, {}).get(parent) != state[kind][parent] for kind in ("tables", "versions")):
            return WHOLE  # the parent changed: a row's link may have appeared or gone
    after = before.get("versions", {}).get(name)
    if not isinstance(after, int) or not 0 <= after <= state["versions"][name]:
        return WHOLE
    if prior.passed:
        return Scope(after)
    if check.unique or prior.offending is None:
        return WHOLE  # duplicates are not a count of rows that can be carried over
    return Scope(after, prior.offending, sample=prior.sample)


def _changes_since(store: TableStore, spec: TableSpec, after: int,
                   up_to: int) -> tuple[DataFrame, DataFrame | None] | None:
    """The rows written to ``spec`` in versions ``(after, up_to]`` and the rows deleted or
    replaced in them (None: an append-only table removed none); None when they cannot be told
    apart (files removed from a table without a change feed)."""
    if spec.change_data_feed:
        changes = store.read_changes(spec, after, up_to)
        kind = F.col("_change_type")
        return (changes.where(kind.isin("insert", "update_postimage")).drop("_change_type"),
                changes.where(kind.isin("delete", "update_preimage")).drop("_change_type"))
    try:
        return store.read_appended(spec, after, up_to), None
    except RuntimeError:
        return None


def evaluate_checks(store: TableStore, lakehouse: LakehouseResource, checks: Sequence[Check],
                    scopes: dict[str, Scope] | None = None, version: int | None = None) -> dict[str, AssetCheckResult]:
    """Evaluate the checks of one table at ``version`` (its latest when None), each on its
    ``scopes`` entry (the whole table when it has none)."""
    spec = checks[0].table
    version = store.version(spec) if version is None else version
    at = version if version >= 0 else None
    read: list[DataFrame] = []

    def table() -> DataFrame:
        """The whole table, as a frame built only when a check reads it (a scoped evaluation
        reads what changed; building a frame over a large table's files costs ~0.3 s at 5M)."""
        if not read:
            read.append(store.read(spec, at))
        return read[0]

    parents: dict[str, DataFrame] = {}

    def parent(link: Link) -> DataFrame:
        return parents.setdefault(link.parent.qualified_name, store.read(link.parent))

    def offenders(c: Check, rows: DataFrame | None) -> DataFrame:
        """``c``'s offending rows among ``rows`` (None: the whole table)."""
        if c.condition is not None:
            return (table() if rows is None else rows).where(F.expr(c.condition))
        if c.link is not None:
            return c.link.offenders(table() if rows is None else rows, parent(c.link))
        keys = list(spec.keys)  # unique: the keys of ``rows`` that occur more than once in the table
        if rows is None:
            return whole_table_duplicates(keys)
        return quality.duplicate_keys(within_keys(rows, keys).join(F.broadcast(rows.select(*keys).distinct()), keys,
                                                                  "left_semi"), keys)

    def whole_table_duplicates(keys: list[str]) -> DataFrame:
        """Counted by Arrow where the store reads Arrow itself (5M keys: ~0.8 s against 3-4 s
        of a Spark aggregation that shuffles every key), the few duplicates handed to Spark."""
        columns = store.read_columns_arrow(spec, keys, at)
        if columns is None:
            return quality.duplicate_keys(table(), keys)
        repeated = quality.duplicate_keys_arrow(columns, keys)
        store.codegen.reading(repeated.num_rows)
        return store.frame(repeated, from_arrow_schema(repeated.schema))

    spans: dict[int, DataFrame] = {}

    def within_keys(rows: DataFrame, keys: list[str]) -> DataFrame:
        """The table, or only its stretch of the rows' key range when it is clustered by one of
        its keys: a duplicate of a key has that key's value (read once per ``rows``)."""
        column = spec.cluster_by
        if column not in keys:
            return table()
        if id(rows) not in spans:  # tables are clustered by a timestamp (TableSpec.cluster_by)
            low, high = rows.agg(F.min(F.unix_micros(column)), F.max(F.unix_micros(column))).first()
            spans[id(rows)] = table() if low is None else store.read(
                spec, at, within=Within(column, utc(low), utc(high)))
        return spans[id(rows)]

    counted = [c for c in checks if c.evaluate is None]
    effective: dict[str, Scope] = {}
    added_rows: dict[str, DataFrame | None] = {}  # None: the whole table
    frames: dict[str, DataFrame] = {}
    tagged: list[tuple[DataFrame, dict[str, str]]] = []
    groups: dict[int | None, list[Check]] = defaultdict(list)
    counted_apart: dict[str, int] = {}  # offending rows counted without Spark
    sampled_apart: dict[str, list[dict]] = {}  # and their sample
    for c in counted:
        groups[(scopes or {}).get(c.name, WHOLE).after].append(c)
    for after, group in groups.items():
        changes = None if after is None or after > version else _changes_since(store, spec, after, version)
        added, removed = changes if changes is not None else (None, None)
        conditions = {c.name: c.condition for c in group if c.condition is not None}
        if conditions:
            tagged.append((table() if added is None else added, conditions))
        if removed is not None:
            tagged.append((removed, {name + REMOVED: condition for name, condition in conditions.items()}))
        for c in group:
            effective[c.name] = (scopes or {}).get(c.name, WHOLE) if changes is not None else WHOLE
            added_rows[c.name] = added
            if c.offenders is not None:
                frames[c.name] = c.offenders(store)
            elif c.unique and (duplicated := _duplicate_keys_arrow(
                    store, spec, version, None if added is None else after)) is not None:
                counted_apart[c.name] = duplicated
            elif c.link is not None and added is None and (
                    whole := _link_offenders_arrow(store, spec, c.link, version)) is not None:
                counted_apart[c.name], sampled_apart[c.name] = whole
            elif c.condition is None:
                frames[c.name] = offenders(c, added)
                if c.link is not None and removed is not None:
                    frames[c.name + REMOVED] = offenders(c, removed)
    counts = count_rows(frames, tagged) | counted_apart

    out: dict[str, AssetCheckResult] = {}
    for c in counted:
        scope, new = effective[c.name], counts[c.name]
        total = scope.carried + new - counts.get(c.name + REMOVED, 0)
        if total < 0:  # the carried count no longer fits the table: count it whole
            return evaluate_checks(store, lakehouse, checks, {**(scopes or {}), c.name: WHOLE}, version)
        if c.offenders is not None:
            shown = frames[c.name]
        elif total == 0:  # nothing to show: no frame built (a whole table's keys would be read for it)
            shown = None
        elif c.name in sampled_apart:
            shown = sampled_apart[c.name]
        elif not new and not counts.get(c.name + REMOVED) and scope.after is not None and scope.sample:
            shown = scope.sample  # no offending row written or removed since: the same rows, the same sample
        else:  # a sample of the rows written since, else of the whole table
            shown = offenders(c, added_rows[c.name] if new or scope.after is None else None)
        result = result_from_offenders(shown, total, personal=spec.personal)
        meta = dict(result.metadata)
        if c.is_local:
            meta[SINCE_KEY] = "whole table" if scope.after is None else f"written after version {scope.after}"
        if scope.carried:
            meta[CARRIED_KEY] = scope.carried
        out[c.name] = AssetCheckResult(passed=result.passed, metadata=meta)
    for c in checks:
        if c.incremental:
            out[c.name] = c.evaluate(store, lakehouse, since=(scopes or {}).get(c.name, WHOLE).versions)
        elif c.evaluate is not None:
            out[c.name] = c.evaluate(store, lakehouse)
    for c in checks:
        r = out[c.name]
        out[c.name] = AssetCheckResult(asset_key=asset_key(spec), check_name=c.name, passed=r.passed,
                                       severity=c.severity, metadata=dict(r.metadata or {}))
    return out


def _written_keys_arrow(store: TableStore, spec: TableSpec, after: int, version: int) -> pa.Table | None:
    """The keys of the rows written to ``spec`` in versions ``(after, version]`` (inserted, or
    updated: the change data feed's post-images), as Arrow read by the store itself; None when
    it reads through Spark only or cannot tell (files removed from an append-only table)."""
    keys = list(spec.keys)
    if spec.change_data_feed:
        changes = store.read_changes_arrow(spec, after, version, keys)
        if changes is None:
            return None
        written = pc.is_in(changes["_change_type"], value_set=pa.array(["insert", "update_postimage"]))
        return changes.filter(written).select(keys)
    try:
        return store.read_appended_arrow(spec, after, version, keys)
    except RuntimeError:
        return None


def _duplicate_keys_arrow(store: TableStore, spec: TableSpec, version: int, after: int | None) -> int | None:
    """``keys_unique``'s count by Arrow where the store reads it itself (None otherwise): the
    keys that occur more than once in the table at ``version``, all of them (``after`` None) or
    those among the keys written after version ``after``, looked up in the whole table's keys,
    or only in its stretch of the new keys' range when it is clustered by a key column (a
    duplicate has its key's value). The Spark count's result without its job (a 5M micro-batch's
    readings: ~0.25 s against ~1.5 s)."""
    keys = list(spec.keys)
    at = version if version >= 0 else None
    if after is None:
        columns = store.read_columns_arrow(spec, keys, at)
        return None if columns is None else quality.duplicate_keys_arrow(columns, keys).num_rows
    new = _written_keys_arrow(store, spec, after, version)
    if new is None:
        return None
    if new.num_rows == 0:
        return 0
    # Only stored keys that may equal a new one are read: those with a value of the first key
    # column that is not text among the new ones' (filtered while scanning, so the Python peak
    # stays low; 5M readings: +280 MB without), and within their range of the column the table
    # is clustered by (files and row groups outside it are skipped).
    where: list[Condition] = []
    if spec.cluster_by in keys:
        span = pc.min_max(new[spec.cluster_by])
        where.append(Within(spec.cluster_by, span["min"], span["max"]))
    lookup = next((k for k in keys if not pa.types.is_string(new.schema.field(k).type)), None)
    if lookup is not None:
        where.append(OneOf(lookup, pc.unique(new[lookup])))
    stored = store.read_columns_arrow(spec, keys, at, where=where)
    if stored is None:
        return None
    candidates = stored.join(new.group_by(keys).aggregate([]), keys, join_type="left semi")
    return quality.duplicate_keys_arrow(candidates, keys).num_rows


def _link_offenders_arrow(store: TableStore, spec: TableSpec, link: Link,
                          version: int) -> tuple[int, list[dict]] | None:
    """``link``'s offending rows in the whole table (at ``version``) and a sample of them,
    by Arrow where the store reads it itself and the link is one column (5M heart-rate
    readings: ~0.1 s against ~0.5 s for Spark's anti-join, and the sample without a Spark scan
    of the whole table); None otherwise."""
    if len(link.columns) != 1:
        return None
    at = version if version >= 0 else None
    child = store.read_columns_arrow(spec, link.columns, at)
    if child is None:
        return None
    values = child.column(0)
    known = store.read_columns_arrow(link.parent, link.parent_columns).column(0).drop_null().unique()
    offending = pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, value_set=known.cast(values.type))))
    count = int(pc.sum(offending).as_py() or 0)
    if not count:
        return 0, []
    # The sample: rows holding the first few offending values, read with those values as a filter.
    shown = pc.unique(values.filter(offending).slice(0, SAMPLE_ROWS))
    rows = store.read_columns_arrow(spec, spec.column_names, at, where=(OneOf(link.columns[0], shown),),
                                    limit=SAMPLE_ROWS)
    return count, rows.to_pylist()


COUNTING = 2  # how offending rows are counted; a change of it makes earlier counts unusable


def _rule(check: Check) -> str:
    """A fingerprint of what a check counts: an edited rule is evaluated again, never skipped
    or carried over from counts of the old one."""
    link = check.link and (check.link.columns, check.link.parent.qualified_name, check.link.parent_columns)
    text = f"{COUNTING}|{check.condition}|{check.unique and check.table.keys}|{link}|{check.description}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _state(store: TableStore, lakehouse: LakehouseResource, checks: Sequence[Check]) -> dict:
    """Everything the checks' outcome depends on, cheaply: Delta versions from the logs, the
    landing files' fingerprint where a check reads them, the reference date."""
    spec = checks[0].table
    tables = {spec.qualified_name: spec} | {t.qualified_name: t for c in checks for t in c.reads}
    state: dict = {"versions": {name: store.version(t) for name, t in sorted(tables.items())},
                   "tables": {name: store.table_id(t) for name, t in sorted(tables.items())},
                   "reference_date": lakehouse.reference().isoformat(),
                   "rules": {c.name: _rule(c) for c in checks}}
    landing = [c.landing_state(store, lakehouse) for c in checks if c.landing_state is not None]
    if landing:
        state["landing"] = hashlib.sha256("\n".join(landing).encode()).hexdigest()[:16]
    return state


def _previous(context: AssetCheckExecutionContext, keys: Sequence[AssetCheckKey]) -> dict[AssetCheckKey, Prior]:
    """The latest completed evaluation of each check."""
    storage = context.instance.event_log_storage
    out = {}
    for key in keys:
        records = storage.get_asset_check_execution_history(key, limit=1,
                                                            status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES)
        event = records[0].event if records else None
        evaluation = event.dagster_event.event_specific_data if event and event.dagster_event else None
        if evaluation is None or not hasattr(evaluation, "passed"):
            continue
        recorded = getattr(evaluation.metadata.get(STATE_KEY), "value", None)
        offending = getattr(evaluation.metadata.get("offending_rows"), "value", None)
        sample = getattr(evaluation.metadata.get("sample"), "value", None)
        out[key] = Prior(evaluation.passed, recorded if isinstance(recorded, dict) else None,
                         offending if isinstance(offending, int) else None,
                         sample if isinstance(sample, list) else None, evaluation, event.run_id)
    return out


def kept(prior: Prior) -> AssetCheckResult:
    """A check's previous result recorded again for this materialization, unchanged, with the
    run that evaluated it (``evaluated_in_run``; kept from the first when kept again). Without
    a result Dagster shows the check skipped for the latest materialization, so a standing
    warning would vanish from the asset's page, and a blocking check would not gate."""
    evaluation = prior.evaluation
    metadata = {KEPT_KEY: MetadataValue.text(prior.run_id or "")} | dict(evaluation.metadata)
    return AssetCheckResult(asset_key=evaluation.asset_key, check_name=evaluation.check_name,
                            passed=evaluation.passed, severity=evaluation.severity,
                            description=evaluation.description, metadata=metadata)


def table_checks(checks: Sequence[Check], upstreams: Upstreams) -> list[AssetChecksDefinition]:
    """One multi-check (one step) per table, in the order the tables first appear.
    ``upstreams``: the tables each table is refreshed from (to tell when a check that compares
    tables can be evaluated, see ``_out_of_step``)."""
    by_table: dict[str, list[Check]] = defaultdict(list)
    for c in checks:
        by_table[c.table.qualified_name].append(c)
    return [_multi_check(group, upstreams) for group in by_table.values()]


def _compared(check: Check) -> list[TableSpec]:
    """The other tables a check compares its table with. A link is not a comparison: it asks
    about its parent as the parent is now."""
    return [] if check.link is not None else [t for t in check.reads if t != check.table]


def _out_of_step(store: TableStore, check: Check, upstreams: Upstreams) -> str | None:
    """Why a check that compares its table with other tables cannot be evaluated now: they do
    not hold the same upstream data (``incremental.out_of_step``), so a difference would say
    which ran last, not that either is wrong."""
    for other in _compared(check):
        if why := out_of_step(store, check.table, other, upstreams):
            return why
    return None


def _multi_check(checks: list[Check], upstreams: Upstreams) -> AssetChecksDefinition:
    spec = checks[0].table
    names = [c.name for c in checks]
    if len(set(names)) != len(names):
        raise ValueError(f"{spec.qualified_name} declares a check name twice: {sorted(names)}")
    specs = [AssetCheckSpec(c.name, asset=asset_key(spec), description=c.description, blocking=c.is_blocking,
                            additional_deps=[asset_key(t) for t in c.reads if t != spec])
             for c in checks]

    by_name = {c.name: c for c in checks}

    @multi_asset_check(specs=specs, name=f"{spec.layer}__{spec.name}__checks", can_subset=True,
                       description=f"The checks of {spec.qualified_name}, evaluated in one step.")
    def _checks(context: AssetCheckExecutionContext, spark: SparkResource,
                lakehouse: LakehouseResource) -> Iterator[AssetCheckResult]:
        selected = [c for c in checks if c.key() in context.selected_asset_check_keys]
        if not selected:
            return
        store = lakehouse.store()
        # A comparison of tables that do not hold the same upstream data yet is not evaluated
        # (no result: Dagster shows it skipped, and it does not gate downstream assets); the
        # table's next refresh evaluates it.
        apart = {c.name: why for c in selected if (why := _out_of_step(store, c, upstreams))}
        for name, why in apart.items():
            context.log.warning("%s.%s not evaluated: %s. It is evaluated again with the table's next refresh.",
                                spec.qualified_name, name, why)
        selected = [c for c in selected if c.name not in apart]
        if not selected:
            return
        state = _state(store, lakehouse, selected)
        previous = _previous(context, [c.key() for c in selected])
        if len(previous) == len(selected) and all(
                previous[c.key()].state == state and (previous[c.key()].passed or not c.is_blocking) for c in selected):
            context.log.info("%s: the checks were evaluated on exactly this data (%s), none failed blocking; "
                             "their results are kept, not evaluated again", spec.qualified_name,
                             json.dumps(state, sort_keys=True))
            for c in selected:
                yield kept(previous[c.key()])
            return
        scopes = {c.name: scope_of(c, previous.get(c.key()), state) for c in selected}
        with store.step():
            results = evaluate_checks(store, lakehouse, selected, scopes, state["versions"][spec.qualified_name])
        for name, result in results.items():
            # A failed comparison whose other tables committed meanwhile may have read two states.
            moved = [] if result.passed else [t.qualified_name for t in _compared(by_name[name])
                                              if store.version(t) != state["versions"][t.qualified_name]]
            if moved:
                context.log.warning("%s.%s not evaluated: %s changed while it was compared with it. It is "
                                    "evaluated again with the table's next refresh.", spec.qualified_name, name,
                                    ", ".join(moved))
                continue
            yield AssetCheckResult(asset_key=result.asset_key, check_name=result.check_name, passed=result.passed,
                                   severity=result.severity,
                                   metadata={**result.metadata, STATE_KEY: MetadataValue.json(state)})

    return _checks
