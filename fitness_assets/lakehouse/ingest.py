"""Auto Loader-style file ingestion into a bronze table and its quarantine.

Which files a bronze table has ingested is recorded in the custom metadata of the very commit
that appended their rows, together with an application transaction ``ingest:<table>`` whose
version counts batches. Data and bookkeeping therefore land in one atomic Delta commit: a
crash before it leaves no trace, a crash after it leaves nothing to redo, and a retried batch
is recognised and skipped. Quarantine rows of a batch are written first with a replace-where
on the batch's files, so writing them again replaces rather than doubles them.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fitness_assets.lakehouse.store import CommitResult, TableStore, Txn
from fitness_assets.tables import TableSpec
from fitness_assets.transforms.bronze import REASON, split_lines


@dataclass(frozen=True)
class LandingFile:
    relative: str  # "<source>/<file name>", the value of `source_file`
    path: str
    size: int


@dataclass
class IngestReport:
    """What one ingestion run did, for asset metadata and the run report."""

    table: str
    batches: int = 0
    files: dict[str, int] = field(default_factory=dict)  # file -> data lines read
    rows_written: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    skipped_batches: int = 0
    pending_files: int = 0
    version: int = -1


def list_landing(landing_root: str, source: str) -> list[LandingFile]:
    """Files of one landing folder in delivery (name) order; `_`/`.`-prefixed names are
    in-flight temporaries and ignored."""
    folder = Path(landing_root) / source
    if not folder.is_dir():
        return []
    files = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file() and not entry.name.startswith(("_", ".")):
            files.append(LandingFile(f"{source}/{entry.name}", entry.path, entry.stat().st_size))
    return files


def ingested_files(store: TableStore, bronze: TableSpec) -> set[str]:
    """Every landing file already committed to ``bronze``, from its commits' own metadata."""
    done: set[str] = set()
    for meta in store.commit_metadata(bronze):
        done.update(meta.get("files", {}))
    return done


def read_landing_files(spark: SparkSession, files: list[LandingFile]) -> DataFrame:
    """Whole files as (``source_file``, ``content``)."""
    text = spark.read.text([f.path for f in files], wholetext=True)
    name = F.element_at(F.split(F.col("_metadata.file_path"), "/"), -1)
    folder = F.element_at(F.split(F.col("_metadata.file_path"), "/"), -2)
    return text.select(F.concat_ws("/", folder, name).alias("source_file"), F.col("value").alias("content"))


def _group_count(table: pa.Table, column: str) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    counts = table.group_by(column).aggregate([(column, "count")])
    return dict(zip(counts[column].to_pylist(), counts[f"{column}_count"].to_pylist(), strict=True))


def _sql_list(values: list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def ingest(
    store: TableStore,
    spark: SparkSession,
    landing_root: str,
    source: str,
    bronze: TableSpec,
    quarantine: TableSpec,
    parse: Callable[[DataFrame], DataFrame],
    max_files_per_batch: int = 64,
    max_batches: int = 1000,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> IngestReport:
    """Ingest the landing files of ``source`` not yet in ``bronze``, in bounded batches."""
    report = IngestReport(bronze.qualified_name)
    store.ensure(bronze)
    store.ensure(quarantine)
    app_id = f"ingest:{bronze.name}"
    while report.batches < max_batches:
        done = ingested_files(store, bronze)
        pending = [f for f in list_landing(landing_root, source) if f.relative not in done]
        report.pending_files = len(pending)
        if not pending:
            break
        batch = pending[:max_files_per_batch]
        sequence = (store.transaction_version(bronze, app_id) or 0) + 1
        result = _ingest_batch(store, spark, bronze, quarantine, parse, batch, sequence, now(), report)
        report.batches += 1
        report.skipped_batches += int(result.skipped)
        report.pending_files = len(pending) - len(batch)
    report.version = store.version(bronze)
    return report


def _ingest_batch(store, spark, bronze, quarantine, parse, batch, sequence, load_time, report) -> CommitResult:
    lines = split_lines(read_landing_files(spark, batch))
    parsed = parse(lines)
    bad_raw = F.when(F.col(REASON).isNotNull(), F.col("raw"))
    data = parsed.select(*[c for c in bronze.column_names if c not in ("load_time", "source_file")],
                         "source_file", "line", bad_raw.alias("raw"), REASON).toArrow()
    load_col = pa.array([load_time] * data.num_rows, type=pa.timestamp("us", tz="UTC"))
    data = data.append_column("load_time", load_col)
    is_bad = pc.is_valid(data[REASON])
    good, bad = data.filter(pc.invert(is_bad)), data.filter(is_bad)

    lines_per_file = {f.relative: 0 for f in batch} | _group_count(data, "source_file")
    files = sorted(lines_per_file)
    quarantine_rows = bad.select(quarantine.column_names)
    if bad.num_rows:
        store.overwrite(quarantine, quarantine_rows, predicate=f"source_file IN ({_sql_list(files)})",
                        metadata={"files": files, "batch": sequence})
    result = store.append(
        bronze, good.select(bronze.column_names),
        txns=[Txn(f"ingest:{bronze.name}", sequence)],
        metadata={"files": lines_per_file, "batch": sequence},
    )
    if not result.skipped:
        report.files.update(lines_per_file)
        report.rows_written += good.num_rows
        report.rows_quarantined += bad.num_rows
        for reason, n in _group_count(bad, REASON).items():
            report.quarantine_reasons[reason] = report.quarantine_reasons.get(reason, 0) + n
    return result
