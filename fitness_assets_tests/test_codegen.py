"""Code generation chosen by the size of a step's reads (``lakehouse.codegen``): a step over few
rows runs its queries interpreted, a step whose reads reach the threshold compiled, Spark's
defaults hold outside steps, and the whole graph gives the same rows either way (real local
Spark; the plan and the JVM's compilation counter show which way a query ran)."""

import argparse
import contextlib
import dataclasses
import datetime as dt
import io

import pytest

from fitness_assets.lakehouse.codegen import CodegenBySize
from fitness_assets.lakehouse.store import DeltaRsTableStore
from fitness_assets.resources import SparkResource
from fitness_assets.tables import ALL_TABLES, DATE_LOOKUP
from fitness_assets.transforms import reference
from fitness_assets_tests.conftest import skip_on_connect
from fitness_assets_tests.helpers import table_rows

pytestmark = skip_on_connect  # the plan and the JVM's counters are read through the embedded JVM


def _ran_compiled(frame) -> bool:
    """Run the query; True when its executed plan has whole-stage generated code (``*(n)``)."""
    frame.collect()
    return "*(" in frame._jdf.queryExecution().executedPlan().toString()


def _compilations(spark) -> int:
    """Java classes Spark has generated and compiled in this JVM so far."""
    return spark._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME().getCount()


def test_a_step_runs_interpreted_until_its_reads_reach_the_threshold(spark, settings):
    codegen = CodegenBySize(lambda: spark, compile_from_rows=50)
    store = DeltaRsTableStore(settings.lakehouse_root, lambda: spark, codegen=codegen)
    store.overwrite(DATE_LOOKUP, reference.date_lookup(spark, dt.date(2024, 1, 1), dt.date(2024, 1, 30)))

    def days_by_week(frame):
        return frame.groupBy("week").count()

    with codegen.step():
        first = store.read(DATE_LOOKUP)  # 30 rows: below 50
        assert not codegen.compiled and not _ran_compiled(days_by_week(first))
        second = store.read(DATE_LOOKUP)  # 60 rows read in this step: compiled from here on
        assert codegen.compiled and _ran_compiled(days_by_week(first.unionByName(second)))
        assert sorted(days_by_week(second).collect()) == sorted(days_by_week(first).collect())
    assert spark.conf.get("spark.sql.codegen.wholeStage") == "true"
    assert _ran_compiled(days_by_week(store.read(DATE_LOOKUP)))  # outside a step: Spark's default

    with codegen.step():  # every step starts counting again
        assert not _ran_compiled(days_by_week(store.read(DATE_LOOKUP)))


def test_threshold_zero_and_a_remote_spark_always_compile(spark, settings):
    codegen = CodegenBySize(lambda: spark, compile_from_rows=0)
    store = DeltaRsTableStore(settings.lakehouse_root, lambda: spark, codegen=codegen)
    store.overwrite(DATE_LOOKUP, reference.date_lookup(spark, dt.date(2024, 1, 1), dt.date(2024, 1, 3)))
    with codegen.step():
        assert _ran_compiled(store.read(DATE_LOOKUP).groupBy("year").count())
    # Local and Spark Connect choose by size (measured on both); a Databricks cluster is left as is.
    assert SparkResource(mode="databricks", compile_from_rows=10).codegen().compile_from_rows == 0
    for mode in ("local", "connect"):
        assert SparkResource(mode=mode, compile_from_rows=10).codegen().compile_from_rows == 10


@pytest.mark.slow
def test_the_graph_gives_the_same_rows_interpreted_and_compiled(tmp_path, spark, dagster_instance):
    """The demo's chain (with its hostile lines) into two lakehouses, once with the default
    threshold (every step of it is small: interpreted) and once always compiled."""
    from fitness_assets.cli import _simulate, run_graph
    from fitness_assets.settings import Settings
    from fitness_assets_tests.conftest import TEST_SPARK

    base = Settings.from_env({"FITNESS_LANDING_ROOT": str(tmp_path / "landing"),
                              "FITNESS_REFERENCE_DATE": "2024-01-01"})
    with contextlib.redirect_stdout(io.StringIO()):
        _simulate(argparse.Namespace(seed=7, batches=1, readings=None, preset="tiny"), base)
    tables, compilations = {}, {}
    for name, rows in (("interpreted", 100_000), ("compiled", 0)):
        settings = dataclasses.replace(base, lakehouse_root=str(tmp_path / name))
        before = _compilations(spark)
        report = run_graph([], settings, dataclasses.replace(TEST_SPARK, compile_from_rows=rows),
                           instance=dagster_instance)
        assert report.success, report.render()
        compilations[name] = _compilations(spark) - before
        store = DeltaRsTableStore(settings.lakehouse_root, lambda: spark)
        tables[name] = {spec.qualified_name: table_rows(store, spec, drop=("load_time",)) for spec in ALL_TABLES}
    assert tables["interpreted"] == tables["compiled"]
    assert sum(map(len, tables["compiled"].values())) > 1000
    # A few plans generate code whatever the mode; compiled, the graph generates hundreds.
    assert compilations["interpreted"] * 5 < compilations["compiled"], compilations


def test_after_a_step_the_session_has_its_own_settings_back(spark, settings):
    codegen = CodegenBySize(lambda: spark, compile_from_rows=5)
    store = DeltaRsTableStore(settings.lakehouse_root, lambda: spark, codegen=codegen)
    store.overwrite(DATE_LOOKUP, reference.date_lookup(spark, dt.date(2024, 1, 1), dt.date(2024, 1, 10)))
    spark.conf.set("spark.sql.codegen.wholeStage", "false")  # a user's own choice
    try:
        with codegen.step():
            store.read(DATE_LOOKUP)  # 10 rows: compiled in this step
            assert spark.conf.get("spark.sql.codegen.wholeStage") == "true"
        assert spark.conf.get("spark.sql.codegen.wholeStage") == "false"
        assert spark.conf.get("spark.sql.codegen.factoryMode") == "FALLBACK"  # Spark's default again
    finally:
        spark.conf.unset("spark.sql.codegen.wholeStage")
