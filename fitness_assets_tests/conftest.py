"""Shared fixtures: one real local Spark session for the whole test run, temporary lakehouse
and landing roots per test."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from dagster import instance_for_test

from fitness_assets.lakehouse.spark import SparkSettings, get_session
from fitness_assets.lakehouse.store import DeltaRsTableStore
from fitness_assets.settings import Settings, SparkEnv

# One Spark per process: definitions built from the environment in tests ask for the same one.
os.environ.setdefault("FITNESS_SPARK_DRIVER_MEMORY", "2g")
TEST_SPARK = SparkEnv(driver_memory=os.environ["FITNESS_SPARK_DRIVER_MEMORY"])

# Spark hands naive datetimes to Python in the process's zone; the contract's times are UTC.
os.environ["TZ"] = "UTC"
time.tzset()


@pytest.fixture(scope="session")
def spark():
    return get_session(SparkSettings(driver_memory=TEST_SPARK.driver_memory, shuffle_partitions=2))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({
        "FITNESS_LANDING_ROOT": str(tmp_path / "landing"),
        "FITNESS_LAKEHOUSE_ROOT": str(tmp_path / "lakehouse"),
        "FITNESS_REFERENCE_DATE": "2024-01-01",
    })


@pytest.fixture
def store(settings: Settings, spark) -> DeltaRsTableStore:
    return DeltaRsTableStore(settings.lakehouse_root, lambda: spark)


@pytest.fixture
def dagster_instance():
    with instance_for_test() as instance:
        yield instance


@pytest.fixture
def run(settings: Settings, dagster_instance, spark):
    """Materialize a selection (all by default) in-process and return the run report."""
    from fitness_assets.cli import run_graph

    def _run(*selection: str, expect_success: bool = True):
        report = run_graph(list(selection), settings, TEST_SPARK, instance=dagster_instance)
        if expect_success:
            assert report.success, report.render()
        return report

    return _run


@pytest.fixture
def no_fault():
    yield
    os.environ.pop("FITNESS_FAULT_AFTER_COMMIT", None)


@pytest.fixture(scope="session")
def kafka_broker():
    """Bootstrap address of a local Kafka-protocol broker (librdkafka's mock cluster) on a free
    port, with the multiplex topics, shared by the session; tests read from the watermarks they
    saw, so records of other tests do not matter."""
    from fitness_assets.streaming.broker import MockKafkaBroker

    with MockKafkaBroker(port=0) as broker:
        yield broker.bootstrap_servers
