"""Factories for the asset checks every layer uses: one rule per check, with the number of
offending rows and a small sample in the metadata."""


from collections.abc import Callable, Sequence

from dagster import AssetCheckResult, AssetChecksDefinition, AssetCheckSeverity, MetadataValue, asset_check
from pyspark.sql import DataFrame

from fitness_assets.assets.common import asset_key
from fitness_assets.lakehouse.store import TableStore
from fitness_assets.resources import LakehouseResource, SparkResource
from fitness_assets.tables import TableSpec
from fitness_assets.transforms import quality

SAMPLE_ROWS = 5


def result_from_offenders(offenders: DataFrame, *, passed_if_zero: bool = True, personal: Sequence[str] = (),
                          **metadata) -> AssetCheckResult:
    """A check result whose outcome is 'no offending rows', with their count and a sample.
    The sample lands in Dagster's event log, which is not a place for personal data: the
    ``personal`` columns are left out of it."""
    count = offenders.count()
    shown = offenders.drop(*[c for c in personal if c in offenders.columns])
    sample = [r.asDict() for r in shown.limit(SAMPLE_ROWS).collect()] if count else []
    return AssetCheckResult(
        passed=(count == 0) if passed_if_zero else True,
        metadata={"offending_rows": count, "sample": MetadataValue.json(_jsonable(sample)), **metadata},
    )


def _jsonable(rows: list[dict]) -> list[dict]:
    return [{k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in r.items()} for r in rows]


def table_check(
    spec: TableSpec,
    name: str,
    description: str,
    offenders: Callable[[TableStore], DataFrame],
    *,
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
    blocking: bool | None = None,
) -> AssetChecksDefinition:
    """A check that passes when ``offenders(store)`` has no rows. ERROR checks block by default."""
    blocking = severity == AssetCheckSeverity.ERROR if blocking is None else blocking

    @asset_check(asset=asset_key(spec), name=name, description=description, blocking=blocking)
    def _check(spark: SparkResource, lakehouse: LakehouseResource) -> AssetCheckResult:
        rows = offenders(lakehouse.store(spark))
        result = result_from_offenders(rows, personal=spec.personal)
        return AssetCheckResult(passed=result.passed, severity=severity, metadata=result.metadata)

    return _check


def not_null_check(spec: TableSpec, columns: Sequence[str] | None = None) -> AssetChecksDefinition:
    cols = list(columns or spec.not_null)
    return table_check(spec, "keys_not_null", f"No NULL in {', '.join(cols)}.",
                       lambda store: quality.null_keys(store.read(spec), cols))


def unique_key_check(spec: TableSpec) -> AssetChecksDefinition:
    return table_check(spec, "keys_unique", f"Each ({', '.join(spec.keys)}) occurs once.",
                       lambda store: quality.duplicate_keys(store.read(spec), spec.keys))


def rule_check(spec: TableSpec, name: str, bad_condition: str, description: str,
               severity: AssetCheckSeverity = AssetCheckSeverity.ERROR) -> AssetChecksDefinition:
    return table_check(spec, name, description, lambda store: quality.violations(store.read(spec), bad_condition),
                       severity=severity)


def link_check(spec: TableSpec, columns: Sequence[str], parent: TableSpec, parent_columns: Sequence[str],
               severity: AssetCheckSeverity = AssetCheckSeverity.WARN) -> AssetChecksDefinition:
    """Every value of ``columns`` exists in ``parent`` (a warning by default: members may
    register after their first visit or reading)."""
    return table_check(
        spec, f"{'_'.join(columns)}_in_{parent.name}",
        f"Every {', '.join(columns)} has a match in {parent.qualified_name}.",
        lambda store: quality.missing_links(store.read(spec), columns, store.read(parent), parent_columns),
        severity=severity,
    )


def key_checks(spec: TableSpec) -> list[AssetChecksDefinition]:
    """Keys not NULL and unique: the two checks every keyed table has."""
    return [not_null_check(spec, spec.keys), unique_key_check(spec)]
