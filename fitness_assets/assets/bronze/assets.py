"""Bronze ingestion assets: each takes the new files of one landing folder (and, for the
multiplex, the new records of the Kafka topics) into its bronze table and the rejected lines
into the matching quarantine table."""


from collections.abc import Callable, Iterator

from confluent_kafka import KafkaException
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from pyspark.sql import DataFrame

from fitness_assets.assets.common import asset_key, asset_kwargs, materialization_metadata
from fitness_assets.assets.sources import KAFKA_SOURCE_KEYS, landing_key
from fitness_assets.lakehouse.store import TableStore
from fitness_assets.pipelines.bronze import IngestReport, ingest
from fitness_assets.pipelines.bronze_kafka import KafkaIngestReport, ingest_kafka
from fitness_assets.resources import KafkaResource, LakehouseResource, SparkResource
from fitness_assets.streaming.source import KafkaUnavailable, PositionsAhead
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
from fitness_assets.transforms.kafka_arrow import plain_lines

Parser = Callable[[TableStore], Callable[[DataFrame], DataFrame]]


class CalendarMissing(RuntimeError):
    """The multiplex resolves each record's date in ``reference/date_lookup``, which must exist."""


def _spec(table: TableSpec, deps: list[AssetKey]) -> AssetSpec:
    kwargs = asset_kwargs(table)
    return AssetSpec(kwargs.pop("key"), deps=deps, **kwargs)


def _specs(source: str, bronze: TableSpec, quarantine: TableSpec, deps: list[AssetKey]) -> list[AssetSpec]:
    """Bronze and its quarantine come from the same sources, written in one step: the lines
    and records that pass go to bronze, the others to quarantine (not read from bronze). Only
    bronze reads the calendar."""
    sources = [landing_key(source), *deps]
    return [_spec(bronze, sources), _spec(quarantine, [d for d in sources if d != asset_key(DATE_LOOKUP)])]


def _results(store: TableStore, bronze: TableSpec, quarantine: TableSpec, files: IngestReport,
             kafka: KafkaIngestReport | None = None) -> Iterator[MaterializeResult]:
    """Materializations of both tables; the data version is the Delta version, so a run that
    changed nothing leaves downstream assets up to date."""
    extra = {}
    if kafka is not None:
        extra = {"kafka_records": kafka.records, "kafka_batches": kafka.batches,
                 "kafka_lag": sum(kafka.lag.values()),
                 "kafka_lag_by_partition": MetadataValue.json(kafka.lag),
                 "kafka_positions": MetadataValue.json(kafka.positions)}
        if kafka.lost:
            extra["kafka_offsets_lost_to_retention"] = MetadataValue.json(kafka.lost)
    reasons = dict(files.quarantine_reasons)
    for reason, n in (kafka.quarantine_reasons if kafka else {}).items():
        reasons[reason] = reasons.get(reason, 0) + n
    bronze_version, quarantine_version = store.version(bronze), store.version(quarantine)
    written = files.rows_written + (kafka.rows_written if kafka else 0)
    rejected = files.rows_quarantined + (kafka.rows_quarantined if kafka else 0)
    extra["quarantine_share"] = rejected / (written + rejected) if written + rejected else 0.0
    yield MaterializeResult(
        asset_key=asset_key(bronze), data_version=DataVersion(str(bronze_version)),
        metadata=materialization_metadata(
            store, bronze, new_files=len(files.files),
            new_rows=written,
            batches=files.batches, pending_files=files.pending_files, files=MetadataValue.json(files.files),
            refused_files=MetadataValue.json(files.refused_files), changed_files=MetadataValue.json(files.changed_files),
            **extra))
    yield MaterializeResult(
        asset_key=asset_key(quarantine), data_version=DataVersion(str(quarantine_version)),
        metadata=materialization_metadata(
            store, quarantine, new_rows=rejected,
            reasons=MetadataValue.json(reasons)))


def _ingest_files(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource, source: str,
                  bronze: TableSpec, quarantine: TableSpec, parse: Callable[[DataFrame], DataFrame],
                  plain=None) -> IngestReport:
    report = ingest(
        lakehouse.store(), spark.session(), lakehouse.landing_root, source, bronze, quarantine, parse,
        max_files_per_batch=lakehouse.max_files_per_batch, max_batches=lakehouse.max_batches_per_run, plain=plain,
    )
    context.log.info(
        "%s: %d new files, %d rows, %d quarantined, %d files still pending",
        bronze.qualified_name, len(report.files), report.rows_written, report.rows_quarantined, report.pending_files,
    )
    if report.refused_files:
        context.log.warning("%s: files refused whole (see quarantine, line 0): %s", bronze.qualified_name,
                            report.refused_files)
    if report.changed_files:
        context.log.warning("%s: files changed after they were ingested, not ingested again (see quarantine, "
                            "line -1): %s", bronze.qualified_name, report.changed_files)
    return report


def ingestion_asset(source: str, bronze: TableSpec, quarantine: TableSpec, parser: Parser):
    """A multi-asset that ingests landing folder ``source`` into ``bronze`` and ``quarantine``."""

    @multi_asset(
        name=f"bronze__{bronze.name}",
        specs=_specs(source, bronze, quarantine, []),
        description=f"Ingest new `{source}/` landing files into {bronze.qualified_name}.",
    )
    def _ingest(context: AssetExecutionContext, spark: SparkResource,
                lakehouse: LakehouseResource) -> Iterator[MaterializeResult]:
        store = lakehouse.store()
        with store.step():
            report = _ingest_files(context, spark, lakehouse, source, bronze, quarantine, parser(store))
            yield from _results(store, bronze, quarantine, report)

    return _ingest


@multi_asset(
    name=f"bronze__{KAFKA_MULTIPLEX_BZ.name}",
    specs=_specs("kafka_multiplex", KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR,
                 [asset_key(DATE_LOOKUP), *KAFKA_SOURCE_KEYS.values()]),
    description="Ingest new `kafka_multiplex/` landing files and, when Kafka is configured, the new records "
                "of the Kafka topics (exactly once: positions are committed with the rows) into "
                f"{KAFKA_MULTIPLEX_BZ.qualified_name}.",
)
def kafka_multiplex_bz(context: AssetExecutionContext, spark: SparkResource, lakehouse: LakehouseResource,
                       kafka: KafkaResource) -> Iterator[MaterializeResult]:
    store = lakehouse.store()
    with store.step():
        if not store.exists(DATE_LOOKUP):  # its rows would get no date for good
            raise CalendarMissing(f"{DATE_LOOKUP.qualified_name} does not exist yet: materialize it with or before "
                                  f"{KAFKA_MULTIPLEX_BZ.qualified_name} (fitness-assets run --select "
                                  "reference/date_lookup,bronze/kafka_multiplex_bz)")
        calendar = store.read(DATE_LOOKUP)
        # Plain, usable lines are decided in Python, as Kafka records are; Spark parses the rest.
        files = _ingest_files(context, spark, lakehouse, "kafka_multiplex", KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR,
                              lambda lines: parsers.parse_kafka_multiplex(lines, calendar),
                              plain=lambda raws: plain_lines(raws, store.read_arrow(DATE_LOOKUP)))
        streamed, refused = None, None
        if kafka.enabled:
            try:
                with kafka.reader() as reader:
                    streamed = ingest_kafka(store, None, reader, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR,
                                            max_records_per_batch=kafka.max_records_per_batch,
                                            max_batches=kafka.max_batches_per_run)
            except (PositionsAhead, KafkaUnavailable, KafkaException) as error:  # the files committed above are still reported
                refused = error
            else:
                context.log.info("%s: %d Kafka records in %d batches, %d rows, %d quarantined, lag %d",
                                 KAFKA_MULTIPLEX_BZ.qualified_name, streamed.records, streamed.batches,
                                 streamed.rows_written, streamed.rows_quarantined, sum(streamed.lag.values()))
        yield from _results(store, KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR, files, streamed)
        if refused is not None:
            raise refused


registered_users_bz = ingestion_asset("registered_users", REGISTERED_USERS_BZ, REGISTERED_USERS_QR,
                                      lambda _: parsers.parse_registered_users)
gym_logins_bz = ingestion_asset("gym_logins", GYM_LOGINS_BZ, GYM_LOGINS_QR, lambda _: parsers.parse_gym_logins)

bronze_assets = [registered_users_bz, gym_logins_bz, kafka_multiplex_bz]
