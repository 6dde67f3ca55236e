"""The checks of every layer, declared as data and run as one step per table.

A layer declares its rules with the factories below (``key_checks``, ``rule_check``,
``table_check``, ``link_check``, ``custom_check``); ``table_checks`` turns them into one
multi-check per table, so a table's rules cost one Dagster step instead of one each, and:

- every rule given by its offending rows (SQL conditions, NULL keys, unique keys, table
  rules) is counted in one Spark job per table, the conditions in one pass over the rows;
- rules that are local to a row (conditions, NULL keys, unique keys) look only at the rows
  written since the last evaluation that passed, when there is one: key uniqueness compares
  the keys just written with the whole table, the rest only reads the new rows;
- when nothing a table's checks read has changed since they last all passed (the Delta
  identity and version of the table and of every other table they read, the landing files' sizes and
  times for the reconciliation, the reference date), the step evaluates nothing and says so:
  no Spark job. The UI keeps the previous results; an earlier failure is always re-evaluated.

Each result carries the number of offending rows and a small sample, never personal columns.
"""


import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

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

from fitness_assets.assets.common import asset_key
from fitness_assets.lakehouse.store import TableStore
from fitness_assets.resources import LakehouseResource, SparkResource
from fitness_assets.tables import TableSpec
from fitness_assets.transforms import quality

SAMPLE_ROWS = 5
STATE_KEY = "checked_state"  # metadata of every result: what the evaluation read
SINCE_KEY = "checked_rows"


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
    evaluate: Callable[[TableStore, LakehouseResource], AssetCheckResult] | None = None
    reads: tuple[TableSpec, ...] = ()  # other tables the rule reads
    landing_state: Callable[[TableStore, LakehouseResource], str] | None = None  # fingerprint of files it reads

    @property
    def is_blocking(self) -> bool:
        return self.severity == AssetCheckSeverity.ERROR if self.blocking is None else self.blocking

    @property
    def is_local(self) -> bool:
        return self.condition is not None or self.unique

    def key(self) -> AssetCheckKey:
        return AssetCheckKey(asset_key(self.table), self.name)


# ---------------------------------------------------------------------------- factories


def rule_check(spec: TableSpec, name: str, bad_condition: str, description: str,
               severity: AssetCheckSeverity = AssetCheckSeverity.ERROR) -> Check:
    """No row satisfies the SQL condition ``bad_condition``."""
    return Check(spec, name, description, severity=severity, condition=bad_condition)


def not_null_check(spec: TableSpec, columns: Sequence[str] | None = None) -> Check:
    cols = list(columns or spec.not_null)
    return Check(spec, "keys_not_null", f"No NULL in {', '.join(cols)}.",
                 condition=" OR ".join(f"`{c}` IS NULL" for c in cols))


def unique_key_check(spec: TableSpec) -> Check:
    return Check(spec, "keys_unique", f"Each ({', '.join(spec.keys)}) occurs once.", unique=True)


def key_checks(spec: TableSpec) -> list[Check]:
    """Keys not NULL and unique: the two checks every keyed table has."""
    return [not_null_check(spec, spec.keys), unique_key_check(spec)]


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
    register after their first visit or reading)."""
    return table_check(
        spec, f"{'_'.join(columns)}_in_{parent.name}",
        f"Every {', '.join(columns)} has a match in {parent.qualified_name}.",
        lambda store: quality.missing_links(store.read(spec), columns, store.read(parent), parent_columns),
        severity=severity, reads=(parent,))


def custom_check(spec: TableSpec, name: str, description: str,
                 evaluate: Callable[[TableStore, LakehouseResource], AssetCheckResult], *,
                 severity: AssetCheckSeverity = AssetCheckSeverity.ERROR, blocking: bool | None = None,
                 reads: Sequence[TableSpec] = (),
                 landing_state: Callable[[TableStore, LakehouseResource], str] | None = None) -> Check:
    """A rule with its own evaluation (``evaluate`` returns the result; its severity is set here)."""
    return Check(spec, name, description, severity=severity, blocking=blocking, evaluate=evaluate,
                 reads=tuple(reads), landing_state=landing_state)


# ---------------------------------------------------------------------------- evaluation


def result_from_offenders(offenders: DataFrame, count: int, *, personal: Sequence[str] = ()) -> AssetCheckResult:
    """A check result whose outcome is 'no offending rows' (``count`` of them, counted by
    ``count_rows``), with a sample of them. The sample lands in Dagster's event log, which is
    not a place for personal data: the ``personal`` columns are left out of it."""
    shown = offenders.drop(*[c for c in personal if c in offenders.columns])
    sample = [r.asDict() for r in shown.limit(SAMPLE_ROWS).collect()] if count else []
    return AssetCheckResult(passed=count == 0,
                            metadata={"offending_rows": count, "sample": MetadataValue.json(_jsonable(sample))})


def count_rows(frames: dict[str, DataFrame], rows: DataFrame | None = None,
               conditions: dict[str, str] | None = None) -> dict[str, int]:
    """The row count of each of ``frames``, all in one Spark job instead of one each: a union
    of one column naming the frame each row comes from, counted by name. The frames named in
    ``conditions`` are ``rows`` where the condition holds; those are counted from one pass
    over ``rows`` (each row tagged with the names of the conditions it satisfies)."""
    if not frames:
        return {}
    conditions = conditions or {}
    parts = [frame.select(F.lit(name).alias("check")) for name, frame in frames.items() if name not in conditions]
    if conditions:
        tags = F.array(*[F.when(F.expr(condition), F.lit(name)) for name, condition in conditions.items()])
        parts.append(rows.select(F.explode(F.filter(tags, lambda tag: tag.isNotNull())).alias("check")))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionAll(part)
    counted = {row["check"]: row["count"] for row in union.groupBy("check").count().collect()}
    return {name: int(counted.get(name, 0)) for name in frames}


def _jsonable(rows: list[dict]) -> list[dict]:
    return [{k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in r.items()} for r in rows]


def _rows_since(store: TableStore, spec: TableSpec, after: int, up_to: int) -> DataFrame | None:
    """Rows written to ``spec`` in versions ``(after, up_to]``, or None when they cannot be
    told apart (files removed from a table without a change feed)."""
    if spec.change_data_feed:
        changes = store.read_changes(spec, after, up_to)
        return changes.where(F.col("_change_type").isin("insert", "update_postimage")).drop("_change_type")
    try:
        return store.read_appended(spec, after, up_to)
    except RuntimeError:
        return None


def evaluate_checks(store: TableStore, lakehouse: LakehouseResource, checks: Sequence[Check],
                    since: int | None = None) -> dict[str, AssetCheckResult]:
    """Evaluate the checks of one table. With ``since`` (a version whose rows all passed), the
    local rules look only at rows written after it."""
    spec = checks[0].table
    version = store.version(spec)
    table = store.read(spec, version if version >= 0 else None)
    rows, scope = table, "whole table"
    if since is not None and 0 <= since < version:
        new = _rows_since(store, spec, since, version)
        if new is not None:
            rows, scope = new, f"written after version {since}"
    out: dict[str, AssetCheckResult] = {}
    offending: dict[str, DataFrame] = {}
    conditions = {c.name: c.condition for c in checks if c.condition is not None}
    for name, condition in conditions.items():
        offending[name] = rows.where(F.expr(condition))
    for c in checks:
        if c.unique:
            keys = list(spec.keys)
            written = table if rows is table else table.join(F.broadcast(rows.select(*keys).distinct()), keys, "left_semi")
            offending[c.name] = quality.duplicate_keys(written, keys)
        elif c.offenders is not None:
            offending[c.name] = c.offenders(store)
    for name, count in count_rows(offending, rows, conditions).items():
        out[name] = result_from_offenders(offending[name], count, personal=spec.personal)
    for c in checks:
        if c.evaluate is not None:
            out[c.name] = c.evaluate(store, lakehouse)
    for c in checks:
        r = out[c.name]
        meta = dict(r.metadata or {})
        if c.is_local:
            meta[SINCE_KEY] = scope
        out[c.name] = AssetCheckResult(asset_key=asset_key(spec), check_name=c.name, passed=r.passed,
                                       severity=c.severity, metadata=meta)
    return out


def _state(store: TableStore, lakehouse: LakehouseResource, checks: Sequence[Check]) -> dict:
    """Everything the checks' outcome depends on, cheaply: Delta versions from the logs, the
    landing files' fingerprint where a check reads them, the reference date."""
    spec = checks[0].table
    tables = {spec.qualified_name: spec} | {t.qualified_name: t for c in checks for t in c.reads}
    state: dict = {"versions": {name: store.version(t) for name, t in sorted(tables.items())},
                   "tables": {name: store.table_id(t) for name, t in sorted(tables.items())},
                   "reference_date": lakehouse.reference().isoformat()}
    landing = [c.landing_state(store, lakehouse) for c in checks if c.landing_state is not None]
    if landing:
        state["landing"] = hashlib.sha256("\n".join(landing).encode()).hexdigest()[:16]
    return state


def _previous(context: AssetCheckExecutionContext, keys: Sequence[AssetCheckKey]) -> dict[AssetCheckKey, tuple]:
    """The latest completed evaluation of each check: (passed, state it recorded)."""
    storage = context.instance.event_log_storage
    out = {}
    for key in keys:
        records = storage.get_asset_check_execution_history(key, limit=1,
                                                            status=COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES)
        event = records[0].event if records else None
        evaluation = event.dagster_event.event_specific_data if event and event.dagster_event else None
        if evaluation is None or not hasattr(evaluation, "passed"):
            continue
        recorded = evaluation.metadata.get(STATE_KEY)
        out[key] = (evaluation.passed, getattr(recorded, "value", None))
    return out


def table_checks(checks: Sequence[Check]) -> list[AssetChecksDefinition]:
    """One multi-check (one step) per table, in the order the tables first appear."""
    by_table: dict[str, list[Check]] = defaultdict(list)
    for c in checks:
        by_table[c.table.qualified_name].append(c)
    return [_multi_check(group) for group in by_table.values()]


def _multi_check(checks: list[Check]) -> AssetChecksDefinition:
    spec = checks[0].table
    names = [c.name for c in checks]
    if len(set(names)) != len(names):
        raise ValueError(f"{spec.qualified_name} declares a check name twice: {sorted(names)}")
    specs = [AssetCheckSpec(c.name, asset=asset_key(spec), description=c.description, blocking=c.is_blocking,
                            additional_deps=[asset_key(t) for t in c.reads if t != spec])
             for c in checks]

    @multi_asset_check(specs=specs, name=f"{spec.layer}__{spec.name}__checks", can_subset=True,
                       description=f"The checks of {spec.qualified_name}, evaluated in one step.")
    def _checks(context: AssetCheckExecutionContext, spark: SparkResource,
                lakehouse: LakehouseResource) -> Iterator[AssetCheckResult]:
        selected = [c for c in checks if c.key() in context.selected_asset_check_keys]
        if not selected:
            return
        store = lakehouse.store()
        state = _state(store, lakehouse, selected)
        previous = _previous(context, [c.key() for c in selected])
        all_passed = len(previous) == len(selected) and all(p for p, _ in previous.values())
        if all_passed and all(s == state for _, s in previous.values()):
            context.log.info("%s: the checks passed on exactly this data (%s); not evaluated again",
                             spec.qualified_name, json.dumps(state, sort_keys=True))
            return
        since = None
        same_table = all(s and s.get("tables", {}).get(spec.qualified_name) == state["tables"][spec.qualified_name]
                         for _, s in previous.values())
        if all_passed and same_table:  # rows since then are new only in the same table, not in one made again
            recorded = [s.get("versions", {}).get(spec.qualified_name) for _, s in previous.values() if s]
            since = min(recorded) if recorded and None not in recorded else None
        with store.codegen.step():
            results = evaluate_checks(store, lakehouse, selected, since)
        for result in results.values():
            yield AssetCheckResult(asset_key=result.asset_key, check_name=result.check_name, passed=result.passed,
                                   severity=result.severity,
                                   metadata={**result.metadata, STATE_KEY: MetadataValue.json(state)})

    return _checks
