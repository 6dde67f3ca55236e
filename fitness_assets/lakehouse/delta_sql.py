"""The SQL that the Spark Delta table store sends (Databricks / Unity Catalog, or any Spark with
Delta's jars): names, DDL, MERGE, history and time-travel reads, and the commit metadata that
carries progress. Pure functions: nothing here needs Spark, so every statement is unit-tested
on any machine (fitness_assets_tests/test_delta_sql.py).

Identifiers are always back-quoted (a back-quote inside a name is doubled) and string values
are always single-quoted with backslash escapes, as Spark's and Databricks' SQL parsers read
them. Expressions (MERGE conditions, CHECK constraints, update expressions) are SQL written by
this project's own code (tables.py, pipelines/) and are passed through as they are.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from fitness_assets.tables import TableSpec

CDF_PROPERTY = "delta.enableChangeDataFeed"
DELETION_VECTORS_PROPERTY = "delta.enableDeletionVectors"
CONSTRAINT_PREFIX = "delta.constraints."
# Session confs that make a Delta SQL write (MERGE, INSERT, UPDATE, DELETE) idempotent: Delta
# records (app id, version) in the commit and skips a later write whose version is not newer.
TXN_APP_ID_CONF = "spark.databricks.delta.write.txnAppId"
TXN_VERSION_CONF = "spark.databricks.delta.write.txnVersion"
USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
# Keys of the commit's userMetadata that belong to the store, not to the caller's metadata.
PROGRESS_KEY = "_progress"
TXNS_KEY = "_txns"
COMMIT_ID_KEY = "_commit"
INTERNAL_KEYS = (PROGRESS_KEY, TXNS_KEY, COMMIT_ID_KEY)


def quote_identifier(name: str) -> str:
    """``name`` as one back-quoted identifier: `` ` `` inside it is doubled."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an SQL identifier must be a non-empty string, not {name!r}")
    if "\x00" in name:
        raise ValueError(f"an SQL identifier cannot contain NUL: {name!r}")
    if "${" in name:
        # spark.sql substitutes ${...} in the statement's text before parsing it, quoted or
        # not, and a quoted identifier has no escape that would stop it.
        raise ValueError(f"an SQL identifier cannot contain '${{': {name!r}")
    return "`" + name.replace("`", "``") + "`"


def quote_string(value: str) -> str:
    """``value`` as an SQL string literal. Spark SQL reads backslash escapes inside literals
    (``spark.sql.parser.escapedStringLiterals`` is off by default, also on Databricks), so a
    backslash is escaped as well as the quote. ``spark.sql`` also substitutes ``${...}`` in the
    text before parsing (``spark.sql.variable.substitute``, on by default), so ``${`` is
    written ``$\\{``, which the parser reads back as ``${``."""
    if "\x00" in value:
        raise ValueError("an SQL string literal cannot contain NUL")
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("${", "$\\{")
    return "'" + escaped + "'"


def schema_name(catalog: str | None, layer: str) -> str:
    """``catalog.layer`` (the Unity Catalog schema of a layer), quoted."""
    return ".".join(quote_identifier(p) for p in (catalog, layer) if p is not None)


def table_name(catalog: str | None, spec: TableSpec) -> str:
    """``catalog.layer.table`` (three-part Unity Catalog name; two-part without a catalog), quoted."""
    return ".".join(quote_identifier(p) for p in (catalog, spec.layer, spec.name) if p is not None)


def detail_sql(catalog: str | None, spec: TableSpec) -> str:
    """One row about the table; its ``id`` is the table's identity."""
    return f"DESCRIBE DETAIL {table_name(catalog, spec)}"


_PRIMITIVES: dict[pa.DataType, str] = {
    pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INT", pa.int64(): "BIGINT",
    pa.float32(): "FLOAT", pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN", pa.string(): "STRING",
    pa.large_string(): "STRING", pa.binary(): "BINARY", pa.large_binary(): "BINARY", pa.date32(): "DATE",
}


def column_type(dtype: pa.DataType) -> str:
    """The Spark SQL type of an Arrow column type (the types tables.py uses, and their kin)."""
    if dtype in _PRIMITIVES:
        return _PRIMITIVES[dtype]
    if pa.types.is_timestamp(dtype):
        # Spark's TIMESTAMP is an instant (what the platform's UTC timestamps are); a naive Arrow
        # timestamp maps to it too, as pyspark's own Arrow conversion does for the data.
        return "TIMESTAMP"
    if pa.types.is_decimal(dtype):
        return f"DECIMAL({dtype.precision},{dtype.scale})"
    raise ValueError(f"no Spark SQL type for Arrow type {dtype}")


def table_properties(spec: TableSpec) -> dict[str, str]:
    """Table properties the store creates ``spec`` with: the spec's own, and the change data
    feed on every table. CDF is what the store reads changes from and, for append-only tables,
    what it reads appended rows from; on a table that is only appended to, Delta writes no
    change files (inserts are read from the data files), so it costs nothing there.

    Deletion vectors are off (Databricks turns them on for new tables by default): with them, a
    MERGE or DELETE only marks rows as removed, and an erased member's rows stay in data files
    the table still uses, which VACUUM never deletes. The store's vacuum also purges any
    deletion vectors a table made elsewhere has (``reorg_purge_sql``)."""
    return dict(spec.properties) | {CDF_PROPERTY: "true", DELETION_VECTORS_PROPERTY: "false"}


def create_schema_sql(catalog: str | None, layer: str) -> str:
    return f"CREATE SCHEMA IF NOT EXISTS {schema_name(catalog, layer)}"


def create_table_sql(catalog: str | None, spec: TableSpec) -> str:
    """``CREATE TABLE IF NOT EXISTS`` with the explicit schema (NOT NULL where the spec says),
    partitioning, comment and properties. CHECK constraints are separate statements
    (``add_constraint_sql``): Delta adds them with ALTER TABLE only."""
    columns = ", ".join(
        f"{quote_identifier(f.name)} {column_type(f.type)}" + ("" if f.nullable else " NOT NULL") for f in spec.schema)
    sql = f"CREATE TABLE IF NOT EXISTS {table_name(catalog, spec)} ({columns}) USING DELTA"
    if spec.partition_by:
        sql += " PARTITIONED BY (" + ", ".join(quote_identifier(c) for c in spec.partition_by) + ")"
    if spec.description:
        sql += f" COMMENT {quote_string(spec.description)}"
    properties = table_properties(spec)
    if properties:
        sql += " TBLPROPERTIES (" + ", ".join(
            f"{quote_string(k)} = {quote_string(v)}" for k, v in sorted(properties.items())) + ")"
    return sql


def show_properties_sql(catalog: str | None, spec: TableSpec) -> str:
    return f"SHOW TBLPROPERTIES {table_name(catalog, spec)}"


def missing_constraints(spec: TableSpec, properties: Mapping[str, str]) -> dict[str, str]:
    """The spec's CHECK constraints a table with ``properties`` lacks. Delta keeps a constraint
    as the property ``delta.constraints.<name>``, the name lower-cased."""
    present = {k.lower() for k in properties}
    return {name: expr for name, expr in spec.constraints.items()
            if (CONSTRAINT_PREFIX + name).lower() not in present}


def add_constraint_sql(catalog: str | None, spec: TableSpec, name: str, expression: str) -> str:
    return f"ALTER TABLE {table_name(catalog, spec)} ADD CONSTRAINT {quote_identifier(name)} CHECK ({expression})"


def missing_properties(spec: TableSpec, properties: Mapping[str, str]) -> dict[str, str]:
    """Properties the store creates tables with that an existing table lacks or has otherwise
    (a table made before, or by someone else)."""
    lowered = {k.lower(): v for k, v in properties.items()}
    return {k: v for k, v in table_properties(spec).items() if lowered.get(k.lower(), "").lower() != v.lower()}


def set_properties_sql(catalog: str | None, spec: TableSpec, properties: Mapping[str, str]) -> str:
    if not properties:
        raise ValueError("no properties to set")
    pairs = ", ".join(f"{quote_string(k)} = {quote_string(v)}" for k, v in sorted(properties.items()))
    return f"ALTER TABLE {table_name(catalog, spec)} SET TBLPROPERTIES ({pairs})"


def history_sql(catalog: str | None, spec: TableSpec, limit: int | None = None) -> str:
    """The table's commits, newest first (``DESCRIBE HISTORY`` lists them that way)."""
    sql = f"DESCRIBE HISTORY {table_name(catalog, spec)}"
    if limit is not None:
        sql += f" LIMIT {_non_negative(limit, 'limit')}"
    return sql


def select_sql(catalog: str | None, spec: TableSpec, version: int | None = None) -> str:
    """The spec's columns, at ``version`` (time travel) or current."""
    columns = ", ".join(quote_identifier(c) for c in spec.column_names)
    sql = f"SELECT {columns} FROM {table_name(catalog, spec)}"
    if version is not None:
        sql += f" VERSION AS OF {_non_negative(version, 'version')}"
    return sql


def appended_rows_sql(catalog: str | None, spec: TableSpec, after_version: int, up_to_version: int) -> str:
    """Rows appended in ``(after_version, up_to_version]`` of an append-only table without a
    change feed: the multiset difference of the two snapshots (exact, but it reads both)."""
    newer = select_sql(catalog, spec, up_to_version)
    if after_version < 0:
        return newer
    return f"{newer} EXCEPT ALL {select_sql(catalog, spec, after_version)}"


# Operations that only add rows (or change nothing readable); anything else between two
# versions means the table was not append-only there.
# (``CREATE OR REPLACE TABLE AS SELECT`` is not one: it is how Delta names an overwrite by
# ``saveAsTable``, which replaces every row.)
APPEND_ONLY_OPERATIONS = frozenset({
    "CREATE TABLE", "CREATE TABLE AS SELECT", "STREAMING UPDATE",
    "SET TBLPROPERTIES", "UNSET TBLPROPERTIES", "ADD CONSTRAINT", "DROP CONSTRAINT", "CHANGE COLUMN",
    "OPTIMIZE", "REORG", "CLUSTER BY", "VACUUM START", "VACUUM END", "UPGRADE PROTOCOL", "ADD COLUMNS",
    "SET TBLPROPERTIES AND ADD CONSTRAINT",
})


def is_append_only(operation: str, parameters: Mapping[str, Any] | None) -> bool:
    """Whether a commit (``DESCRIBE HISTORY`` operation and parameters) only added rows."""
    op = operation.upper()
    if op == "WRITE":
        return str((parameters or {}).get("mode", "")).strip('"').lower() == "append"
    if op in ("MERGE", "UPDATE", "DELETE", "TRUNCATE", "REPLACE TABLE", "RESTORE"):
        return False
    return op in APPEND_ONLY_OPERATIONS


def _merge_condition(predicate: str | None) -> str:
    return f" AND ({predicate})" if predicate else ""


_MERGE_GROUPS = {"update_all": "WHEN MATCHED", "update": "WHEN MATCHED", "delete": "WHEN MATCHED",
                 "insert_all": "WHEN NOT MATCHED", "delete_not_matched_by_source": "WHEN NOT MATCHED BY SOURCE"}


def merge_sql(catalog: str | None, spec: TableSpec, source: str, predicate: str,
              clauses: Sequence[Any]) -> str:
    """``MERGE INTO`` the table (alias ``t``) from the view ``source`` (alias ``s``).

    ``clauses`` are ``store.Clause`` values, in order: ``update_all`` and ``insert_all`` name
    the spec's columns explicitly (the source may carry extra columns such as the merge op,
    which must not reach the table); ``update`` sets the given SQL expressions."""
    if not clauses:
        raise ValueError("a MERGE needs at least one clause")
    # Spark's rule: of several clauses of one kind (matched / not matched / not matched by
    # source), only the last may go without a condition. Said here, before a cluster says it.
    groups: dict[str, list[Any]] = {}
    for clause in clauses:
        groups.setdefault(_MERGE_GROUPS.get(clause.kind, clause.kind), []).append(clause)
    for group, members in groups.items():
        if any(c.predicate is None for c in members[:-1]):
            raise ValueError(f"only the last {group} clause of a MERGE may omit its condition")
    parts = [f"MERGE INTO {table_name(catalog, spec)} AS t USING {quote_identifier(source)} AS s ON ({predicate})"]
    columns = [quote_identifier(c) for c in spec.column_names]
    for clause in clauses:
        cond = _merge_condition(clause.predicate)
        if clause.kind == "update_all":
            sets = ", ".join(f"{c} = s.{c}" for c in columns)
            parts.append(f"WHEN MATCHED{cond} THEN UPDATE SET {sets}")
        elif clause.kind == "update":
            if not clause.updates:
                raise ValueError("an 'update' clause needs updates")
            sets = ", ".join(f"{quote_identifier(c)} = {expr}" for c, expr in clause.updates.items())
            parts.append(f"WHEN MATCHED{cond} THEN UPDATE SET {sets}")
        elif clause.kind == "delete":
            parts.append(f"WHEN MATCHED{cond} THEN DELETE")
        elif clause.kind == "insert_all":
            values = ", ".join(f"s.{c}" for c in columns)
            parts.append(f"WHEN NOT MATCHED{cond} THEN INSERT ({', '.join(columns)}) VALUES ({values})")
        elif clause.kind == "delete_not_matched_by_source":
            parts.append(f"WHEN NOT MATCHED BY SOURCE{cond} THEN DELETE")
        else:
            raise ValueError(f"unknown MERGE clause kind {clause.kind!r}")
    return " ".join(parts)


def vacuum_sql(catalog: str | None, spec: TableSpec, retention_hours: int) -> str:
    return f"VACUUM {table_name(catalog, spec)} RETAIN {_non_negative(retention_hours, 'retention_hours')} HOURS"


def reorg_purge_sql(catalog: str | None, spec: TableSpec) -> str:
    """Rewrite the data files that deletion vectors mark rows of, without those rows (the old
    files then go with the next VACUUM); a table without deletion vectors is left as it is."""
    return f"REORG TABLE {table_name(catalog, spec)} APPLY (PURGE)"


def optimize_sql(catalog: str | None, spec: TableSpec) -> str:
    return f"OPTIMIZE {table_name(catalog, spec)}"


def _non_negative(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, not {value!r}")
    return value


# Progress (application transactions) on Spark Delta.
#
# Delta records an (app id, version) pair atomically with a write (writer options txnAppId /
# txnVersion, or the session confs above for SQL writes) and skips a repeated write, but it
# takes one pair per write and offers no SQL to read the recorded versions back. So every
# commit the store makes also carries, in its userMetadata (same atomic commit): the
# caller's metadata, the write's own pairs (``_txns``), the table's whole progress map after it
# (``_progress``: the newest map merged with this write's pairs), and a commit id, by which
# the store tells whether Delta skipped its write. Reading progress is then reading the
# newest commit with a ``_progress`` map, however old the pairs in it are.


def progress_after(previous: Mapping[str, int], txns: Iterable[tuple[str, int]],
                   as_is: Collection[str] = ()) -> dict[str, int]:
    """The progress map after a commit of ``txns``: a version never goes back, except the
    values of ``as_is`` (no progress: an upstream's identity), recorded as they are."""
    out = dict(previous)
    for app_id, version in txns:
        out[app_id] = version if app_id in as_is else max(version, out.get(app_id, version))
    return out


def encode_user_metadata(metadata: Mapping[str, Any] | None, txns: Sequence[tuple[str, int]],
                         progress: Mapping[str, int], commit_id: str) -> str:
    clash = set(metadata or {}) & set(INTERNAL_KEYS)
    if clash:
        raise ValueError(f"commit metadata keys {sorted(clash)} are reserved for the table store")
    return json.dumps(dict(metadata or {}) | {TXNS_KEY: dict(txns), PROGRESS_KEY: dict(progress),
                                              COMMIT_ID_KEY: commit_id}, sort_keys=True)


def decode_user_metadata(text: str | None) -> dict[str, Any] | None:
    """A commit's userMetadata as the store wrote it; None for a commit that is not the
    store's (no metadata, or not a JSON object)."""
    if not text or not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def caller_metadata(decoded: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's part of a decoded userMetadata."""
    return {k: v for k, v in decoded.items() if k not in INTERNAL_KEYS}


def drop_table_sql(catalog: str | None, spec: TableSpec) -> str:
    return f"DROP TABLE IF EXISTS {table_name(catalog, spec)}"


def insert_sql(catalog: str | None, spec: TableSpec, source: str, *, overwrite: bool = False,
               replace_where: str | None = None) -> str:
    """Append (``INSERT INTO``), replace everything (``INSERT OVERWRITE``) or replace the rows
    matching a predicate (``INSERT INTO ... REPLACE WHERE``) from the view ``source``. The
    view's columns are selected by name in the spec's order, so its order and extra columns
    do not matter; the two overwrite forms take no column list and match the table by
    position, which is the spec's order for tables the store created."""
    if overwrite and replace_where:
        raise ValueError("choose overwrite or replace_where, not both")
    columns = ", ".join(quote_identifier(c) for c in spec.column_names)
    select = f"SELECT {columns} FROM {quote_identifier(source)}"
    target = table_name(catalog, spec)
    if overwrite:
        return f"INSERT OVERWRITE {target} {select}"
    if replace_where:
        return f"INSERT INTO {target} REPLACE WHERE {replace_where} {select}"
    return f"INSERT INTO {target} ({columns}) {select}"


def _snake(name: str) -> str:
    out = []
    for ch in name:
        if ch.isupper():
            out.append("_" + ch.lower())
        else:
            out.append(ch)
    return "".join(out).lstrip("_")


def normalize_metrics(operation: str, metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """``DESCRIBE HISTORY``'s operationMetrics (camelCase strings) in the delta-rs store's shape
    (snake_case numbers), so materialization metadata reads the same on both backends; a
    WRITE's output rows are also ``num_added_rows``, the name delta-rs gives appended rows."""
    out: dict[str, Any] = {}
    for key, value in (metrics or {}).items():
        try:
            number: Any = int(value)
        except (TypeError, ValueError):
            number = value
        out[_snake(key)] = number
    if operation.upper() == "WRITE" and "num_output_rows" in out:
        out.setdefault("num_added_rows", out["num_output_rows"])
    return out


# Delta's optimistic-concurrency failures (ConcurrentAppendException and its kin, error
# classes DELTA_CONCURRENT_*): the write may be retried on a fresh snapshot. Matched on the
# message because Spark Connect / Databricks Connect hand the JVM exception over as text.
_CONFLICT_MARKERS = ("DELTA_CONCURRENT_", "ConcurrentAppendException", "ConcurrentDeleteReadException",
                     "ConcurrentDeleteDeleteException", "ConcurrentTransactionException",
                     "ConcurrentWriteException", "MetadataChangedException", "ProtocolChangedException")


def is_concurrency_conflict(error: BaseException | str) -> bool:
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return any(marker in text for marker in _CONFLICT_MARKERS)
