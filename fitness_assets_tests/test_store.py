"""The delta-rs table store on real Delta tables."""

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from fitness_assets.lakehouse.store import Clause, Merge, Txn
from fitness_assets.tables import LONG, STRING, TableSpec

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
    assert DeltaTable(store.location(KV)).schema().to_arrow() is not None


def test_check_constraint_is_enforced(store):
    store.ensure(KV)
    with pytest.raises(Exception, match="(?i)constraint|check"):
        store.append(KV, _data((1, "bad")))
    assert _rows(store) == []


def test_exactly_once_append_skips_a_repeated_batch(store):
    first = store.append(KV, _data((1, "a")), txns=[Txn("loader", 1)])
    again = store.append(KV, _data((1, "a")), txns=[Txn("loader", 1)])
    older = store.append(KV, _data((1, "a")), txns=[Txn("loader", 0)])
    assert not first.skipped and again.skipped and older.skipped
    store.append(KV, _data((2, "b")), txns=[Txn("loader", 2)])
    assert _rows(store) == [(1, "a"), (2, "b")]
    assert store.transaction_version(KV, "loader") == 2


def test_concurrent_conflict_is_retried_on_a_fresh_snapshot(store, spark):
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
    from deltalake import DeltaTable

    from fitness_assets.tables import KAFKA_MULTIPLEX_BZ

    # What a process killed between the create commit and the constraint commit leaves behind.
    DeltaTable.create(store.location(KAFKA_MULTIPLEX_BZ), KAFKA_MULTIPLEX_BZ.schema,
                      partition_by=list(KAFKA_MULTIPLEX_BZ.partition_by))
    assert "delta.constraints.topic_accepted" not in DeltaTable(store.location(KAFKA_MULTIPLEX_BZ)).metadata().configuration
    store.ensure(KAFKA_MULTIPLEX_BZ)
    configuration = DeltaTable(store.location(KAFKA_MULTIPLEX_BZ)).metadata().configuration
    assert "delta.constraints.topic_accepted" in configuration  # (delta-rs stores it normalized)
    store.ensure(KAFKA_MULTIPLEX_BZ)  # already complete: nothing to add, no error
