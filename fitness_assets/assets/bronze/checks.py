"""Checks of the bronze and quarantine tables."""


from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check
from pyspark.sql import functions as F

from fitness_assets.assets.checks_lib import not_null_check, rule_check
from fitness_assets.assets.common import asset_key
from fitness_assets.lakehouse.ingest import ingested_files
from fitness_assets.lakehouse.store import TableStore
from fitness_assets.resources import LakehouseResource, SparkResource
from fitness_assets.tables import (
    GYM_LOGINS_BZ,
    GYM_LOGINS_QR,
    KAFKA_MULTIPLEX_BZ,
    KAFKA_MULTIPLEX_QR,
    REGISTERED_USERS_BZ,
    REGISTERED_USERS_QR,
    TableSpec,
)

QUARANTINE_WARN_SHARE = 0.05


def _lines_by_file(store: TableStore, bronze: TableSpec) -> dict[str, int]:
    lines: dict[str, int] = {}
    for meta in store.commit_metadata(bronze):
        lines.update(meta.get("files", {}))
    return lines


def _counts(store: TableStore, spec: TableSpec) -> dict[str, int]:
    rows = store.read(spec).groupBy("source_file").agg(F.count(F.lit(1)).alias("n")).collect()
    return {r["source_file"]: r["n"] for r in rows}


def reconciliation_check(bronze: TableSpec, quarantine: TableSpec):
    @asset_check(asset=asset_key(bronze), name="reconciled_with_landing", blocking=True,
                 description="For every ingested file: data lines read = bronze rows + quarantined rows.")
    def _check(spark: SparkResource, lakehouse: LakehouseResource) -> AssetCheckResult:
        store = lakehouse.store(spark)
        lines = _lines_by_file(store, bronze)
        written, rejected = _counts(store, bronze), _counts(store, quarantine)
        off = {f: {"lines": n, "bronze": written.get(f, 0), "quarantine": rejected.get(f, 0)}
               for f, n in lines.items() if written.get(f, 0) + rejected.get(f, 0) != n}
        unknown = sorted(set(written) - set(lines))
        return AssetCheckResult(
            passed=not off and not unknown,
            metadata={"files": len(lines), "lines": sum(lines.values()), "bronze_rows": sum(written.values()),
                      "quarantined_rows": sum(rejected.get(f, 0) for f in lines),
                      "mismatched_files": len(off), "rows_from_unrecorded_files": len(unknown),
                      "sample": MetadataValue.json(dict(list(off.items())[:5]) | {"unrecorded": unknown[:5]})},
        )

    return _check


def quarantine_volume_check(bronze: TableSpec, quarantine: TableSpec):
    @asset_check(asset=asset_key(quarantine), name="quarantine_volume",
                 description=f"Warn when more than {QUARANTINE_WARN_SHARE:.0%} of ingested lines are rejected.")
    def _check(spark: SparkResource, lakehouse: LakehouseResource) -> AssetCheckResult:
        store = lakehouse.store(spark)
        files = ingested_files(store, bronze)
        lines = sum(_lines_by_file(store, bronze).values())
        q = store.read(quarantine).where(F.col("source_file").isin(sorted(files)) if files else F.lit(False))
        reasons = {r["reason"]: r["n"] for r in q.groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()}
        rejected = sum(reasons.values())
        share = rejected / lines if lines else 0.0
        return AssetCheckResult(
            passed=share <= QUARANTINE_WARN_SHARE, severity=AssetCheckSeverity.WARN,
            metadata={"lines": lines, "quarantined": rejected, "share": share, "reasons": MetadataValue.json(reasons)},
        )

    return _check


bronze_checks = [
    not_null_check(REGISTERED_USERS_BZ),
    not_null_check(GYM_LOGINS_BZ),
    not_null_check(KAFKA_MULTIPLEX_BZ),
    rule_check(KAFKA_MULTIPLEX_BZ, "topic_accepted", "topic NOT IN ('user_info', 'workout', 'bpm')",
               "topic is one of user_info, workout, bpm."),
    rule_check(KAFKA_MULTIPLEX_BZ, "date_resolved", "date IS NULL OR week_part IS NULL",
               "Every record's timestamp falls inside date_lookup's range.", severity=AssetCheckSeverity.WARN),
    *[reconciliation_check(b, q) for b, q in ((REGISTERED_USERS_BZ, REGISTERED_USERS_QR),
                                              (GYM_LOGINS_BZ, GYM_LOGINS_QR),
                                              (KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR))],
    *[quarantine_volume_check(b, q) for b, q in ((REGISTERED_USERS_BZ, REGISTERED_USERS_QR),
                                                 (GYM_LOGINS_BZ, GYM_LOGINS_QR),
                                                 (KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR))],
]
