"""Shared fixtures: one real Spark session for the whole test run, temporary lakehouse and
landing roots per test.

``FITNESS_TEST_SPARK`` picks the Spark: ``local`` (default) is an embedded JVM; ``connect``
starts one warm Spark Connect server on loopback for this pytest process (the production path:
Databricks Connect is Spark Connect), stopped when pytest ends, pass or fail, and points every
session of the process at it (``spark``, ``TEST_SPARK`` and definitions built from the
environment): one process can hold one Spark session only.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from dagster import instance_for_test

from fitness_assets.lakehouse.connect_server import SparkConnectServer, free_port
from fitness_assets.lakehouse.spark import SparkSettings, get_session, stop_session
from fitness_assets.lakehouse.store import DeltaRsTableStore
from fitness_assets.settings import Settings, SparkEnv

TEST_SPARK_MODES = ("local", "connect")
TEST_SPARK_MODE = (os.environ.get("FITNESS_TEST_SPARK") or "local").strip().lower()
if TEST_SPARK_MODE not in TEST_SPARK_MODES:
    raise pytest.UsageError(f"FITNESS_TEST_SPARK must be local or connect, not {TEST_SPARK_MODE!r}")
ON_CONNECT = TEST_SPARK_MODE == "connect"
# For the few tests that only make sense on an embedded JVM (its SparkContext, job counts).
skip_on_connect = pytest.mark.skipif(ON_CONNECT, reason="FITNESS_TEST_SPARK=connect: Spark Connect has no SparkContext")

# Spark hands naive datetimes to Python in the process's zone; the contract's times are UTC.
# (Before the Connect server starts: it inherits the zone.)
os.environ["TZ"] = "UTC"
time.tzset()

# One Spark per process: definitions built from the environment in tests ask for the same one.
os.environ.setdefault("FITNESS_SPARK_DRIVER_MEMORY", "2g")
_CONNECT_SERVER: SparkConnectServer | None = None
if ON_CONNECT:
    # Created here so that TEST_SPARK knows its URL at import; started in pytest_configure.
    _CONNECT_SERVER = SparkConnectServer(
        port=free_port(), driver_memory=os.environ["FITNESS_SPARK_DRIVER_MEMORY"],
        log_path=Path(tempfile.mkdtemp(prefix="fitness-test-spark-connect-")) / "spark-connect.log")
    TEST_SPARK = SparkEnv(mode="connect", connect_url=_CONNECT_SERVER.url,
                          driver_memory=os.environ["FITNESS_SPARK_DRIVER_MEMORY"])
    os.environ["FITNESS_SPARK_MODE"] = "connect"
    os.environ["FITNESS_SPARK_CONNECT_URL"] = _CONNECT_SERVER.url
else:
    TEST_SPARK = SparkEnv(driver_memory=os.environ["FITNESS_SPARK_DRIVER_MEMORY"])

_PREVIOUS_SIGTERM = None
_CONNECT_STARTED = pytest.StashKey[float]()


def _terminate(signum, frame):
    # Unwinds through pytest as an interruption, so pytest_unconfigure still stops the server.
    pytest.exit(f"terminated by signal {signum}", returncode=128 + signum)


def pytest_configure(config):
    global _PREVIOUS_SIGTERM
    if _CONNECT_SERVER is None:
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        _PREVIOUS_SIGTERM = signal.signal(signal.SIGTERM, _terminate)
    started = time.perf_counter()
    _CONNECT_SERVER.start()  # raises, naming its log, when it cannot start; unconfigure still runs
    config.stash[_CONNECT_STARTED] = time.perf_counter() - started


def pytest_report_header(config):
    if _CONNECT_SERVER is None:
        return None
    seconds = config.stash.get(_CONNECT_STARTED, None)
    return (f"Spark: Connect server at {_CONNECT_SERVER.url} (FITNESS_TEST_SPARK=connect), started in "
            f"{seconds or 0:.0f} s, log {_CONNECT_SERVER.log_path}")


_SESSION_PASSED = pytest.StashKey[bool]()


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_SESSION_PASSED] = exitstatus == 0


def pytest_unconfigure(config):
    global _PREVIOUS_SIGTERM
    if _CONNECT_SERVER is None:
        return
    try:
        stop_session()  # the client's session first, while its server still answers
    except Exception:
        pass  # the server goes next either way
    finally:
        _CONNECT_SERVER.stop()
        if _PREVIOUS_SIGTERM is not None:
            signal.signal(signal.SIGTERM, _PREVIOUS_SIGTERM)
            _PREVIOUS_SIGTERM = None
        # The server's log is kept to read after a failure; a passing session leaves nothing.
        if config.stash.get(_SESSION_PASSED, False) and _CONNECT_SERVER.log_path is not None:
            shutil.rmtree(_CONNECT_SERVER.log_path.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def spark():
    return get_session(SparkSettings(mode=TEST_SPARK.mode, connect_url=TEST_SPARK.connect_url,
                                     driver_memory=TEST_SPARK.driver_memory, shuffle_partitions=2))


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


class InjectedFault(RuntimeError):
    """A crash right after a commit succeeded, as a process dying between commit and run end."""


@pytest.fixture
def fault_after_commit(monkeypatch):
    """``arm(table)``: from then on, every commit that writes ``table`` raises right after it
    landed (a commit found already applied writes nothing and does not); ``disarm()`` ends it."""
    original = DeltaRsTableStore._commit

    def arm(table) -> None:
        def commit_then_crash(self, spec, *args, **kwargs):
            result = original(self, spec, *args, **kwargs)
            if spec.qualified_name == table.qualified_name and not result.skipped:
                raise InjectedFault(f"injected fault after committing {spec.qualified_name}")
            return result

        monkeypatch.setattr(DeltaRsTableStore, "_commit", commit_then_crash)

    def disarm() -> None:
        monkeypatch.setattr(DeltaRsTableStore, "_commit", original)

    arm.disarm = disarm
    return arm


@pytest.fixture(scope="session")
def kafka_broker():
    """Bootstrap address of a local Kafka-protocol broker (librdkafka's mock cluster) on a free
    port, with the multiplex topics, shared by the session; tests read from the watermarks they
    saw, so records of other tests do not matter."""
    from fitness_assets.streaming.broker import MockKafkaBroker

    with MockKafkaBroker(port=0) as broker:
        yield broker.bootstrap_servers
