"""Checks of the bronze and quarantine tables."""

import hashlib
import itertools
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue
from pyspark.sql import functions as F

from fitness_assets.assets.checks_lib import Check, custom_check, rule_check
from fitness_assets.lakehouse.store import TableStore, Within
from fitness_assets.pipelines.bronze import (
    CHANGED,
    CHANGED_LINE,
    FILE_LINE,
    UnreadableFile,
    group_count,
    landing_path,
    landing_text_bytes,
    merged_metadata,
    of_files,
    of_files_arrow,
    read_landing_bytes,
    reason_counts,
    sha256,
)
from fitness_assets.pipelines.bronze_kafka import lost_to_retention
from fitness_assets.resources import LakehouseResource
from fitness_assets.tables import (
    GYM_LOGINS_BZ,
    GYM_LOGINS_QR,
    KAFKA_MULTIPLEX_BZ,
    KAFKA_MULTIPLEX_QR,
    REGISTERED_USERS_BZ,
    REGISTERED_USERS_QR,
    TableSpec,
)
from fitness_assets.transforms.bronze import LANDING_FORMATS, LandingFormat

QUARANTINE_WARN_SHARE = 0.05
KAFKA_PREFIX = "kafka://"  # Kafka partitions: no landing file, the recorded count is the truth


def _lines_by_file(store: TableStore, bronze: TableSpec) -> dict[str, int]:
    return merged_metadata(store.commit_metadata(bronze), "files")


def _counts(store: TableStore, spec: TableSpec, files: list[str] | None = None) -> dict[str, int]:
    arrow = of_files_arrow(store, spec, ["source_file"], files)
    if arrow is not None:  # the log's files read by the store (5M rows: ~0.15 s, against 0.4-1.6 s in Spark)
        return group_count(arrow, "source_file")
    rows = of_files(store.read(spec), files).groupBy("source_file").agg(F.count(F.lit(1)).alias("n")).collect()
    return {r["source_file"]: r["n"] for r in rows}


def _quarantine_by_file(store: TableStore, quarantine: TableSpec, files: list[str] | None = None) -> dict[str, dict]:
    """Per file: all rows, line rows (line >= 1) and the first of them, file-level rows
    (line 0) and the latest change notice (line -1)."""
    arrow = of_files_arrow(store, quarantine, ["source_file", "line"], files)
    if arrow is not None:
        return _quarantine_by_file_arrow(store, quarantine, arrow, files)
    line = F.col("line")
    rows = of_files(store.read(quarantine), files).groupBy("source_file").agg(
        F.count(F.lit(1)).alias("all"),
        F.count(F.when(line >= 1, 1)).alias("lines"), F.min(F.when(line >= 1, line)).alias("first"),
        F.count(F.when(line == FILE_LINE, 1)).alias("file"),
        F.max(F.when(line == CHANGED_LINE, F.col("raw"))).alias("changed"),
    ).collect()
    return {r["source_file"]: r.asDict() for r in rows}


def _quarantine_by_file_arrow(store: TableStore, quarantine: TableSpec, rows: pa.Table,
                              files: list[str] | None) -> dict[str, dict]:
    """``_quarantine_by_file`` from the quarantine's ``source_file`` and ``line`` as Arrow; the
    ``raw`` text is read for change notices only."""
    out: dict[str, dict] = {}
    if rows.num_rows:
        line = rows["line"]
        is_line = pc.greater_equal(line, 1)
        tagged = pa.table({
            "source_file": rows["source_file"],
            "is_line": pc.cast(is_line, pa.int64()), "line_row": pc.if_else(is_line, line, pa.scalar(None, line.type)),
            "is_file": pc.cast(pc.equal(line, FILE_LINE), pa.int64())})
        grouped = tagged.group_by("source_file").aggregate(
            [([], "count_all"), ("is_line", "sum"), ("line_row", "min"), ("is_file", "sum")])
        for r in grouped.to_pylist():
            out[r["source_file"]] = {"source_file": r["source_file"], "all": r["count_all"], "lines": r["is_line_sum"],
                                     "first": r["line_row_min"], "file": r["is_file_sum"], "changed": None}
    notices = of_files_arrow(store, quarantine, ["source_file", "raw"], files, [Within("line", CHANGED_LINE, CHANGED_LINE)])
    if notices is not None and notices.num_rows:
        latest = notices.group_by("source_file").aggregate([("raw", "max")])
        for name, raw in zip(latest["source_file"].to_pylist(), latest["raw_max"].to_pylist(), strict=True):
            out[name]["changed"] = raw
    return out


def _files_since(commits: list[dict], after: int, up_to: int) -> set[str] | None:
    """The files named by ``commits`` (a table's commit metadata) in versions ``(after,
    up_to]``, or None when a commit among them does not say which files it wrote."""
    named: set[str] = set()
    by_version = {meta.get("_version"): meta for meta in commits}
    for version in range(after + 1, up_to + 1):
        meta = by_version.get(version, {})
        files = meta.get("files", meta.get("changed_files"))  # ingestion commits / change notices
        if files is None:
            return None
        named.update(files)
    return named


def _changed_on_disk(landing_root: str, name: str, seen: dict | None) -> bool:
    """Whether a landing file's size or modification time differs from its ingestion's."""
    if not seen or "size" not in seen or "mtime_ns" not in seen:
        return False
    try:
        st = os.lstat(landing_path(landing_root, name))
    except (OSError, ValueError):
        return True
    return (st.st_size, st.st_mtime_ns) != (seen["size"], seen["mtime_ns"])


def touched_since(store: TableStore, landing_root: str, bronze: TableSpec, quarantine: TableSpec,
                  since: dict[str, int], commits: list[dict], recorded: dict[str, int],
                  seen: dict[str, dict]) -> set[str] | None:
    """The files whose verdict may differ from the last passing reconciliation (at the versions
    ``since``): named by a bronze or quarantine commit since then, named by a bronze row
    appended since (a row of a file no commit recorded fails the check), or changed on disk
    since their ingestion (``recorded`` and ``seen``: the files and their ingestion as merged
    from ``commits``, the bronze log). None when the log cannot tell (a commit without its files, rows
    removed from bronze)."""
    after, version = since[bronze.qualified_name], store.version(bronze)
    written = _files_since(commits, after, version)
    rejected = _files_since(store.commit_metadata(quarantine), since[quarantine.qualified_name],
                            store.version(quarantine))
    if written is None or rejected is None:
        return None
    try:
        names = store.read_appended_arrow(bronze, after, version, ["source_file"])
        if names is None:
            appended = store.read_appended(bronze, after, version)
            in_rows = {r["source_file"] for r in appended.select("source_file").distinct().collect()}
        else:
            in_rows = set(pc.unique(names["source_file"]).to_pylist())
    except RuntimeError:
        return None
    return (written | rejected | in_rows
            | {name for name in recorded if _changed_on_disk(landing_root, name, seen.get(name))})


def count_landing_lines(text: bytes) -> tuple[int, int | None]:
    """Non-blank lines of a landing file and the number of the first one. Deliberately not the
    ingestion's splitter nor Spark's: an independent count is what lets the reconciliation
    catch a reader that loses or invents lines (``\\r``-only endings, a header taken as data)."""
    if b"\r" in text:
        text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lines = text.split(b"\n")
    first = next((number for number, line in enumerate(lines, start=1) if line.strip()), None)
    # Counted from the first non-blank line on: a file's lines are rarely blank (measured on the
    # 5M benchmark's 800 MB of landing files: 3.5 -> 1.6 s with one test per line, no bookkeeping).
    return (0 if first is None else sum(1 for line in itertools.islice(lines, first - 1, None) if line.strip())), first


def _file_verdict(landing_root: str, name: str, recorded: int, seen: dict | None, fmt: LandingFormat,
                  bronze_rows: int, q: dict) -> tuple[bool, str]:
    """Whether one ingested file is accounted for, and how that was decided."""
    if name.startswith(KAFKA_PREFIX):
        return bronze_rows + q.get("all", 0) == recorded, "kafka"
    accounted = bronze_rows + q.get("lines", 0)
    path = landing_path(landing_root, name)
    if seen and "refused" in seen:
        return q.get("file", 0) == 1 and accounted == 0, "refused"
    if not os.path.lexists(path):
        return accounted == recorded, "missing"
    why = None
    try:
        data = read_landing_bytes(path)
    except UnreadableFile as e:
        data, why = None, e.why
    except OSError:
        data = None
    if data is None or (seen and seen.get("sha256") not in (None, sha256(data))):
        current = json.loads(q["changed"]) if q.get("changed") else {}
        reported = (current.get("sha256") == sha256(data)) if data is not None else (
            why is not None and current.get("refused") == why)
        return reported and accounted == recorded, "changed"
    try:
        lines, first = count_landing_lines(landing_text_bytes(data))
    except UnreadableFile:
        return False, "unreadable"
    expected = lines
    if fmt.header is not None and lines:
        expected = lines - 1 + int(q.get("first") == first)  # the header, unless it was quarantined as data
    return accounted == expected == recorded, "counted"


def reconcile(store: TableStore, landing_root: str, source: str, bronze: TableSpec,
              quarantine: TableSpec, since: dict[str, int] | None = None) -> tuple[bool, dict]:
    """Every ingested file: its non-blank lines, counted again from the landing file, equal its
    bronze rows plus quarantined rows. A file refused whole has exactly its one file row; a file
    that changed after ingestion must carry its ``changed_file`` notice; a file no longer in the
    landing zone, and a Kafka partition (``kafka://``), is held to the count its commit recorded.

    With ``since`` (the bronze and quarantine versions of a reconciliation that passed), only
    the files whose verdict may have changed are verified again (``touched_since``): every
    other file passed then and nothing it is judged by has changed."""
    fmt = LANDING_FORMATS[source]
    commits = store.commit_metadata(bronze)  # the log read once
    recorded, seen = merged_metadata(commits, "files"), merged_metadata(commits, "landing")
    touched = None if since is None else touched_since(store, landing_root, bronze, quarantine, since, commits,
                                                           recorded, seen)
    files = None if touched is None else sorted(touched)
    written, rejected = _counts(store, bronze, files), _quarantine_by_file(store, quarantine, files)
    off: dict[str, dict] = {}
    kinds: dict[str, int] = {}
    for name in recorded if files is None else [f for f in files if f in recorded]:
        n, q = recorded[name], rejected.get(name, {})
        ok, kind = _file_verdict(landing_root, name, n, seen.get(name), fmt, written.get(name, 0), q)
        kinds[kind] = kinds.get(kind, 0) + 1
        if not ok:
            off[name] = {"how": kind, "recorded": n, "bronze": written.get(name, 0), "quarantine": q.get("all", 0)}
    unknown = sorted(set(written) - set(recorded))
    if files is None:
        rows = {"bronze_rows": sum(written.values()),
                "quarantined_rows": sum(rejected.get(f, {}).get("all", 0) for f in recorded)}
    else:  # rows of the files verified again; the tables' totals from the log
        rows = {"bronze_rows": store.row_count(bronze), "quarantined_rows": store.row_count(quarantine)}
    return not off and not unknown, {
        "files": len(recorded), "lines": sum(recorded.values()), **rows,
        "verified_again": "every file" if files is None else
        f"{len(files)} files touched since bronze version {since[bronze.qualified_name]}",
        "mismatched_files": len(off), "rows_from_unrecorded_files": len(unknown),
        "files_by_verification": MetadataValue.json(kinds),
        "sample": MetadataValue.json(dict(list(off.items())[:5]) | {"unrecorded": unknown[:5]}),
    }


def landing_fingerprint(store: TableStore, landing_root: str, bronze: TableSpec) -> str:
    """Size and modification time of every file ``bronze`` ingested (no file is read): the
    reconciliation's input besides the tables."""
    parts = []
    for name in sorted(_lines_by_file(store, bronze)):
        try:
            st = os.lstat(landing_path(landing_root, name))
            parts.append(f"{name}\t{st.st_size}\t{st.st_mtime_ns}")
        except (OSError, ValueError):
            parts.append(f"{name}\t-")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def reconciliation_check(source: str, bronze: TableSpec, quarantine: TableSpec) -> Check:
    def evaluate(store: TableStore, lakehouse: LakehouseResource, since: dict[str, int] | None) -> AssetCheckResult:
        passed, metadata = reconcile(store, lakehouse.landing_root, source, bronze, quarantine, since)
        return AssetCheckResult(passed=passed, metadata=metadata)

    return custom_check(
        bronze, "reconciled_with_landing",
        "For every ingested file: its lines, counted again from the landing file, equal bronze rows + quarantined rows.",
        evaluate, reads=(quarantine,), incremental=True,
        landing_state=lambda store, lakehouse: landing_fingerprint(store, lakehouse.landing_root, bronze))


def quarantine_volume_check(bronze: TableSpec, quarantine: TableSpec) -> Check:
    def evaluate(store: TableStore, lakehouse: LakehouseResource) -> AssetCheckResult:
        by_file = _lines_by_file(store, bronze)
        files, lines = set(by_file), sum(by_file.values())
        reasons = reason_counts(store, quarantine, sorted(files))
        # A note that a file changed after it was ingested is no rejected line of it.
        rejected = sum(n for reason, n in reasons.items() if reason != CHANGED)
        share = rejected / lines if lines else 0.0
        return AssetCheckResult(
            passed=share <= QUARANTINE_WARN_SHARE,
            metadata={"lines": lines, "quarantined": rejected, "share": share, "reasons": MetadataValue.json(reasons)},
        )

    return custom_check(quarantine, "quarantine_volume",
                        f"Warn when more than {QUARANTINE_WARN_SHARE:.0%} of ingested lines are rejected.",
                        evaluate, severity=AssetCheckSeverity.WARN, reads=(bronze,))


def retention_loss_check(bronze: TableSpec) -> Check:
    def evaluate(store: TableStore, lakehouse: LakehouseResource) -> AssetCheckResult:
        gaps = lost_to_retention(store, bronze)
        by_partition = {name: sum(end - first for first, end in ranges) for name, ranges in gaps.items()}
        return AssetCheckResult(
            passed=not gaps,
            metadata={"lost_records": sum(by_partition.values()),
                      "lost_by_partition": MetadataValue.json(by_partition),
                      "lost_offsets": MetadataValue.json({name: ranges[-5:] for name, ranges in gaps.items()})},
        )

    return custom_check(
        bronze, "no_records_lost_to_retention",
        "No Kafka record was deleted by the topic's retention before it was taken in (the gaps stay on record: "
        "they cannot be read again).", evaluate, severity=AssetCheckSeverity.WARN)


# No NULL check: the tables' NOT NULL columns make a write with a NULL in them fail.
bronze_checks = [
    rule_check(KAFKA_MULTIPLEX_BZ, "date_resolved", "date IS NULL OR week_part IS NULL",
               "Every record's timestamp falls inside date_lookup's range.", severity=AssetCheckSeverity.WARN),
    *[reconciliation_check(s, b, q) for s, b, q in (("registered_users", REGISTERED_USERS_BZ, REGISTERED_USERS_QR),
                                                    ("gym_logins", GYM_LOGINS_BZ, GYM_LOGINS_QR),
                                                    ("kafka_multiplex", KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR))],
    *[quarantine_volume_check(b, q) for b, q in ((REGISTERED_USERS_BZ, REGISTERED_USERS_QR),
                                                 (GYM_LOGINS_BZ, GYM_LOGINS_QR),
                                                 (KAFKA_MULTIPLEX_BZ, KAFKA_MULTIPLEX_QR))],
    retention_loss_check(KAFKA_MULTIPLEX_BZ),
]
