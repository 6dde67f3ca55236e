"""The SQL of the Spark Delta table store, checked without Delta: every statement Spark's own
parser knows is parsed by the parser of the test session's Spark (the same grammar Databricks
extends), and the parse tree is compared with what was meant: identifiers come back as the
exact names, literals as the exact values, columns with their types and nullability, MERGE
clauses with their kinds and conditions. The Delta-only statements (DESCRIBE HISTORY,
VACUUM), which need Delta's parser, are checked on their name part with Spark's parser."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from fitness_assets.lakehouse import delta_sql
from fitness_assets.lakehouse.incremental import SYNC_CLAUSES
from fitness_assets.lakehouse.store import OP_COLUMN, Clause
from fitness_assets.tables import ALL_TABLES, KAFKA_MULTIPLEX_BZ, LONG, STRING, TIMESTAMP, TableSpec
from fitness_assets_tests.conftest import ON_CONNECT

HOSTILE_NAMES = ["plain", "with space", "back`tick", "``", "dot.ted", "quo'te", 'dou"ble', "back\\slash",
                 "semi;colon -- comment", "new\nline", "ünïcödé", "select", "`; DROP TABLE x; --"]
HOSTILE_VALUES = ["", "it's", "\\", "\\'", "'; DROP TABLE x; --", "a\nb\tc", "ünïcödé ✓", '"double"', "\\n literally",
                  "${var}", "\\${env:HOME}", "$${x}}", "%s {0}"]

HOSTILE = TableSpec(
    layer="la`yer x", name="ta'ble.`name`",
    columns=(("id", LONG), ("we`ird col", STRING), ("at", TIMESTAMP), ("amount", pa.decimal128(18, 6))),
    description="it's a \\ description; -- not a comment",
    keys=("id",), partition_by=("we`ird col",), not_null=("id",),
    constraints={"id`positive": "id > 0"}, properties={"owner's.note": "a\\b'c"},
)


@pytest.fixture(scope="module")
def parser(spark):
    """The test session's SQL parser (parsing needs no Delta and runs nothing)."""
    if ON_CONNECT:
        pytest.skip("FITNESS_TEST_SPARK=connect: Spark's SQL parser is reached through the JVM of a local session")
    return spark._jsparkSession.sessionState().sqlParser()


def _parts(parser, quoted: str) -> list[str]:
    seq = parser.parseMultipartIdentifier(quoted)
    return [seq.apply(i) for i in range(seq.size())]


def _seq(seq) -> list:
    return [seq.apply(i) for i in range(seq.size())]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_quoted_identifier_is_read_back_as_exactly_that_name(parser, name):
    assert _parts(parser, delta_sql.quote_identifier(name)) == [name]
    # and as one part of a three-part Unity Catalog name
    spec = TableSpec(layer=name, name=name, columns=(("k", LONG),), description="")
    assert _parts(parser, delta_sql.table_name(name, spec)) == [name, name, name]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_a_quoted_string_is_read_back_as_exactly_that_value(parser, value):
    literal = parser.parseExpression(delta_sql.quote_string(value))
    assert literal.getClass().getSimpleName() == "Literal"
    assert literal.value().toString() == value


def test_identifiers_and_literals_refuse_what_cannot_be_quoted():
    # "${" is refused: spark.sql substitutes ${...} in the text, and no quoting stops it.
    for bad in ("", None, "nul\x00byte", "${var}", "a${b}"):
        with pytest.raises(ValueError):
            delta_sql.quote_identifier(bad)
    with pytest.raises(ValueError):
        delta_sql.quote_string("nul\x00byte")


def test_three_part_names_and_the_two_part_name_without_catalog(parser):
    spec = TableSpec(layer="silver", name="users", columns=(("k", LONG),), description="")
    assert _parts(parser, delta_sql.table_name("fitness_prod", spec)) == ["fitness_prod", "silver", "users"]
    assert _parts(parser, delta_sql.table_name(None, spec)) == ["silver", "users"]
    assert _parts(parser, delta_sql.schema_name("fitness_prod", "silver")) == ["fitness_prod", "silver"]


def _create_plan(parser, catalog, spec):
    plan = parser.parsePlan(delta_sql.create_table_sql(catalog, spec))
    assert plan.getClass().getSimpleName() == "CreateTable"
    return plan


def _properties(table_spec) -> dict[str, str]:
    props = table_spec.properties()
    return {k: props.apply(k) for k in _seq(props.keys().toSeq())}


@pytest.mark.parametrize("spec", [HOSTILE, *ALL_TABLES], ids=lambda s: s.qualified_name)
def test_create_table_has_the_specs_schema_partitioning_comment_properties_and_cdf(parser, spark, spec):
    from pyspark.sql.pandas.types import from_arrow_schema

    plan = _create_plan(parser, "cat`alog", spec)
    assert plan.ignoreIfExists()  # CREATE TABLE IF NOT EXISTS: a second process does not fail
    assert list(_seq(plan.name().nameParts())) == ["cat`alog", spec.layer, spec.name]
    expected = from_arrow_schema(spec.schema)
    columns = _seq(plan.columns())
    assert [c.name() for c in columns] == spec.column_names
    assert [c.nullable() for c in columns] == [f.nullable for f in expected.fields]
    # Spark's type from the parsed DDL equals pyspark's own conversion of the Arrow type.
    assert [c.dataType().simpleString() for c in columns] == [f.dataType.simpleString() for f in expected.fields]
    partitioning = [t.toString() for t in _seq(plan.partitioning())]
    assert len(partitioning) == len(spec.partition_by)
    table_spec = plan.tableSpec()
    assert table_spec.provider().get().lower() == "delta"
    if spec.description:
        assert table_spec.comment().get() == spec.description
    properties = _properties(table_spec)
    assert properties == {**spec.properties, "delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "false"}


def test_create_schema_if_not_exists(parser):
    plan = parser.parsePlan(delta_sql.create_schema_sql("main", "sil`ver"))
    assert plan.getClass().getSimpleName() == "CreateNamespace"
    assert plan.ifNotExists()
    assert _parts(parser, delta_sql.schema_name("main", "sil`ver")) == ["main", "sil`ver"]


def test_constraints_are_added_only_when_missing_and_by_their_exact_name(parser):
    spec = TableSpec(layer="l", name="t", columns=(("a", LONG),), description="",
                     constraints={"Positive": "a > 0", "small": "a < 10"})
    # Delta keeps constraint names lower-cased in the table's properties.
    assert delta_sql.missing_constraints(spec, {}) == spec.constraints
    assert delta_sql.missing_constraints(spec, {"delta.constraints.positive": "a > 0"}) == {"small": "a < 10"}
    assert delta_sql.missing_constraints(spec, {"delta.constraints.positive": "a > 0",
                                                "delta.constraints.small": "a < 10"}) == {}
    sql = delta_sql.add_constraint_sql("c", HOSTILE, "id`positive", "id > 0")
    plan = parser.parsePlan(sql)
    assert plan.getClass().getSimpleName() == "AddCheckConstraint"
    assert plan.checkConstraint().name() == "id`positive"
    relation = plan.child().child()
    assert _seq(relation.multipartIdentifier()) == ["c", HOSTILE.layer, HOSTILE.name]


def test_missing_properties_compare_values_and_turn_the_change_feed_on(parser):
    spec = KAFKA_MULTIPLEX_BZ
    wanted = delta_sql.table_properties(spec)
    assert wanted["delta.enableChangeDataFeed"] == "true"
    assert wanted["delta.enableDeletionVectors"] == "false"  # or erased rows outlive VACUUM
    assert delta_sql.missing_properties(spec, {k.upper(): v.upper() for k, v in wanted.items()}) == {}
    off = dict(wanted) | {"delta.enableChangeDataFeed": "false"}
    assert delta_sql.missing_properties(spec, off) == {"delta.enableChangeDataFeed": "true"}
    plan = parser.parsePlan(delta_sql.set_properties_sql("c", HOSTILE, {"owner's.note": "a\\b'c", "x": ""}))
    assert plan.getClass().getSimpleName() == "SetTableProperties"
    props = plan.properties()
    assert {k: props.apply(k) for k in _seq(props.keys().toSeq())} == {"owner's.note": "a\\b'c", "x": ""}
    with pytest.raises(ValueError):
        delta_sql.set_properties_sql("c", HOSTILE, {})


def _merge_plan(parser, clauses, predicate="t.`id` = s.`id`", source="src`view"):
    plan = parser.parsePlan(delta_sql.merge_sql("c", HOSTILE, source, predicate, clauses))
    assert plan.getClass().getSimpleName() == "MergeIntoTable"
    return plan


def test_the_platforms_sync_merge_parses_into_its_clauses(parser):
    plan = _merge_plan(parser, SYNC_CLAUSES)
    matched = [a.getClass().getSimpleName() for a in _seq(plan.matchedActions())]
    assert matched == ["DeleteAction", "UpdateAction"]
    assert [a.getClass().getSimpleName() for a in _seq(plan.notMatchedActions())] == ["InsertAction"]
    assert plan.notMatchedBySourceActions().size() == 0
    assert _seq(plan.targetTable().child().multipartIdentifier()) == ["c", HOSTILE.layer, HOSTILE.name]
    assert plan.targetTable().alias() == "t"
    assert _seq(plan.sourceTable().child().multipartIdentifier()) == ["src`view"]
    # update_all and insert_all name every column of the spec and only those: the merge op of
    # the source (``_op``) never reaches the table.
    update, insert = _seq(plan.matchedActions())[1], _seq(plan.notMatchedActions())[0]
    for action in (update, insert):
        targets = [a.key().toString() for a in _seq(action.assignments())]
        assert len(targets) == len(HOSTILE.column_names)
        assert all(OP_COLUMN not in t for t in targets)
    assert all(a.condition().isDefined() for a in _seq(plan.matchedActions()))


def test_merge_clause_kinds_conditions_and_update_expressions(parser):
    clauses = (Clause("update", "s.at > t.at", {"we`ird col": "s.`we``ird col`", "at": "s.at"}),
               Clause("delete"), Clause("insert_all"), Clause("delete_not_matched_by_source", "t.id < 0"))
    plan = _merge_plan(parser, clauses)
    update, delete = _seq(plan.matchedActions())
    assert update.condition().isDefined() and not delete.condition().isDefined()
    assert [_seq(a.key().nameParts()) for a in _seq(update.assignments())] == [["we`ird col"], ["at"]]
    assert plan.notMatchedBySourceActions().size() == 1
    assert _seq(plan.notMatchedBySourceActions())[0].condition().isDefined()


def test_merge_refuses_what_spark_would_refuse_later():
    with pytest.raises(ValueError, match="last WHEN MATCHED"):
        delta_sql.merge_sql("c", HOSTILE, "v", "t.id = s.id", (Clause("update_all"), Clause("delete", "s.x")))
    with pytest.raises(ValueError):
        delta_sql.merge_sql("c", HOSTILE, "v", "t.id = s.id", ())
    with pytest.raises(ValueError):
        delta_sql.merge_sql("c", HOSTILE, "v", "t.id = s.id", (Clause("update"),))
    with pytest.raises(ValueError):
        delta_sql.merge_sql("c", HOSTILE, "v", "t.id = s.id", (Clause("upsert"),))


def test_insert_append_overwrite_and_replace_where(parser):
    append = parser.parsePlan(delta_sql.insert_sql("c", HOSTILE, "v`iew"))
    assert append.getClass().getSimpleName() == "InsertIntoStatement"
    assert not append.overwrite()
    assert _seq(append.userSpecifiedCols()) == HOSTILE.column_names
    overwrite = parser.parsePlan(delta_sql.insert_sql("c", HOSTILE, "v`iew", overwrite=True))
    assert overwrite.getClass().getSimpleName() == "InsertIntoStatement" and overwrite.overwrite()
    replace = parser.parsePlan(delta_sql.insert_sql("c", HOSTILE, "v`iew", replace_where="`id` IN ('a''', 'b')"))
    assert replace.getClass().getSimpleName() == "OverwriteByExpression"
    for plan in (append, overwrite):
        assert _seq(plan.table().multipartIdentifier()) == ["c", HOSTILE.layer, HOSTILE.name]
    with pytest.raises(ValueError):
        delta_sql.insert_sql("c", HOSTILE, "v", overwrite=True, replace_where="id = 1")


def test_reads_time_travel_and_appended_rows(parser):
    plan = parser.parsePlan(delta_sql.select_sql("c", HOSTILE, 7))
    travel = plan.child()
    assert travel.getClass().getSimpleName() == "RelationTimeTravel"
    assert str(travel.version().get()) == "7"
    assert _seq(travel.relation().multipartIdentifier()) == ["c", HOSTILE.layer, HOSTILE.name]
    assert [_seq(c.nameParts()) for c in _seq(plan.projectList())] == [[c] for c in HOSTILE.column_names]
    assert "RelationTimeTravel" not in parser.parsePlan(delta_sql.select_sql("c", HOSTILE)).toString()
    diff = parser.parsePlan(delta_sql.appended_rows_sql("c", HOSTILE, 3, 9))
    assert diff.getClass().getSimpleName() == "Except" and diff.isAll()
    first = parser.parsePlan(delta_sql.appended_rows_sql("c", HOSTILE, -1, 9))
    assert first.getClass().getSimpleName() != "Except"  # from the start: everything is new
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            delta_sql.select_sql("c", HOSTILE, bad)


def test_delta_only_statements_name_the_table_exactly(parser):
    """DESCRIBE HISTORY, DESCRIBE DETAIL, VACUUM and OPTIMIZE need Delta's parser (absent here): their name part is
    checked with Spark's, their numbers must be integers."""
    name = delta_sql.table_name("c", HOSTILE)
    history = delta_sql.history_sql("c", HOSTILE, 64)
    assert history.startswith("DESCRIBE HISTORY ") and history.endswith(" LIMIT 64")
    assert _parts(parser, history.removeprefix("DESCRIBE HISTORY ").removesuffix(" LIMIT 64")) == [
        "c", HOSTILE.layer, HOSTILE.name]
    assert delta_sql.history_sql("c", HOSTILE) == f"DESCRIBE HISTORY {name}"
    detail = delta_sql.detail_sql("c", HOSTILE)
    assert _parts(parser, detail.removeprefix("DESCRIBE DETAIL ")) == ["c", HOSTILE.layer, HOSTILE.name]
    vacuum = delta_sql.vacuum_sql("c", HOSTILE, 168)
    assert _parts(parser, vacuum.removeprefix("VACUUM ").removesuffix(" RETAIN 168 HOURS")) == [
        "c", HOSTILE.layer, HOSTILE.name]
    reorg = delta_sql.reorg_purge_sql("c", HOSTILE)
    assert _parts(parser, reorg.removeprefix("REORG TABLE ").removesuffix(" APPLY (PURGE)")) == [
        "c", HOSTILE.layer, HOSTILE.name]
    optimize = delta_sql.optimize_sql("c", HOSTILE)
    assert _parts(parser, optimize.removeprefix("OPTIMIZE ")) == ["c", HOSTILE.layer, HOSTILE.name]
    for bad in (-1, "1; DROP TABLE x", 2.5):
        with pytest.raises(ValueError):
            delta_sql.vacuum_sql("c", HOSTILE, bad)
        with pytest.raises(ValueError):
            delta_sql.history_sql("c", HOSTILE, bad)
    plan = parser.parsePlan(delta_sql.drop_table_sql("c", HOSTILE))
    assert plan.getClass().getSimpleName() == "DropTable" and plan.ifExists()


@pytest.mark.parametrize("dtype, expected", [
    (pa.int64(), "bigint"), (pa.int32(), "int"), (pa.float64(), "double"), (pa.string(), "string"),
    (pa.bool_(), "boolean"), (pa.date32(), "date"), (pa.timestamp("us", tz="UTC"), "timestamp"),
    (pa.timestamp("us"), "timestamp"), (pa.decimal128(18, 6), "decimal(18,6)"), (pa.binary(), "binary"),
])
def test_column_types_agree_with_pyspark_and_sparks_parser(parser, dtype, expected):
    from pyspark.sql.pandas.types import from_arrow_type

    sql_type = delta_sql.column_type(dtype)
    assert parser.parseDataType(sql_type).simpleString() == expected == from_arrow_type(dtype).simpleString()


def test_unsupported_column_types_are_refused():
    with pytest.raises(ValueError, match="no Spark SQL type"):
        delta_sql.column_type(pa.list_(pa.int64()))


def test_append_only_operations():
    assert delta_sql.is_append_only("WRITE", {"mode": "Append"})
    assert delta_sql.is_append_only("WRITE", {"mode": '"Append"'})
    assert not delta_sql.is_append_only("WRITE", {"mode": "Overwrite", "predicate": "x"})
    # An overwrite by saveAsTable is recorded as CREATE OR REPLACE TABLE AS SELECT.
    for op in ("MERGE", "DELETE", "UPDATE", "TRUNCATE", "RESTORE", "SOMETHING NEW", "CREATE OR REPLACE TABLE AS SELECT",
               "REPLACE TABLE AS SELECT", "DROP COLUMNS", "RENAME COLUMN"):
        assert not delta_sql.is_append_only(op, {})
    # Maintenance that changes no row: Databricks' liquid clustering, purging deletion vectors.
    for op in ("CREATE TABLE", "OPTIMIZE", "SET TBLPROPERTIES", "ADD CONSTRAINT", "STREAMING UPDATE", "REORG",
               "CLUSTER BY", "UNSET TBLPROPERTIES", "DROP CONSTRAINT"):
        assert delta_sql.is_append_only(op, None)


def test_progress_metadata_round_trip_and_never_goes_back():
    before = {"silver.users<-bronze.registered_users_bz": 5, "other": 2}
    after = delta_sql.progress_after(before, [("silver.users<-bronze.registered_users_bz", 7), ("other", 1),
                                              ("new", 0)])
    assert after == {"silver.users<-bronze.registered_users_bz": 7, "other": 2, "new": 0}
    assert before["silver.users<-bronze.registered_users_bz"] == 5  # the input is not changed
    # An upstream's identity is no progress: recorded as it is, lower or higher.
    identity = "silver.users<-bronze.registered_users_bz#table"
    assert delta_sql.progress_after({identity: 9, "other": 2}, [(identity, 4), ("other", 1)],
                                    as_is={identity}) == {identity: 4, "other": 2}
    text = delta_sql.encode_user_metadata({"files": {"a.csv": 3}, "it's": "x\\y"}, [("ingest:t", 4)],
                                          {"ingest:t": 4}, "c0ffee")
    decoded = delta_sql.decode_user_metadata(text)
    assert decoded["_progress"] == {"ingest:t": 4} and decoded["_txns"] == {"ingest:t": 4}
    assert decoded["_commit"] == "c0ffee"
    assert delta_sql.caller_metadata(decoded) == {"files": {"a.csv": 3}, "it's": "x\\y"}
    with pytest.raises(ValueError, match="reserved"):
        delta_sql.encode_user_metadata({"_progress": 1}, [], {}, "x")
    for foreign in (None, "", "written by a person", "[1, 2]", "{not json"):
        assert delta_sql.decode_user_metadata(foreign) is None
    assert delta_sql.decode_user_metadata(json.dumps({"a": 1})) == {"a": 1}


def test_operation_metrics_take_the_delta_rs_shape():
    merge = delta_sql.normalize_metrics("MERGE", {"numTargetRowsInserted": "2", "numTargetRowsUpdated": "1",
                                                  "numTargetRowsDeleted": "0", "executionTimeMs": "12"})
    assert merge == {"num_target_rows_inserted": 2, "num_target_rows_updated": 1, "num_target_rows_deleted": 0,
                     "execution_time_ms": 12}
    write = delta_sql.normalize_metrics("WRITE", {"numOutputRows": "5", "numFiles": "1"})
    assert write["num_added_rows"] == 5 and write["num_files"] == 1
    assert delta_sql.normalize_metrics("MERGE", None) == {}


def test_concurrency_conflicts_are_told_from_other_errors():
    assert delta_sql.is_concurrency_conflict(
        "[DELTA_CONCURRENT_APPEND] ConcurrentAppendException: Files were added to the root of the table")
    assert delta_sql.is_concurrency_conflict(RuntimeError("io.delta.exceptions.ConcurrentTransactionException"))
    assert not delta_sql.is_concurrency_conflict(RuntimeError("[DELTA_VIOLATE_CONSTRAINT_WITH_VALUES] CHECK"))
    assert not delta_sql.is_concurrency_conflict("[TABLE_OR_VIEW_NOT_FOUND]")


def test_the_spark_store_names_tables_in_the_layers_schema(parser):
    from fitness_assets.lakehouse.store import SparkDeltaTableStore
    from fitness_assets.tables import USERS

    plain = SparkDeltaTableStore(lambda: None, "fitness_prod")
    assert plain.location(USERS) == "fitness_prod.silver.users"
    assert _parts(parser, plain._name(USERS)) == ["fitness_prod", "silver", "users"]
    # a bundle's development mode prefixes schemas per developer
    dev = SparkDeltaTableStore(lambda: None, "fitness_dev", {"silver": "dev_jane_silver", "gold": ""})
    assert dev.location(USERS) == "fitness_dev.dev_jane_silver.users"
    assert _parts(parser, dev._name(USERS)) == ["fitness_dev", "dev_jane_silver", "users"]
    assert USERS.layer == "silver"  # the spec itself is not changed


def test_bronze_replace_where_names_files_in_the_grammar_of_the_store_that_evaluates_it(parser, spark):
    """A landing file name is data: in the Spark Delta store's replace-where it must read back
    as exactly that name (Spark SQL would take a backslash as an escape and ``${..}`` as a
    variable); in delta-rs's standard SQL a doubled quote is the only escape."""
    from fitness_assets.lakehouse.store import DeltaRsTableStore, SparkDeltaTableStore
    from fitness_assets.pipelines.bronze import _sql_list

    names = [f"gym_logins/{v}.csv" for v in HOSTILE_VALUES]
    expression = parser.parseExpression(f"source_file IN ({_sql_list(SparkDeltaTableStore(lambda: spark), names)})")
    assert [literal.value().toString() for literal in _seq(expression.list())] == names
    # the delta-rs grammar is not Spark's: the same text there would not read back
    assert _sql_list(DeltaRsTableStore("/nowhere", lambda: spark), names) != _sql_list(
        SparkDeltaTableStore(lambda: spark), names)
