"""Auto Loader-style file ingestion into a bronze table and its quarantine.

Which files a bronze table has ingested is recorded in the custom metadata of the very commit
that appended their rows, together with an application transaction ``ingest:<table>`` whose
version counts batches. Data and bookkeeping therefore land in one atomic Delta commit: a
crash before it leaves no trace, a crash after it leaves nothing to redo, and a retried batch
is recognised and skipped. Quarantine rows of a batch are written first with a replace-where
on the batch's files, so writing them again replaces rather than doubles them.

Landing files are read here, in Python, by the exact name listed: Spark's file sources treat a
path as a glob pattern (``*``, ``[``, ``{``) and URL-encode it in ``_metadata``, so a name would
be a pattern instead of data. Reading the bytes here also gives the size and SHA-256 recorded
with each file, the one place where encodings, compression and line endings are decided, and
line numbers that do not depend on Spark's line reader.

Every landed line and file is accounted for: a line is a bronze row or a quarantine row; a
file that cannot be read as text (a symlink, compressed in an unsupported way, binary) is one
quarantine row at line 0 with reason ``unreadable_file:<why>``; a file that changes after it
was ingested is one quarantine row at line -1 with reason ``changed_file`` (never re-ingested,
never silently ignored).
"""

from __future__ import annotations

import codecs
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import re
import stat
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fitness_assets.lakehouse.spark import arrow_frame
from fitness_assets.lakehouse.store import CommitResult, Condition, OneOf, TableStore, Txn
from fitness_assets.tables import TableSpec
from fitness_assets.transforms.bronze import LANDING_FORMATS, REASON, LandingFormat
from fitness_assets.transforms.kafka_arrow import PlainLines

FILE_LINE = 0  # `line` of a quarantine row about a whole file that could not be read
CHANGED_LINE = -1  # `line` of a quarantine row about a file that changed after ingestion
UNREADABLE = "unreadable_file"
CHANGED = "changed_file"
# Bytes read into memory per batch (a single larger file is still taken, alone).
MAX_BATCH_BYTES = 256 * 1024 * 1024
# Decompressed size beyond which a gzip file is refused rather than inflated into memory.
MAX_DECOMPRESSED_BYTES = 2 * 1024 * 1024 * 1024 - 1
LINE_BREAK = re.compile(rb"\r\n|\r|\n")
TEXT_LINE_BREAK = re.compile(r"\r\n|\r|\n")
ASCII_BLANK = " \t\n\r\x0b\x0c"  # what bytes.strip() removes: a line of only these is blank
LINES_SCHEMA = pa.schema([("source_file", pa.string()), ("line", pa.int64()), ("raw", pa.string())])
_UNSUPPORTED_COMPRESSION = (b"BZh", b"\xfd7zXZ\x00", b"PK\x03\x04", b"\x28\xb5\x2f\xfd")


class IngestConfigError(RuntimeError):
    """Misconfiguration found before any work: the message says, in one line, what to fix."""


class UnreadableFile(Exception):
    """A landing file that cannot be read as text; ``why`` becomes ``unreadable_file:<why>``."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class LandingFile:
    relative: str  # "<source>/<file name>", the value of `source_file`
    path: str
    size: int
    mtime_ns: int = 0
    refused: str | None = None  # why the entry is not read at all (a symlink, a device...)


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
    refused_files: dict[str, str] = field(default_factory=dict)
    changed_files: list[str] = field(default_factory=list)


# Marks a name that is not UTF-8. No file name holds a "/", so a marked name is never the name
# of another file, however its escapes read.
NOT_UTF8 = "/(name not UTF-8)"
_ESCAPE = re.compile(rb"\\(\\|x([0-9a-f]{2}))")


def _display_name(name: str) -> str:
    """A file name as text, one to one: a UTF-8 name as it is; any other with its backslashes
    doubled, its bytes that are not UTF-8 as ``\\xNN`` and ``NOT_UTF8`` after it."""
    raw = name.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace") + NOT_UTF8


def _legacy_name(source: str, f: LandingFile) -> str | None:
    """The name a file whose name is not UTF-8 was ingested under before names were one to
    one (escapes only, no mark): such a file is not ingested a second time."""
    if not f.relative.endswith(NOT_UTF8):
        return None
    return f"{source}/{os.fsencode(f.path).rsplit(b'/', 1)[-1].decode('utf-8', 'backslashreplace')}"


def _ingested_as_legacy(source: str, f: LandingFile, done: set[str], landing: dict[str, dict[str, Any]],
                        listed: list[LandingFile]) -> bool:
    """``f`` was ingested under its legacy name: that name is recorded (in ``done``; with its
    size and time in ``landing``), is not the name of another file listed now (a file literally
    named with those escapes), and was recorded with this file's size and time where sizes and
    times were recorded. Otherwise a file literally named ``a\\xe9.csv``, once ingested, made
    ``a<0xE9>.csv`` look ingested for good."""
    legacy = _legacy_name(source, f)
    if legacy is None or legacy not in done or any(other.relative == legacy for other in listed):
        return False
    seen = landing.get(legacy) or {}
    return "size" not in seen or (seen.get("size"), seen.get("mtime_ns")) == (f.size, f.mtime_ns)


def landing_path(landing_root: str, name: str) -> str | bytes:
    """Where the landing file named ``name`` (``<source>/<file>``, as ``list_landing`` names
    it) is: a name that is not UTF-8 is given back its bytes."""
    if not name.endswith(NOT_UTF8):
        return os.path.join(landing_root, name)
    raw = _ESCAPE.sub(lambda m: b"\\" if m.group(2) is None else bytes([int(m.group(2), 16)]),
                      name[:-len(NOT_UTF8)].encode("utf-8"))
    return os.path.join(os.fsencode(landing_root), raw)


def list_landing(landing_root: str, source: str) -> list[LandingFile]:
    """Files of one landing folder in delivery (name) order; `_`/`.`-prefixed names are
    in-flight temporaries and ignored, and so are sub-folders. A symlink or any other entry
    that is not a regular file is listed as refused, never followed: it could point out of
    the landing zone."""
    folder = Path(landing_root) / source
    if not folder.is_dir():
        return []
    files = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(("_", ".")) or entry.is_dir(follow_symlinks=False):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # moved away (an archiver) since the folder was read: not there
            continue
        refused = None
        if entry.is_symlink():
            refused = "symlink"
        elif not entry.is_file(follow_symlinks=False):
            refused = "not_a_regular_file"
        files.append(LandingFile(f"{source}/{_display_name(entry.name)}", entry.path, info.st_size,
                                 info.st_mtime_ns, refused))
    return files


def read_landing_bytes(path: str) -> bytes:
    """The bytes of a regular file, never through a symlink (checked again at open time, so a
    file swapped for a link after listing is not followed either)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if os.path.islink(path):
            raise UnreadableFile("symlink") from None
        if isinstance(e, FileNotFoundError):
            raise
        raise UnreadableFile(f"os_error_{e.errno}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise UnreadableFile("not_a_regular_file")
        return fh.read()


def landing_text_bytes(data: bytes) -> bytes:
    """A landing file's bytes as UTF-8 text bytes, or ``UnreadableFile``. gzip content is
    accepted whatever the name; a UTF-8 byte-order mark is dropped; UTF-16/32 with a BOM is
    transcoded; other compressions and binary content (NUL bytes) are refused. Lines are not
    decoded here: a line with invalid UTF-8 is quarantined on its own."""
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                inflated = gz.read(MAX_DECOMPRESSED_BYTES + 1)
        except (OSError, EOFError, zlib.error):
            raise UnreadableFile("corrupt_gzip") from None
        if len(inflated) > MAX_DECOMPRESSED_BYTES:
            raise UnreadableFile("too_large")
        data = inflated
    elif data.startswith(_UNSUPPORTED_COMPRESSION):
        raise UnreadableFile("unsupported_compression")
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                data = data.decode(codec).encode("utf-8")
            except (UnicodeDecodeError, UnicodeEncodeError):
                raise UnreadableFile("encoding") from None
            break
    data = data.removeprefix(codecs.BOM_UTF8)
    if b"\x00" in data:
        raise UnreadableFile("binary")
    return data


def numbered_lines(data: bytes) -> list[tuple[int, bytes]]:
    """Non-blank lines numbered from 1; ``\\r\\n``, ``\\r`` (old Mac) and ``\\n`` all end a line."""
    return [(n, line) for n, line in enumerate(LINE_BREAK.split(data), start=1) if line.strip()]


def decoded_lines(data: bytes) -> tuple[list[tuple[int, str]], list[tuple[int, bytes]]]:
    """``numbered_lines`` decoded: the UTF-8 lines as text, and the lines that are not UTF-8.
    A whole file that decodes is split as text (several times faster per line)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        good, bad = [], []
        for n, line in numbered_lines(data):
            try:
                good.append((n, line.decode("utf-8")))
            except UnicodeDecodeError:
                bad.append((n, line))
        return good, bad
    parts = TEXT_LINE_BREAK.split(text) if "\r" in text else text.split("\n")
    return [(n, line) for n, line in enumerate(parts, start=1) if line.strip(ASCII_BLANK)], []


_BLANK_LINE = r"\A[ \t\x0b\x0c]*\z"  # ASCII_BLANK within a line that has no line break


def arrow_lines(data: bytes) -> tuple[pa.Array, pa.Array, list[tuple[int, bytes]]]:
    """``decoded_lines`` in Arrow: the numbers and texts of the non-blank UTF-8 lines, and the
    lines that are not UTF-8. A file that is valid UTF-8 with ``\\n`` line ends only (the
    common case) is validated and split by Arrow, without a Python string per line."""
    if b"\r" not in data and len(data) < 2**31 - 1:
        try:
            text = pa.array([data], pa.binary()).cast(pa.string())
        except pa.ArrowInvalid:  # not UTF-8 somewhere: lines are decoded one by one below
            text = None
        if text is not None:
            pieces = pc.split_pattern(text, "\n").flatten()
            keep = pc.invert(pc.match_substring_regex(pieces, _BLANK_LINE))
            return pa.array(np.arange(1, len(pieces) + 1, dtype=np.int64)).filter(keep), pieces.filter(keep), []
    good, bad = decoded_lines(data)
    return pa.array([n for n, _ in good], pa.int64()), pa.array([line for _, line in good], pa.string()), bad


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def merged_metadata(commits: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The per-file maps under ``key`` of a table's commit metadata (``commit_metadata``,
    oldest first) merged, a later commit's entry for a file winning: ``files`` (lines or
    records per file or Kafka partition), ``landing`` (each file as ingested)."""
    merged: dict[str, Any] = {}
    for meta in commits:
        merged.update(meta.get(key, {}))
    return merged


def ingested_files(store: TableStore, bronze: TableSpec) -> set[str]:
    """Every landing file already committed to ``bronze``, from its commits' own metadata."""
    return set(merged_metadata(store.commit_metadata(bronze), "files"))


def ingested_landing(store: TableStore, bronze: TableSpec) -> dict[str, dict[str, Any]]:
    """Size, mtime and SHA-256 (or why it was refused) of every landing file as ingested."""
    return merged_metadata(store.commit_metadata(bronze), "landing")


def group_count(table: pa.Table, column: str) -> dict[str, int]:
    """Rows per value of ``column`` (a NULL value counts under None)."""
    if table.num_rows == 0:
        return {}
    counts = table.group_by(column).aggregate([([], "count_all")])
    return dict(zip(counts[column].to_pylist(), counts["count_all"].to_pylist(), strict=True))


def of_files(rows: DataFrame, files: list[str] | None) -> DataFrame:
    """The rows of ``files`` (all rows when None): a filter Parquet can skip row groups by."""
    return rows if files is None else rows.where(F.col("source_file").isin(files) if files else F.lit(False))


def of_files_arrow(store: TableStore, spec: TableSpec, columns: list[str], files: list[str] | None,
                   where: Sequence[Condition] = ()) -> pa.Table | None:
    """``columns`` of the rows of ``files`` (all rows when None; only those ``where`` holds) as
    Arrow read by the store itself; None when it reads through Spark only."""
    of = [] if files is None else [OneOf("source_file", pa.array(files, pa.string()))]
    return store.read_columns_arrow(spec, columns, where=[*of, *where])


def reason_counts(store: TableStore, quarantine: TableSpec, files: list[str] | None = None) -> dict[str, int]:
    """Quarantined rows per reason (of ``files`` only, when given): by Arrow where the store
    reads it itself, else in one Spark job."""
    reasons = of_files_arrow(store, quarantine, [REASON], files)
    if reasons is not None:
        return group_count(reasons, REASON)
    rows = of_files(store.read(quarantine), files).groupBy(REASON).count().collect()
    return {r[REASON]: r["count"] for r in rows}


def _sql_list(store: TableStore, values: list[str]) -> str:
    """File names as a list of literals in the grammar of the store that evaluates them (a
    name is data: a quote, a backslash or ``${`` in it must not change the predicate)."""
    return ", ".join(store.sql_string(v) for v in values)


def check_landing_root(landing_root: str) -> None:
    """Fail fast when the landing root is missing: an empty run would look healthy."""
    if not os.path.isdir(landing_root):
        raise IngestConfigError(
            f"landing root {landing_root!r} does not exist or is not a folder: create it or set FITNESS_LANDING_ROOT")


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
    plain: Callable[[pa.ChunkedArray], PlainLines] | None = None,
) -> IngestReport:
    """Ingest the landing files of ``source`` not yet in ``bronze``, in bounded batches, after
    reporting files that changed since they were ingested.

    ``plain``, where given, decides the lines it can without Spark: the lines it accepts with
    their bronze columns (all but ``source_file`` and ``load_time``), and the lines it refuses
    with their reasons; ``parse`` gets the rest, and writes the quarantine rows of those."""
    check_landing_root(landing_root)
    store.check_writable()
    fmt = LANDING_FORMATS[source]
    report = IngestReport(bronze.qualified_name)
    store.ensure(bronze)
    store.ensure(quarantine)
    listed = list_landing(landing_root, source)
    if not listed:  # nothing to take in or compare: bronze's history (every commit) is not read
        report.version = store.version(bronze)
        return report
    report.changed_files = _report_changed_files(store, quarantine, listed, ingested_landing(store, bronze), now())
    app_id = f"ingest:{bronze.name}"
    while report.batches < max_batches:
        # The batch's number first, then what is ingested: when another run (a CLI run beside
        # the daemon's) commits in between, the number is taken and this batch's commit is
        # skipped, never a second copy of the files the other run took in.
        sequence = (store.transaction_version(bronze, app_id) or 0) + 1
        commits = store.commit_metadata(bronze)
        done, landing = set(merged_metadata(commits, "files")), merged_metadata(commits, "landing")
        listed = list_landing(landing_root, source)
        pending = [f for f in listed
                   if f.relative not in done and not _ingested_as_legacy(source, f, done, landing, listed)]
        report.pending_files = len(pending)
        if not pending:
            break
        batch = _take_batch(pending, max_files_per_batch)
        result = _ingest_batch(store, spark, bronze, quarantine, parse, fmt, batch, sequence, now(), report, plain)
        report.batches += 1
        report.skipped_batches += int(result.skipped)
        report.pending_files = len(pending) - len(batch)
    report.version = store.version(bronze)
    return report


def _take_batch(pending: list[LandingFile], max_files: int) -> list[LandingFile]:
    batch, size = [], 0
    for f in pending[:max_files]:
        if batch and size + f.size > MAX_BATCH_BYTES:
            break
        batch.append(f)
        size += f.size
    return batch


def _report_changed_files(store: TableStore, quarantine: TableSpec, listed: list[LandingFile],
                          ingested: dict[str, dict[str, Any]], load_time: dt.datetime) -> list[str]:
    """Files whose content differs from what was ingested get one ``changed_file`` quarantine
    row (line -1, ``raw`` = the new size and checksum), written again only when the content
    changes again. Size and mtime are compared first, so unchanged files are not re-read. An
    ingested file that became an entry no longer read (a symlink...) is a change too (``raw``
    = why it is refused now), and so is an entry refused then that is a regular file now: its
    content was never ingested, and is not silently left out."""
    candidates = {}
    for f in listed:
        seen = ingested.get(f.relative)
        if not seen or not ("sha256" in seen or "refused" in seen):  # not ingested, or before checksums
            continue
        if f.refused:  # not read now
            if "sha256" in seen:  # but read then
                candidates[f.relative] = json.dumps({"refused": f.refused}, sort_keys=True)
            continue
        if "sha256" in seen and f.size == seen.get("size") and f.mtime_ns == seen.get("mtime_ns"):
            continue
        try:
            digest = sha256(read_landing_bytes(f.path))
        except (OSError, UnreadableFile):
            continue
        if digest != seen.get("sha256"):
            candidates[f.relative] = json.dumps({"size": f.size, "sha256": digest}, sort_keys=True)
    if not candidates:
        return []
    notices = store.read(quarantine).where(
        (F.col("line") == CHANGED_LINE) & F.col("source_file").isin(sorted(candidates)))
    reported = {r["source_file"]: r["raw"] for r in notices.select("source_file", "raw").collect()}
    new = {name: raw for name, raw in candidates.items() if reported.get(name) != raw}
    if new:
        names = sorted(new)
        rows = pa.table({"source_file": names, "line": [CHANGED_LINE] * len(names), "raw": [new[n] for n in names],
                         "reason": [CHANGED] * len(names), "load_time": [load_time] * len(names)})
        store.overwrite(quarantine, rows, predicate=f"line = {CHANGED_LINE} AND source_file IN ({_sql_list(store, names)})",
                        metadata={"changed_files": names})
    return sorted(candidates)


@dataclass
class _Batch:
    lines: list[pa.Table] = field(default_factory=list)  # LINES_SCHEMA (file names dictionary-encoded), per file
    rejected: list[tuple[str, int, str | None, str]] = field(default_factory=list)
    landing: dict[str, dict[str, Any]] = field(default_factory=dict)
    read: list[LandingFile] = field(default_factory=list)


def _read_batch(batch: list[LandingFile], fmt: LandingFormat) -> _Batch:
    """Lines of the batch's files for the parser, and the rows rejected before parsing: whole
    files that cannot be read and lines that are not UTF-8."""
    out = _Batch()
    for f in batch:
        try:
            if f.refused:
                raise UnreadableFile(f.refused)
            data = read_landing_bytes(f.path)
        except FileNotFoundError:
            continue  # gone since listing: not landed any more
        except UnreadableFile as e:
            out.read.append(f)
            out.landing[f.relative] = {"size": f.size, "mtime_ns": f.mtime_ns, "refused": e.why}
            out.rejected.append((f.relative, FILE_LINE, None, f"{UNREADABLE}:{e.why}"))
            continue
        out.read.append(f)
        out.landing[f.relative] = {"size": len(data), "mtime_ns": f.mtime_ns, "sha256": sha256(data)}
        try:
            text = landing_text_bytes(data)
            del data
        except UnreadableFile as e:
            out.landing[f.relative]["refused"] = e.why
            out.rejected.append((f.relative, FILE_LINE, None, f"{UNREADABLE}:{e.why}"))
            continue
        numbers, lines, bad = arrow_lines(text)
        if fmt.header is not None and bad and (len(numbers) == 0 or bad[0][0] < numbers[0].as_py()):
            # The header (the first line) cannot be read: no value can be told by its column,
            # so every line is malformed, as in a file without a header.
            out.rejected.extend((f.relative, n, line, fmt.malformed)
                                for n, line in zip(numbers.to_pylist(), lines.to_pylist(), strict=True))
            numbers, lines = numbers[:0], lines[:0]
        name = pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(lines), np.int32)), pa.array([f.relative]))
        out.lines.append(pa.table([name, numbers, lines], names=LINES_SCHEMA.names))
        out.rejected.extend((f.relative, n, line.decode("utf-8", "backslashreplace"), fmt.malformed) for n, line in bad)
    return out


def _parsed_schema(bronze: TableSpec) -> pa.Schema:
    """What a batch's parse yields: the bronze columns but ``load_time`` and ``source_file``,
    then where the line comes from (``source_file``, ``line``), the line when it was rejected
    (``raw``), and why (``reason``). Only the quarantine's columns of a rejected line are used."""
    fields = [pa.field(f.name, f.type) for f in bronze.schema if f.name not in ("load_time", "source_file")]
    return pa.schema([*fields, pa.field("source_file", pa.string()), pa.field("line", pa.int64()),
                      pa.field("raw", pa.string()), pa.field(REASON, pa.string())])


def _parse_lines(spark, bronze: TableSpec, parse, read: _Batch, plain,
                 reading: Callable[[int], None] | None = None) -> pa.Table:
    """The parsed rows of a batch's lines: the plain ones decided by ``plain`` without Spark
    (usable or not), the rest by ``parse`` in Spark (``reading`` is told how many lines Spark reads)."""
    schema = _parsed_schema(bronze)
    lines = pa.concat_tables(read.lines) if read.lines else LINES_SCHEMA.empty_table()
    parts = []
    if plain is not None and lines.num_rows:
        decided = plain(lines.column("raw"))
        if len(decided.taken):
            origin = _origin(lines).take(pa.array(decided.taken, pa.int64()))
            nulls = pa.nulls(len(decided.taken), pa.string())
            columns = {**{name: origin.column(name) for name in ("source_file", "line")}, "raw": nulls, REASON: nulls}
            parts.append(pa.table({f.name: decided.rows[f.name] if f.name in decided.rows.column_names
                                   else columns[f.name] for f in schema}).cast(schema))
        if len(decided.refused):
            refused = np.zeros(lines.num_rows, dtype=bool)
            refused[decided.refused] = True  # ascending, as the reasons: a filter keeps that order
            origin = lines.filter(pa.array(refused))
            columns = {name: origin.column(name) for name in ("source_file", "line", "raw")} | {REASON: decided.reasons}
            parts.append(pa.table({f.name: columns[f.name] if f.name in columns else pa.nulls(origin.num_rows, f.type)
                                   for f in schema}).cast(schema))
        left = np.ones(lines.num_rows, dtype=bool)
        left[decided.taken] = False
        left[decided.refused] = False
        lines = lines.filter(pa.array(left))
    if lines.num_rows or not parts:
        if reading is not None:
            reading(lines.num_rows)
        parsed = parse(arrow_frame(spark, lines.cast(LINES_SCHEMA)))
        bad_raw = F.when(F.col(REASON).isNotNull(), F.col("raw")).alias("raw")
        parts.append(parsed.select(*[bad_raw if name == "raw" else name for name in schema.names]).toArrow().cast(schema))
    return pa.concat_tables(parts)


def _origin(lines: pa.Table) -> pa.Table:
    """``source_file`` (dictionary-encoded: an entry per file, an index per line) and ``line`` of
    the batch's lines, each in one chunk, so that taking many rows copies no file names."""
    source = lines.column("source_file")
    if not pa.types.is_dictionary(source.type):
        source = source.dictionary_encode()
    return pa.table({"source_file": source.unify_dictionaries().combine_chunks(),
                     "line": lines.column("line").combine_chunks()})


def _split_by_reason(data: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The usable rows (no ``reason``) and the refused ones. The parts a batch is made of are
    often all of one kind (the plain lines taken or refused): those are not copied."""
    good, bad = [], []
    for batch in data.to_batches():
        refused = batch.num_rows - batch.column(REASON).null_count
        if refused == 0:
            good.append(batch)
        elif refused == batch.num_rows:
            bad.append(batch)
        else:
            is_bad = pc.is_valid(batch.column(REASON))
            good.append(batch.filter(pc.invert(is_bad)))
            bad.append(batch.filter(is_bad))
    return pa.Table.from_batches(good, data.schema), pa.Table.from_batches(bad, data.schema)


def _ingest_batch(store, spark, bronze, quarantine, parse, fmt, batch, sequence, load_time, report,
                  plain=None) -> CommitResult:
    read = _read_batch(batch, fmt)
    data = _parse_lines(spark, bronze, parse, read, plain, store.codegen.reading)
    data = data.append_column("load_time", pa.repeat(pa.scalar(load_time, pa.timestamp("us", tz="UTC")), data.num_rows))
    good, bad = _split_by_reason(data)
    quarantine_rows = bad.select(quarantine.column_names).cast(quarantine.schema)
    if read.rejected:
        early = pa.table({
            "source_file": [r[0] for r in read.rejected], "line": [r[1] for r in read.rejected],
            "raw": [r[2] for r in read.rejected], "reason": [r[3] for r in read.rejected],
            "load_time": [load_time] * len(read.rejected)}, schema=quarantine.schema)
        quarantine_rows = pa.concat_tables([quarantine_rows, early])

    counted = pa.table({"source_file": pa.chunked_array(
        [*good["source_file"].chunks, *quarantine_rows["source_file"].chunks], type=pa.string())})
    lines_per_file = {f.relative: 0 for f in read.read} | group_count(counted, "source_file")
    files = sorted(lines_per_file)
    if not files:
        return CommitResult(bronze.qualified_name, "append", store.version(bronze), skipped=True)
    if quarantine_rows.num_rows:
        store.overwrite(quarantine, quarantine_rows,
                        predicate=f"line >= {FILE_LINE} AND source_file IN ({_sql_list(store, files)})",
                        metadata={"files": files, "batch": sequence})
    result = store.append(
        bronze, good.select(bronze.column_names),
        txns=[Txn(f"ingest:{bronze.name}", sequence)],
        metadata={"files": lines_per_file, "landing": read.landing, "batch": sequence},
    )
    if not result.skipped:
        report.files.update(lines_per_file)
        report.rows_written += good.num_rows
        report.rows_quarantined += quarantine_rows.num_rows
        for reason, n in group_count(quarantine_rows, REASON).items():
            report.quarantine_reasons[reason] = report.quarantine_reasons.get(reason, 0) + n
        report.refused_files.update({name: v["refused"] for name, v in read.landing.items() if "refused" in v})
    return result
