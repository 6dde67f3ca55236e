"""The code location loads, and every table is an asset in its layer's group with checks."""

from dagster import AssetKey

from fitness_assets.definitions import ALL_ASSETS_JOB, build_definitions
from fitness_assets.tables import ALL_TABLES


def test_definitions_load_with_every_table_as_an_asset(settings):
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    assert graph.materializable_asset_keys == {AssetKey(spec.asset_key_path) for spec in ALL_TABLES}
    for spec in ALL_TABLES:
        node = graph.get(AssetKey(spec.asset_key_path))
        assert node.group_name == spec.layer
        assert node.owners == ["team:data-engineering"]
        assert node.description
        types = {c.name: c.type for c in node.metadata["dagster/column_schema"].columns}
        # Type names as Spark and Delta write them (what an analyst reads in a DESCRIBE).
        assert all(t == _spark_type(f.type) for f, t in zip(spec.schema, types.values(), strict=True)), spec.name
    assert defs.resolve_job_def(ALL_ASSETS_JOB).executor_def.name == "in_process"


def _spark_type(dtype) -> str:
    from pyspark.sql.pandas.types import from_arrow_type

    name = from_arrow_type(dtype).simpleString()
    return {"bigint": "long", "string": "string"}.get(name, name)


def test_every_table_has_checks_and_error_checks_block(settings):
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    checked = {key.asset_key for key in graph.asset_check_keys}
    assert checked == {AssetKey(spec.asset_key_path) for spec in ALL_TABLES}


def test_silver_and_gold_lineage(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    parents = {k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
                for k in graph.get_all_asset_keys()}
    assert parents["silver/workout_bpm"] == {"silver/completed_workouts", "silver/heart_rate", "silver/users"}
    assert parents["gold/gym_summary"] == {"silver/gym_logs", "silver/users", "silver/completed_workouts"}
    assert parents["bronze/kafka_multiplex_bz"] == {"reference/date_lookup", "landing/kafka_multiplex",
                                                    "kafka/user_info", "kafka/workout", "kafka/bpm"}
    assert parents["bronze/gym_logins_bz"] == {"landing/gym_logins"}
    assert "dagster/column_lineage" in graph.get(AssetKey(["gold", "workout_bpm_summary"])).metadata


def test_quarantine_comes_from_its_sources_not_from_bronze(settings):
    """The bronze step writes both tables from the landing files and Kafka records: the
    quarantine's lineage shows where its lines came from."""
    graph = build_definitions(settings).resolve_asset_graph()
    users = graph.get(AssetKey(["quarantine", "registered_users_bz"]))
    assert users.parent_keys == {AssetKey(["landing", "registered_users"])}
    multiplex = graph.get(AssetKey(["quarantine", "kafka_multiplex_bz"]))
    assert multiplex.parent_keys == {AssetKey(["landing", "kafka_multiplex"]), AssetKey(["kafka", "user_info"]),
                                     AssetKey(["kafka", "workout"]), AssetKey(["kafka", "bpm"])}
