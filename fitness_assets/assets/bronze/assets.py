"""Bronze ingestion assets: each takes the new files of one landing folder into its bronze
table and the rejected lines into the matching quarantine table."""


from collections.abc import Callable, Iterator

from dagster import AssetExecutionContext, AssetKey, AssetSpec, MaterializeResult, MetadataValue, multi_asset
from pyspark.sql import DataFrame

from fitness_assets.assets.common import asset_key, asset_kwargs, materialization_metadata
from fitness_assets.lakehouse.ingest import ingest
from fitness_assets.lakehouse.store import TableStore
from fitness_assets.resources import LakehouseResource, SparkResource
from fitness_assets.tables import (
    DATE_LOOKUP,
    GYM_LOGINS_BZ,
    GYM_LOGINS_QR,
    KAFKA_MULTIPLEX_BZ,
    KAFKA_MULTIPLEX_QR,
    REGISTERED_USERS_BZ,
    REGISTERED_USERS_QR,
    TableSpec,
)
from fitness_assets.transforms import bronze as parsers

Parser = Callable[[TableStore], Callable[[DataFrame], DataFrame]]


def _spec(table: TableSpec, deps: list[AssetKey] | None = None) -> AssetSpec:
    kwargs = asset_kwargs(table)
    return AssetSpec(kwargs.pop("key"), deps=deps or [], **kwargs)


def ingestion_asset(source: str, bronze: TableSpec, quarantine: TableSpec, parser: Parser,
                    deps: list[AssetKey] | None = None):
    """A multi-asset that ingests landing folder ``source`` into ``bronze`` and ``quarantine``."""

    @multi_asset(
        name=f"bronze__{bronze.name}",
        specs=[_spec(bronze, deps), _spec(quarantine, [asset_key(bronze)])],
        description=f"Ingest new `{source}/` landing files into {bronze.qualified_name}.",
    )
    def _ingest(context: AssetExecutionContext, spark: SparkResource,
                lakehouse: LakehouseResource) -> Iterator[MaterializeResult]:
        store = lakehouse.store(spark)
        report = ingest(
            store, spark.session(), lakehouse.landing_root, source, bronze, quarantine, parser(store),
            max_files_per_batch=lakehouse.max_files_per_batch, max_batches=lakehouse.max_batches_per_run,
        )
        context.log.info(
            "%s: %d new files, %d rows, %d quarantined, %d files still pending",
            bronze.qualified_name, len(report.files), report.rows_written, report.rows_quarantined,
            report.pending_files,
        )
        yield MaterializeResult(asset_key=asset_key(bronze), metadata=materialization_metadata(
            store, bronze, new_files=len(report.files), new_rows=report.rows_written,
            batches=report.batches, pending_files=report.pending_files,
            files=MetadataValue.json(report.files)))
        yield MaterializeResult(asset_key=asset_key(quarantine), metadata=materialization_metadata(
            store, quarantine, new_rows=report.rows_quarantined,
            reasons=MetadataValue.json(report.quarantine_reasons)))

    return _ingest


def _kafka_parser(store: TableStore) -> Callable[[DataFrame], DataFrame]:
    calendar = store.read(DATE_LOOKUP)
    return lambda lines: parsers.parse_kafka_multiplex(lines, calendar)


registered_users_bz = ingestion_asset("registered_users", REGISTERED_USERS_BZ, REGISTERED_USERS_QR,
                                      lambda _: parsers.parse_registered_users)
gym_logins_bz = ingestion_asset("gym_logins", GYM_LOGINS_BZ, GYM_LOGINS_QR, lambda _: parsers.parse_gym_logins)
kafka_multiplex_bz = ingestion_asset("kafka_multiplex", KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR, _kafka_parser,
                                     deps=[asset_key(DATE_LOOKUP)])

bronze_assets = [registered_users_bz, gym_logins_bz, kafka_multiplex_bz]
