"""Kafka -> bronze, exactly once, with the positions kept in the bronze table itself.

Each batch reads from the positions recorded by the last Kafka commit of the bronze table,
validates the records in Python and Arrow (``transforms.kafka_arrow``: the same rules, reasons
and bronze columns as the Spark parser of the `kafka_multiplex/` files, held to it by a
conformance test; no Spark job on this path), and appends the good rows in ONE Delta commit that also
records the next offset of every partition (commit metadata ``kafka_offsets``) and the app
transaction ``kafka:<table>`` = batch number. Hence:

- a crash before the commit leaves nothing; the next run reads the same offsets again;
- a crash after it leaves nothing to redo; the next run starts after the batch;
- two runs racing from the same positions end with one commit (the loser's app transaction
  is already recorded, or its commit conflicts and is then recognised as applied).

Rejected records go to the quarantine first, keyed by ``source_file = kafka://<topic>/<partition>``
and ``line`` = offset, with a replace-where on the offsets at or after the batch's start: those
were never committed, so a retry replaces what a crashed attempt left instead of doubling it.
Consumer-group offsets are committed to Kafka only after the Delta commit, for lag tools.

Records the topic's retention deleted before they were read cannot be taken in. The batch that
moves past them records the gap (``[first, end)`` offsets per partition, commit metadata
``kafka_lost``) in the same commit, even when nothing after the gap is left to read, so the loss
stays in the table's log and the check ``no_records_lost_to_retention`` reports it.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fitness_assets.lakehouse.spark import arrow_frame
from fitness_assets.lakehouse.store import TableStore, Txn
from fitness_assets.pipelines.bronze import group_count
from fitness_assets.streaming.source import Batch, KafkaReader, PartitionKey
from fitness_assets.tables import DATE_LOOKUP, TableSpec
from fitness_assets.transforms.bronze import REASON
from fitness_assets.transforms.kafka_arrow import RAW_LIMIT, validate_records

log = logging.getLogger(__name__)

OFFSETS_KEY = "kafka_offsets"
LOST_KEY = "kafka_lost"  # commit metadata: [first, end) offsets retention deleted before they were read
LAST_SEEN_KEY = "kafka_last_seen"  # commit metadata: fingerprint of the record before each position
SOURCE_PREFIX = "kafka://"
#: The bronze columns a parser gives besides the audit columns.
KAFKA_COLUMNS = ("key", "value", "topic", "partition", "offset", "timestamp", "date", "week_part")


def app_id(bronze: TableSpec) -> str:
    return f"kafka:{bronze.name}"


def source_name(key: PartitionKey) -> str:
    """The ``source_file`` of rows read from one topic-partition."""
    return SOURCE_PREFIX + key


@dataclass
class KafkaIngestReport:
    """What one Kafka ingestion run did, for asset metadata."""

    batches: int = 0
    records: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    skipped_batches: int = 0


def stored_positions(store: TableStore, bronze: TableSpec) -> tuple[dict[str, int], dict[str, int]]:
    """(next offset, records taken in) per partition, as of the last Kafka commit of ``bronze``."""
    return _stored(store, bronze)[:2]


def _stored(store: TableStore, bronze: TableSpec) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
    """``stored_positions``, and the fingerprint of the record before each position (none in
    commits made before fingerprints were kept)."""
    meta = store.latest_commit_metadata(bronze, OFFSETS_KEY)
    if not meta:
        return {}, {}, {}
    counts = {k[len(SOURCE_PREFIX):]: v for k, v in meta.get("files", {}).items() if k.startswith(SOURCE_PREFIX)}
    return dict(meta[OFFSETS_KEY]), counts, dict(meta.get(LAST_SEEN_KEY, {}))


def _plan(store: TableStore, bronze: TableSpec) -> tuple[int, dict[str, int], dict[str, int], dict[str, str]]:
    """The next batch's number, then ``_stored``, read in this order: when another run (a CLI
    run beside the daemon's) commits between this read and this run's commit, the number is
    taken and the commit is skipped, never a second copy of the records the other run read."""
    sequence = (store.transaction_version(bronze, app_id(bronze)) or 0) + 1
    return sequence, *_stored(store, bronze)


def lost_to_retention(store: TableStore, bronze: TableSpec) -> dict[str, list[list[int]]]:
    """Per partition (``kafka://<topic>/<partition>``), every ``[first, end)`` range of offsets
    that the topic's retention deleted before ``bronze`` took them in, oldest first, from the
    table's commits."""
    gaps: dict[str, list[list[int]]] = {}
    for meta in store.commit_metadata(bronze):
        for name, gap in meta.get(LOST_KEY, {}).items():
            gaps.setdefault(name, []).append(list(gap))
    return gaps


RECORDS_SCHEMA = pa.schema([
    ("source_file", pa.string()), ("line", pa.int64()), ("key", pa.string()), ("value", pa.string()),
    ("topic", pa.string()), ("partition", pa.int64()), ("offset", pa.int64()), ("timestamp", pa.int64()),
])


def _records(batch: Batch) -> tuple[pa.Table, pa.Table]:
    """For a Spark ``parse``: the batch as columns (``line`` = offset), and the records rejected
    before parsing: a value whose bytes are not UTF-8 cannot be a JSON payload."""
    good: dict[str, list] = {f.name: [] for f in RECORDS_SCHEMA}
    bad: dict[str, list] = {"source_file": [], "line": [], "raw": [], REASON: []}
    for topic, partition, offset, timestamp, key, raw in zip(batch.topics, batch.partitions, batch.offsets,
                                                             batch.timestamps, batch.keys, batch.values, strict=True):
        name = source_name(f"{topic}/{partition}")
        try:
            value = None if raw is None else raw.decode("utf-8")
        except UnicodeDecodeError:
            bad["source_file"].append(name)
            bad["line"].append(offset)
            bad["raw"].append(repr(raw)[:RAW_LIMIT])
            bad[REASON].append("invalid_value:value")
            continue
        for column, item in (("source_file", name), ("line", offset), ("value", value),
                             ("key", None if key is None else key.decode("utf-8", "backslashreplace")),
                             ("topic", topic), ("partition", partition), ("offset", offset),
                             ("timestamp", timestamp)):
            good[column].append(item)
    rejected = pa.table({"source_file": pa.array(bad["source_file"], pa.string()),
                         "line": pa.array(bad["line"], pa.int64()), "raw": pa.array(bad["raw"], pa.string()),
                         REASON: pa.array(bad[REASON], pa.string())})
    return pa.table(good, schema=RECORDS_SCHEMA), rejected


def _to_spark(spark: SparkSession, table: pa.Table, staging: Path | None) -> tuple[DataFrame, Path | None]:
    """The records as a DataFrame. Through a Parquet file when Spark shares the file system:
    Spark then parses in parallel with generated code, where ``createDataFrame`` would
    evaluate the whole parse on the driver (measured ~1.6x slower for 100k records)."""
    if staging is None:
        return arrow_frame(spark, table), None
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / f"records-{uuid.uuid4().hex}.parquet"
    pq.write_table(table, path)
    return spark.read.parquet(str(path)), path


def ingest_kafka(
    store: TableStore,
    spark: SparkSession | None,
    reader: KafkaReader,
    bronze: TableSpec,
    quarantine: TableSpec,
    parse: Callable[[DataFrame], DataFrame] | None = None,
    max_records_per_batch: int = 100_000,
    max_batches: int = 20,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    staging: Path | None = None,
    calendar: pa.Table | None = None,
) -> KafkaIngestReport:
    """Take what the configured topics hold beyond the stored positions, in bounded batches.

    By default the records are validated without Spark (``transforms.kafka_arrow``) against
    ``calendar`` (``reference/date_lookup`` as Arrow: ``date``, ``week_part``; read from the
    store, once, when not given). ``parse`` instead runs a Spark parser over the records as
    columns (``source_file``, ``line`` = offset, ``key``, ``value``, ``topic``, ``partition``,
    ``offset``, ``timestamp``; see ``transforms.bronze.parse_kafka_records``), handed to Spark
    through a Parquet file in ``staging`` when given (deleted after the batch)."""
    report = KafkaIngestReport()
    store.ensure(bronze)
    store.ensure(quarantine)
    sequence, positions, counts, last_seen = _plan(store, bronze)
    while report.batches < max_batches:
        batch = reader.read(positions, max_records_per_batch, last_seen)
        if not len(batch) and not batch.lost:
            break
        if parse is None and calendar is None:
            calendar = store.read_arrow(DATE_LOOKUP)
        if parse is None:
            good, quarantine_rows = validate_records(batch.topics, batch.partitions, batch.offsets, batch.timestamps,
                                                     batch.keys, batch.values, calendar, SOURCE_PREFIX)
        else:
            store.codegen.reading(len(batch))
            good, quarantine_rows = _spark_parse(spark, parse, batch, staging)
        committed = _commit_batch(store, bronze, quarantine, good, quarantine_rows, batch, positions, counts,
                                  last_seen, sequence, now(), report)
        report.batches += 1
        if not committed:
            report.skipped_batches += 1
        # Re-read what is recorded: after a lost race the winner's positions are the truth.
        sequence, positions, counts, last_seen = _plan(store, bronze)
        try:
            reader.commit(positions)
        except Exception as exc:  # lag tools only: Delta already holds the positions
            log.warning("could not commit consumer-group offsets: %s", exc)
    report.positions = dict(positions)
    report.lag = reader.lag(positions)
    return report


def _spark_parse(spark, parse, batch: Batch, staging: Path | None) -> tuple[pa.Table, pa.Table]:
    """The bronze rows and quarantine rows of a batch, by a Spark parser."""
    records, rejected = _records(batch)
    frame, staged = _to_spark(spark, records, staging)
    try:
        data = parse(frame).select(
            *[c for c in KAFKA_COLUMNS], "source_file", "line",
            F.when(F.col(REASON).isNotNull(), F.col("raw")).alias("raw"), REASON,
        ).toArrow()
    finally:
        if staged is not None:
            staged.unlink(missing_ok=True)
    is_bad = pc.is_valid(data[REASON])
    good, bad = data.filter(pc.invert(is_bad)), data.filter(is_bad)
    columns = ["source_file", "line", "raw", REASON]
    return good, pa.concat_tables([bad.select(columns), rejected.select(columns).cast(bad.select(columns).schema)])


def _commit_batch(store: TableStore, bronze: TableSpec, quarantine: TableSpec, good: pa.Table,
                  quarantine_rows: pa.Table, batch: Batch, positions, counts, last_seen, sequence: int,
                  load_time: dt.datetime,
                  report: KafkaIngestReport) -> bool:
    stamp = pa.scalar(load_time, type=pa.timestamp("us", tz="UTC"))
    good = good.append_column("load_time", pa.repeat(stamp, good.num_rows))
    quarantine_rows = quarantine_rows.append_column("load_time", pa.repeat(stamp, quarantine_rows.num_rows))

    # Offsets from the stored position up to where this batch read were never committed:
    # whatever a crashed attempt left there is replaced, so a retry never doubles quarantine
    # rows (from the stored position, not the batch's start: retention may have moved that past
    # what the crashed attempt wrote). Only up to where this batch read, and only while its
    # number is free: a run that another one overtook must not remove that run's rows.
    touched = sorted(set(batch.start) | set(batch.lost))
    if touched and (store.transaction_version(bronze, app_id(bronze)) or 0) < sequence:
        predicate = " OR ".join(
            f"(source_file = {store.sql_string(source_name(k))} AND line >= {positions.get(k, 0)} "
            f"AND line < {batch.next_offsets[k]})" for k in touched)
        store.overwrite(quarantine, quarantine_rows, predicate=predicate,
                        metadata={"kafka_batch": sequence, "files": [source_name(k) for k in touched]})

    read = batch.records_by_partition()
    new_positions = dict(positions) | batch.next_offsets
    new_counts = {k: counts.get(k, 0) + read.get(k, 0) for k in set(counts) | set(read)}
    # A position moved past a gap, with nothing read after it, has no record before it to compare.
    new_last_seen = {k: v for k, v in last_seen.items() if new_positions.get(k) == positions.get(k)} | batch.last_seen
    metadata = {OFFSETS_KEY: new_positions, "batch": sequence,
                "files": {source_name(k): n for k, n in sorted(new_counts.items())},
                LAST_SEEN_KEY: dict(sorted(new_last_seen.items()))}
    if batch.lost:  # kept in the log for good: the check ``no_records_lost_to_retention`` reads it
        metadata[LOST_KEY] = {source_name(k): list(gap) for k, gap in sorted(batch.lost.items())}
    result = store.append(bronze, good, txns=[Txn(app_id(bronze), sequence)], metadata=metadata)
    if result.skipped:
        return False
    report.records += len(batch)
    report.rows_written += good.num_rows
    report.rows_quarantined += quarantine_rows.num_rows
    for key, (first, end) in batch.lost.items():
        report.lost[key] = report.lost.get(key, 0) + end - first
    for reason, n in group_count(quarantine_rows, REASON).items():
        report.quarantine_reasons[reason] = report.quarantine_reasons.get(reason, 0) + n
    return True
