"""The table-store contract on real Delta tables, run against every store that can run here:
delta-rs always; Spark's native Delta (SparkDeltaTableStore) where delta-spark is importable
and Delta's jars are on the test session's classpath with its SQL extension on (otherwise
those runs skip and say which of the two is missing)."""

import datetime as dt
import importlib.util
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from fitness_assets.lakehouse.store import (
    Clause,
    DeltaRsTableStore,
    Merge,
    OneOf,
    SparkDeltaTableStore,
    StalePlan,
    Txn,
    Within,
)
from fitness_assets.tables import LONG, STRING, TIMESTAMP, TableSpec
from fitness_assets_tests.conftest import ON_CONNECT

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"


def spark_delta_unavailable(spark) -> str | None:
    """Why Spark's native Delta cannot run in the test session, or None when it can."""
    if importlib.util.find_spec("delta") is None:
        return "delta-spark is not importable"
    try:
        spark._jvm.java.lang.Class.forName(DELTA_EXTENSION)
    except Exception:
        return ("Delta's jars are not on the Spark classpath (pyspark ships without them and there is no Maven "
                "here to fetch io.delta:delta-spark)")
    if DELTA_EXTENSION not in (spark.conf.get("spark.sql.extensions", "") or ""):
        return "the test session was started without Delta's SQL extension (spark.sql.extensions)"
    return None


@pytest.fixture(params=["delta-rs", "spark-delta"])
def store(request, settings, spark):
    """Each store on fresh tables: delta-rs under the test's temporary root; Spark Delta in the
    session catalog, its schemas dropped afterwards."""
    if request.param == "delta-rs":
        yield DeltaRsTableStore(settings.lakehouse_root, lambda: spark)
        return
    reason = spark_delta_unavailable(spark)
    if reason:
        pytest.skip(f"Spark Delta store not run: {reason}")
    yield SparkDeltaTableStore(lambda: spark)
    for layer in ("test", "bronze"):
        spark.sql(f"DROP SCHEMA IF EXISTS `{layer}` CASCADE")


def _delta_rs_only(store, why: str) -> None:
    if not isinstance(store, DeltaRsTableStore):
        pytest.skip(f"delta-rs only: {why}")

KV = TableSpec(layer="test", name="kv", columns=(("k", LONG), ("v", STRING)), description="test table",
               keys=("k",), not_null=("k",), constraints={"v_not_bad": "v <> 'bad'"})

UPSERT = Merge("t.k = s.k", (Clause("update_all"), Clause("insert_all")))


def _rows(store, spec=KV):
    return sorted((r["k"], r["v"]) for r in store.read(spec).collect())


def _data(*pairs):
    return pa.table({"k": pa.array([p[0] for p in pairs], pa.int64()), "v": [p[1] for p in pairs]})


def test_create_append_merge_and_read_back(store):
    store.ensure(KV)
    assert store.version(KV) >= 0
    store.append(KV, _data((1, "a"), (2, "b")))
    result = store.merge(KV, _data((2, "B"), (3, "c")), UPSERT)
    assert result.metrics["num_target_rows_updated"] == 1
    assert result.metrics["num_target_rows_inserted"] == 1
    assert _rows(store) == [(1, "a"), (2, "B"), (3, "c")]
    assert store.row_count(KV) == 3
    if isinstance(store, DeltaRsTableStore):
        assert DeltaTable(store.location(KV)).schema().to_arrow() is not None


def test_check_constraint_is_enforced(store):
    store.ensure(KV)
    with pytest.raises(Exception, match="(?i)constraint|check"):
        store.append(KV, _data((1, "bad")))
    assert _rows(store) == []


def test_a_null_in_a_not_null_column_fails_the_write(store):
    """Why no check counts NULL keys: the write itself refuses them, by append or by MERGE."""
    store.ensure(KV)
    store.append(KV, _data((1, "a")))
    null_key = pa.table({"k": pa.array([None], pa.int64()), "v": ["x"]})
    with pytest.raises(Exception, match="(?i)null|invalid data|validation"):
        store.append(KV, null_key)
    with pytest.raises(Exception, match="(?i)null|invalid data|validation"):
        store.merge(KV, null_key, Merge("t.v = s.v", (Clause("insert_all"),)))
    assert _rows(store) == [(1, "a")]


def test_exactly_once_append_skips_a_repeated_batch(store):
    first = store.append(KV, _data((1, "a")), txns=[Txn("loader", 1)])
    again = store.append(KV, _data((1, "a")), txns=[Txn("loader", 1)])
    older = store.append(KV, _data((1, "a")), txns=[Txn("loader", 0)])
    assert not first.skipped and again.skipped and older.skipped
    store.append(KV, _data((2, "b")), txns=[Txn("loader", 2)])
    assert _rows(store) == [(1, "a"), (2, "b")]
    assert store.transaction_version(KV, "loader") == 2


def test_concurrent_conflict_is_retried_on_a_fresh_snapshot(store, spark):
    _delta_rs_only(store, "a Spark SQL write takes its snapshot when the statement starts, after the "
                          "before_commit hook, so a conflict cannot be forced from it")
    store.append(KV, _data((1, "a"), (2, "b")))
    competitor_done = []

    def competing_merge(spec):
        # Another writer commits between our snapshot and our commit, exactly once.
        if not competitor_done:
            competitor_done.append(True)
            DeltaTable(store.location(spec)).merge(
                _data((1, "other")), "t.k = s.k", source_alias="s", target_alias="t"
            ).when_matched_update_all().execute()

    store.before_commit = competing_merge
    result = store.merge(KV, _data((2, "mine")), UPSERT)
    assert result.metrics["attempts"] == 2
    assert _rows(store) == [(1, "other"), (2, "mine")]


def test_a_step_opens_a_table_once_and_still_sees_every_commit(store, monkeypatch):
    """Within a step the store keeps the tables it opened and brings them up to date, so it
    sees another writer's commit; after the step it forgets them, so a table dropped and made
    again is read as it is now, not as it was."""
    _delta_rs_only(store, "the Spark Delta store reads through Spark SQL")
    store.append(KV, _data((1, "a")), txns=[Txn("loader", 1)])
    opened = []
    real_open = store._open
    monkeypatch.setattr(store, "_open", lambda spec, version=None: opened.append(version) or real_open(spec, version))
    with store.step():
        first = store.version(KV)
        for _ in range(3):
            assert store.version(KV) == first and store.transaction_version(KV, "loader") == 1
        DeltaTable(store.location(KV)).merge(  # another process's commit
            _data((2, "b")), "t.k = s.k", source_alias="s", target_alias="t").when_not_matched_insert_all().execute()
        assert store.version(KV) == first + 1 and _rows(store) == [(1, "a"), (2, "b")]
        store.append(KV, _data((3, "c")), txns=[Txn("loader", 2)])  # the store's own commit
        assert store.version(KV) == first + 2 and store.transaction_version(KV, "loader") == 2
    assert opened.count(None) == 2  # once for the reads of the step, once for the write

    shutil.rmtree(store.location(KV))
    store.append(KV, _data((9, "z")))
    with store.step():
        assert _rows(store) == [(9, "z")] and store.transaction_version(KV, "loader") is None


def test_conflicting_exactly_once_write_lands_once(store):
    store.append(KV, _data((1, "a")))
    raced = []

    def racing_writer(spec):
        if not raced:
            raced.append(True)
            store.before_commit = None
            store.append(KV, _data((2, "b")), txns=[Txn("loader", 1)])

    store.before_commit = racing_writer
    result = store.append(KV, _data((2, "b")), txns=[Txn("loader", 1)])
    assert result.skipped  # the retry saw the racer's transaction and did not write again
    assert _rows(store) == [(1, "a"), (2, "b")]


def test_appended_rows_and_change_feed(store):
    cdf = TableSpec(layer="test", name="cdf", columns=KV.columns, description="", keys=("k",))
    store.append(KV, _data((1, "a")))
    v1 = store.version(KV)
    store.append(KV, _data((2, "b")))
    assert sorted(r["k"] for r in store.read_appended(KV, v1, store.version(KV)).collect()) == [2]
    store.append(cdf, _data((1, "a")))
    v = store.version(cdf)
    store.merge(cdf, _data((1, "A"), (5, "e")), UPSERT)
    changes = store.read_changes(cdf, v, store.version(cdf)).collect()
    assert sorted((r["k"], r["v"], r["_change_type"]) for r in changes) == [
        (1, "A", "update_postimage"), (1, "a", "update_preimage"), (5, "e", "insert")]


def test_merge_with_delete_markers(store):
    store.append(KV, _data((1, "a"), (2, "b"), (3, "c")))
    source = _data((1, None), (2, "B"), (4, "d")).append_column("_op", pa.array(["delete", "upsert", "upsert"]))
    store.merge(KV, source, Merge("t.k = s.k", (
        Clause("delete", "s._op = 'delete'"), Clause("update_all", "s._op = 'upsert'"),
        Clause("insert_all", "s._op = 'upsert'"))))
    assert _rows(store) == [(2, "B"), (3, "c"), (4, "d")]


def test_a_table_left_without_its_constraints_by_a_crash_gets_them_back(store):
    _delta_rs_only(store, "the crash is staged with delta-rs' own create")

    from fitness_assets.tables import KAFKA_MULTIPLEX_BZ

    # What a process killed between the create commit and the constraint commit leaves behind.
    DeltaTable.create(store.location(KAFKA_MULTIPLEX_BZ), KAFKA_MULTIPLEX_BZ.schema,
                      partition_by=list(KAFKA_MULTIPLEX_BZ.partition_by))
    assert "delta.constraints.topic_accepted" not in DeltaTable(store.location(KAFKA_MULTIPLEX_BZ)).metadata().configuration
    store.ensure(KAFKA_MULTIPLEX_BZ)
    configuration = DeltaTable(store.location(KAFKA_MULTIPLEX_BZ)).metadata().configuration
    assert "delta.constraints.topic_accepted" in configuration  # (delta-rs stores it normalized)
    store.ensure(KAFKA_MULTIPLEX_BZ)  # already complete: nothing to add, no error


def test_commit_metadata_and_time_travel(store):
    first = store.append(KV, _data((1, "a")), metadata={"files": {"x.csv": 1}, "note": "it's \\ ${odd}"})
    store.append(KV, _data((2, "b")))
    store.append(KV, _data((3, "c")), metadata={"files": {"y.csv": 1}})
    metas = store.commit_metadata(KV)
    assert [m["files"] for m in metas] == [{"x.csv": 1}, {"y.csv": 1}]  # oldest first, only commits with metadata
    assert metas[0]["note"] == "it's \\ ${odd}" and metas[0]["_version"] == first.version
    assert store.latest_commit_metadata(KV, "files")["files"] == {"y.csv": 1}
    assert store.latest_commit_metadata(KV, "note")["_version"] == first.version
    assert store.latest_commit_metadata(KV, "absent") is None
    assert sorted(r["k"] for r in store.read(KV, first.version).collect()) == [1]


def test_small_and_large_reads_give_the_same_rows(settings, spark, monkeypatch):
    """delta-rs store: a read under SMALL_READ_ROWS crosses as Arrow, a larger one as a Parquet
    scan; both give the same rows and types, whole snapshots and appended files alike, on a
    partitioned table with timestamps, NaN and NULLs."""
    import datetime as dt

    from fitness_assets.lakehouse import store as store_module
    from fitness_assets.tables import DOUBLE, TIMESTAMP

    spec = TableSpec(layer="test", name="parts", columns=(("p", STRING), ("k", LONG), ("x", DOUBLE), ("t", TIMESTAMP)),
                     description="partitioned test table", keys=("p", "k"), partition_by=("p",))
    store = DeltaRsTableStore(settings.lakehouse_root, lambda: spark)
    when = dt.datetime(2023, 3, 6, 10, 15, 2, 123456, tzinfo=dt.UTC)
    for batch in range(3):
        store.append(spec, pa.table({"p": ["a", "b", "a"], "k": [batch * 3, batch * 3 + 1, batch * 3 + 2],
                                     "x": [float("nan"), None, 1.5 + batch], "t": [when, None, when]}))

    def both(read):
        out = {}
        for limit, path in ((10**9, "arrow"), (0, "parquet")):
            monkeypatch.setattr(store_module, "SMALL_READ_ROWS", limit)
            frame = read()
            uses_files = bool(frame.inputFiles())
            assert uses_files == (path == "parquet"), f"{path} read did not take the {path} path"
            out[path] = sorted(tuple(str(v) for v in r) for r in frame.collect())
            assert frame.schema == spark.createDataFrame([], store_module.from_arrow_schema(spec.schema)).schema
        assert out["arrow"] == out["parquet"]
        return out["arrow"]

    assert len(both(lambda: store.read(spec))) == 9
    # version 0 creates the table, versions 1..3 are the appends: (1, 3] holds batches 1 and 2
    appended = both(lambda: store.read_appended(spec, 1, 3))
    assert sorted(int(r[1]) for r in appended) == [3, 4, 5, 6, 7, 8]
    # Within one partition: only that partition's new files are opened (Spark would prune the
    # others itself, but they would have counted for the read's size and path).
    within = Within("p", "b", "b")
    only_b = both(lambda: store.read_appended(spec, 1, 3, within))
    assert sorted(int(r[1]) for r in only_b) == [4, 7] and {r[0] for r in only_b} == {"b"}
    monkeypatch.setattr(store_module, "SMALL_READ_ROWS", 0)  # the Parquet path: Spark lists the files it opens
    files = store.read_appended(spec, 1, 3, within).inputFiles()
    assert len(files) == 2 and all("p=b" in f for f in files), files


TIMED = TableSpec(layer="test", name="timed", columns=(("k", LONG), ("at", TIMESTAMP), ("part", STRING)),
                  description="a clustered, partitioned test table", keys=("k",), not_null=("k", "at"),
                  partition_by=("part",), cluster_by="at")


def _timed(*rows):
    return pa.table({"k": pa.array([r[0] for r in rows], pa.int64()), "at": pa.array([r[1] for r in rows], TIMESTAMP),
                     "part": [r[2] for r in rows]})


def test_a_clustered_table_is_written_sorted_in_small_row_groups(store, monkeypatch):
    """Rows land sorted by ``cluster_by``, in row groups of ``CLUSTERED_ROW_GROUP_ROWS`` rows,
    so each row group covers its own stretch of time."""
    _delta_rs_only(store, "the Parquet layout is delta-rs's writer's")
    import pyarrow.parquet as pq

    from fitness_assets.lakehouse import store as store_module

    monkeypatch.setattr(store_module, "CLUSTERED_ROW_GROUP_ROWS", 4)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    shuffled = [(k, start + dt.timedelta(minutes=(k * 7) % 20), "a") for k in range(20)]
    store.append(TIMED, _timed(*shuffled))
    (uri,) = DeltaTable(store.location(TIMED)).file_uris()
    meta = pq.ParquetFile(uri).metadata
    assert meta.num_row_groups == 5
    spans = [(meta.row_group(g).column(1).statistics.min, meta.row_group(g).column(1).statistics.max)
             for g in range(meta.num_row_groups)]
    assert all(lo <= hi < next_lo for (lo, hi), (next_lo, _) in zip(spans, spans[1:], strict=False))


def test_a_read_within_a_range_gives_exactly_its_rows_and_opens_only_files_that_may_hold_them(store, monkeypatch):
    """A ``Within`` read equals the filter of the whole table, and on delta-rs Spark scans only
    the files whose log statistics (timestamps kept in milliseconds there) or partition value
    overlap the range."""
    from fitness_assets.lakehouse import store as store_module
    from fitness_assets.lakehouse.store import Within

    monkeypatch.setattr(store_module, "SMALL_READ_ROWS", 0)  # Parquet scans, whose files Spark lists

    day = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    # One file per day; day 2 ends 0.9 ms after a whole millisecond, which the log truncates.
    end_of_day2 = day + dt.timedelta(days=1, hours=23, microseconds=900)
    batches = [[(1, day, "a"), (2, day + dt.timedelta(hours=5), "b")],
               [(3, day + dt.timedelta(days=1), "a"), (4, end_of_day2, "a")],
               [(5, day + dt.timedelta(days=2), "b"), (6, day + dt.timedelta(days=2, hours=3), "a")]]
    for rows in batches:
        store.append(TIMED, _timed(*rows))
    cases = [(Within("at", end_of_day2, day + dt.timedelta(days=2, hours=1)), {4, 5}, 2),
             (Within("at", day + dt.timedelta(hours=6), day + dt.timedelta(days=1)), {3}, 1),
             (Within("part", "b", "b"), {2, 5}, 2)]
    for within, keys, files in cases:
        frame = store.read(TIMED, within=within)
        assert {r["k"] for r in frame.collect()} == keys, within
        if isinstance(store, DeltaRsTableStore):
            assert len(frame.inputFiles()) == files, (within, frame.inputFiles())


def test_arrow_rows_reach_spark_whole_even_after_an_empty_chunk(spark):
    """A table concatenated from parts, one of them empty (a landing file with no lines, an
    empty change-feed batch), reaches Spark with every row, in order. Classic PySpark's own
    ``createDataFrame`` stops at the first empty record batch."""
    from fitness_assets.lakehouse.spark import arrow_frame

    parts = [pa.table({"n": [1, 2]}), pa.table({"n": pa.array([], pa.int64())}), pa.table({"n": [3, 4]})]
    table = pa.concat_tables(parts)
    assert [r["n"] for r in arrow_frame(spark, table).collect()] == [1, 2, 3, 4]
    assert arrow_frame(spark, pa.concat_tables(parts[1:2] * 2)).count() == 0


def test_arrow_rows_reach_local_spark_as_batches_not_inside_the_plan(spark):
    """The local session hands an Arrow table to Spark as an RDD of record batches: a plan
    holding every row as a LocalRelation was optimized and run with its rows on the driver
    (~1 s of the 5M micro-batch). The batches follow the table's size, not its chunks (a
    change feed comes in one chunk per file, each a partition and a task in every query over
    it). Rows, order and types are unchanged; an empty table is still an empty relation."""
    from fitness_assets.lakehouse.spark import ARROW_BATCH_ROWS, arrow_frame

    if not hasattr(spark, "_jsc"):
        pytest.skip("a classic (local) session's planning")
    table = pa.concat_tables([pa.table({"n": [1, 2], "s": ["a", None]}), pa.table({"n": [3], "s": ["c"]})])
    frame = arrow_frame(spark, table)
    plan = frame._jdf.queryExecution().optimizedPlan().toString()
    assert "LocalRelation" not in plan and "LogicalRDD" in plan, plan
    assert frame.rdd.getNumPartitions() == 1
    assert [tuple(r) for r in frame.collect()] == [(1, "a"), (2, None), (3, "c")]
    rows = ARROW_BATCH_ROWS + 1_000
    chunked = pa.concat_tables([pa.table({"n": pa.array(range(i, min(i + 8_000, rows)), pa.int64())})
                                for i in range(0, rows, 8_000)])
    assert chunked.column("n").num_chunks == 13
    frame = arrow_frame(spark, chunked)
    assert frame.rdd.getNumPartitions() == 2
    assert [r["n"] for r in frame.collect()] == list(range(rows))
    empty = arrow_frame(spark, table.schema.empty_table())
    assert empty.count() == 0 and "LocalRelation" in empty._jdf.queryExecution().optimizedPlan().toString()


@pytest.mark.connect
def test_arrow_rows_reach_a_spark_connect_server_as_a_file_removed_when_the_step_ends(settings, spark):
    """On Spark Connect, an Arrow table of HANDOFF_ROWS rows or more reaches the server as a
    Parquet file beside the tables, not as a local relation inside the plan (analysed and
    optimised with all its rows every time the plan is); the file is gone when the step ends.
    A smaller table stays inside the plan; local Spark takes record batches (no file)."""
    from fitness_assets.lakehouse.store import HANDOFF_FOLDER, HANDOFF_ROWS

    store = DeltaRsTableStore(settings.lakehouse_root, lambda: spark)
    handoff = Path(settings.lakehouse_root) / HANDOFF_FOLDER
    killed = handoff / "999999999"  # the folder of a process killed before its step ended
    killed.mkdir(parents=True)
    (killed / "left.parquet").write_bytes(b"rows")
    big = pa.table({"n": pa.array(range(HANDOFF_ROWS), pa.int64()),
                    "s": pa.array([None if i % 7 == 0 else str(i) for i in range(HANDOFF_ROWS)], pa.string())})
    with store.step():
        frame = store.frame(big)
        small = store.frame(big.slice(0, 10))
        handed = [p for p in handoff.rglob("*.parquet") if p.parent != killed]
        assert frame.toArrow().sort_by("n").equals(big)
        assert small.count() == 10
        if ON_CONNECT:
            plan = frame._explain_string(extended=True)
            assert "LocalRelation" not in plan and "FileScan parquet" in plan, plan
            assert "LocalRelation" in small._explain_string(extended=True)
            assert len(handed) == 1 and not killed.exists()
        else:
            assert handed == []
    assert not [p for p in handoff.rglob("*.parquet") if p.parent != killed], "the step's file is removed"


def test_arrow_reads_filter_strings_in_files_a_merge_wrote(store):
    """A MERGE writes its files through delta-rs's query engine, with strings as string_view;
    Arrow cannot prune such a file by its statistics for an `isin` of several strings (it
    raises). The store's Arrow read still gives exactly the rows the condition holds for."""
    _delta_rs_only(store, "the store's own Arrow reads")
    store.append(KV, _data((1, "a"), (2, "b")))
    store.merge(KV, _data((3, "c"), (4, "d")), UPSERT)
    condition = OneOf("v", pa.array(["a", "c"], pa.string()))
    # DeltaTable(...).to_pyarrow_table(filters=condition) raises ArrowNotImplementedError here
    # (deltalake 1.6.6, pyarrow 26.0.1): "greater_equal ... (string, string_view)".
    assert sorted(store.read_columns_arrow(KV, ["k"], where=[condition])["k"].to_pylist()) == [1, 3]
    assert sorted(store.read_columns_arrow(KV, ["v"], where=[condition, Within("k", 2, 9)])["v"].to_pylist()) == ["c"]
    # with a limit: that many of those rows (the scan stops there), in both ways of reading
    for where in ([condition], [OneOf("k", pa.array([1, 3, 4], pa.int64()))]):
        first = store.read_columns_arrow(KV, ["k", "v"], where=where, limit=1).to_pylist()
        assert len(first) == 1 and first[0] in [{"k": 1, "v": "a"}, {"k": 3, "v": "c"}, {"k": 4, "v": "d"}], first
        whole = store.read_columns_arrow(KV, ["k"], where=where, limit=10)["k"].to_pylist()
        assert sorted(whole) == ([1, 3] if where == [condition] else [1, 3, 4])


def test_a_clustered_table_is_written_in_files_of_its_target_size_each_a_stretch_of_time(store, monkeypatch):
    """A table with ``delta.targetFileSize`` (the clustered tables') is written in files of
    about that size, and as its rows are sorted, each file holds its own stretch of time: a
    read (or a MERGE) of a few hours opens one file, not the table. A table made before the
    property was declared gets it on the next ``ensure``."""
    _delta_rs_only(store, "the file layout is delta-rs's writer's")
    import random

    from fitness_assets.lakehouse import store as store_module
    from fitness_assets.tables import CLUSTERED_PROPERTIES, HEART_RATE, WORKOUT_BPM

    monkeypatch.setattr(store_module, "SMALL_READ_ROWS", 0)  # Parquet scans, whose files Spark lists
    sized = TableSpec(layer="test", name="sized", columns=(("k", LONG), ("at", TIMESTAMP)), description="sized",
                      keys=("k",), not_null=("k", "at"), cluster_by="at",
                      properties={"delta.targetFileSize": str(64 * 1024)})
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rng = random.Random(7)
    seconds = [rng.randrange(14 * 86_400) for _ in range(100_000)]
    store.append(sized, pa.table({"k": pa.array([rng.getrandbits(62) for _ in seconds], pa.int64()),
                                  "at": pa.array([start + dt.timedelta(seconds=s) for s in seconds], TIMESTAMP)}))
    actions = pa.table(DeltaTable(store.location(sized)).get_add_actions(flatten=True)).sort_by("min.at")
    assert actions.num_rows > 4
    assert sum(actions["num_records"].to_pylist()) == 100_000
    spans = list(zip(actions["min.at"].to_pylist(), actions["max.at"].to_pylist(), strict=True))
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(spans, spans[1:], strict=False))
    last_hour = Within("at", start + dt.timedelta(days=14, hours=-1), start + dt.timedelta(days=14))
    frame = store.read(sized, within=last_hour)
    assert len(frame.inputFiles()) == 1
    assert frame.count() == sum(1 for s in seconds if s >= 13 * 86_400 + 23 * 3600)

    # The table as an older release made it (no target size), then ensured with this release's spec.
    DeltaTable.create(store.location(HEART_RATE), HEART_RATE.schema)
    store.ensure(HEART_RATE)
    store.ensure(WORKOUT_BPM)
    for spec in (HEART_RATE, WORKOUT_BPM):
        configuration = DeltaTable(store.location(spec)).metadata().configuration
        assert {k: configuration.get(k) for k in CLUSTERED_PROPERTIES} == CLUSTERED_PROPERTIES


def test_compaction_rewrites_small_files_with_the_same_rows_and_no_change_in_the_feed(store, monkeypatch):
    """A compaction rewrites a day of small micro-batch files as one, rows unchanged, in a commit
    the change feed shows nothing of (consumers read changes from it); a clustered table's new
    file keeps the small row groups; a second compaction has nothing to do."""
    _delta_rs_only(store, "Spark's OPTIMIZE needs Delta's jars")
    import pyarrow.parquet as pq

    from fitness_assets.lakehouse import store as store_module

    monkeypatch.setattr(store_module, "CLUSTERED_ROW_GROUP_ROWS", 4)
    events = TableSpec(layer="test", name="events", columns=(("k", LONG), ("at", TIMESTAMP)), description="t",
                       keys=("k",), not_null=("k", "at"), cluster_by="at")
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for batch in range(5):  # five micro-batches, one file each
        store.append(events, pa.table({"k": [batch * 3 + i for i in range(3)],
                                       "at": [start + dt.timedelta(minutes=batch * 3 + i) for i in range(3)]},
                                      schema=events.schema))
    store.merge(events, pa.table({"k": [99], "at": [start]}, schema=events.schema), UPSERT)
    before, rows = store.version(events), sorted(store.read_arrow(events).to_pylist(), key=lambda r: r["k"])
    assert len(DeltaTable(store.location(events)).file_uris()) == 6

    done = store.compact(events)
    assert (done.removed, done.added) == (6, 1)
    assert store.version(events) == before + 1
    assert sorted(store.read_arrow(events).to_pylist(), key=lambda r: r["k"]) == rows
    assert store.read_changes(events, before, before + 1).count() == 0
    (uri,) = DeltaTable(store.location(events)).file_uris()
    assert pq.ParquetFile(uri).metadata.num_row_groups == 4  # 16 rows in groups of 4
    assert store.compact(events).removed == 0


def test_a_write_another_writer_overtook_short_of_its_version_is_not_committed(store):
    """Two runs plan the same first fill from nothing; the other commits up to upstream
    version 7 first, this one (planned later, up to 8) must not append rows 0..7 again."""
    _delta_rs_only(store, "a Spark SQL write takes its snapshot when the statement starts, after the "
                          "before_commit hook, so the race cannot be staged from it")

    def racing_writer(spec):
        store.before_commit = None
        store.append(KV, _data((1, "a")), txns=[Txn("loader", 7, after=-1)])

    store.before_commit = racing_writer
    with pytest.raises(StalePlan, match="loader was planned from -1 and is now at 7"):
        store.append(KV, _data((1, "a"), (2, "b")), txns=[Txn("loader", 8, after=-1)])
    assert _rows(store) == [(1, "a")] and store.transaction_version(KV, "loader") == 7


def test_a_write_planned_from_a_position_that_no_longer_holds_is_refused(store):
    store.append(KV, _data((1, "a")), txns=[Txn("loader", 3, after=-1)])
    with pytest.raises(StalePlan):
        store.append(KV, _data((2, "b")), txns=[Txn("loader", 5, after=2)])
    store.append(KV, _data((2, "b")), txns=[Txn("loader", 5, after=3)])  # planned from where it is
    assert store.append(KV, _data((2, "b")), txns=[Txn("loader", 5, after=3)]).skipped  # done already
    assert _rows(store) == [(1, "a"), (2, "b")] and store.transaction_version(KV, "loader") == 5


def test_an_append_reports_its_own_commit_when_another_follows_it_at_once(store, monkeypatch):
    """The hourly compaction may commit right after an append: the append's result is still
    its own version and its own metrics, not the compaction's."""
    _delta_rs_only(store, "the Spark Delta store finds its commit by the id it wrote in it")
    import fitness_assets.lakehouse.store as store_module

    store.append(KV, _data((1, "a")))
    store.append(KV, _data((2, "b")))
    real_write = store_module.write_deltalake

    def write_then_compaction(table, data, **kwargs):
        real_write(table, data, **kwargs)
        DeltaTable(store.location(KV)).optimize.compact()  # another process, right after

    monkeypatch.setattr(store_module, "write_deltalake", write_then_compaction)
    before = store.version(KV)
    result = store.append(KV, _data((3, "c"), (4, "d"), (5, "e")))
    assert store.version(KV) == before + 2  # the append, then the compaction
    assert result.version == before + 1 and result.metrics["num_added_rows"] == 3


def test_the_newest_commit_metadata_is_read_newest_first_past_commits_without_any(store, monkeypatch):
    store.append(KV, _data((1, "a")), metadata={"erased_rows": 1})
    store.append(KV, _data((2, "b")), metadata={"erased_rows": 2, "note": "x"})
    store.append(KV, _data((3, "c")))  # no metadata of its own
    newest = store.latest_commit_metadata(KV)
    assert (newest["erased_rows"], newest["note"]) == (2, "x")
    assert store.latest_commit_metadata(KV, "erased_rows")["erased_rows"] == 2
    monkeypatch.setattr(type(store), "commit_metadata", lambda *_: pytest.fail("read the whole history"))
    assert store.latest_commit_metadata(KV)["erased_rows"] == 2


def test_a_step_reads_a_tables_commit_metadata_once_per_version(store, monkeypatch):
    _delta_rs_only(store, "the Spark Delta store reads its history through Spark SQL")
    store.append(KV, _data((1, "a")), metadata={"files": {"a": 1}})
    reads = []
    real_history = DeltaTable.history
    monkeypatch.setattr(DeltaTable, "history", lambda self, limit=None: reads.append(limit) or real_history(self, limit))
    with store.step():
        first = store.commit_metadata(KV)
        first[0]["files"] = {"changed": 0}  # a caller's changes stay its own
        assert store.commit_metadata(KV)[0]["files"] == {"a": 1} and reads == [None]
        store.append(KV, _data((2, "b")), metadata={"files": {"b": 1}})
        assert [m["files"] for m in store.commit_metadata(KV)] == [{"a": 1}, {"b": 1}]
    full = [r for r in reads if r is None]
    assert len(full) == 2  # once per version
