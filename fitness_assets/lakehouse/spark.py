"""Spark sessions: local (embedded default), Spark Connect, or Databricks.

One session per process: every caller that asks for the same configuration gets the session
already running, so a run that materializes many assets starts one JVM, not one per asset.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import SparkSession

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
_LOCK = threading.Lock()
_SESSION: SparkSession | None = None
_SESSION_KEY: tuple | None = None


@dataclass(frozen=True)
class SparkSettings:
    """How to reach Spark. ``mode`` picks the implementation; everything else tunes it."""

    mode: str = "local"  # "local" | "connect" | "databricks"
    master: str = "local[2]"
    connect_url: str | None = None
    driver_memory: str = "4g"
    shuffle_partitions: int = 4
    extra_conf: dict[str, str] = field(default_factory=dict)

    def key(self) -> tuple:
        return (self.mode, self.master, self.connect_url, self.driver_memory, self.shuffle_partitions,
                tuple(sorted(self.extra_conf.items())))


def _base_conf(settings: SparkSettings) -> dict[str, str]:
    conf = {
        # Every timestamp of the contract is UTC; Spark must not shift them to the host's zone.
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    conf.update(settings.extra_conf)
    return conf


def _build(settings: SparkSettings) -> SparkSession:
    if settings.mode == "local":
        builder = (
            SparkSession.builder.master(settings.master)
            .appName("fitness-assets")
            .config("spark.ui.enabled", "false")
            .config("spark.driver.memory", settings.driver_memory)
            .config("spark.ui.showConsoleProgress", "false")
            # Loopback only, and JVM logging at error level from the start (setLogLevel comes
            # too late for the start-up warnings).
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG4J_CONFIG.as_uri()}")
        )
    elif settings.mode == "connect":
        if not settings.connect_url:
            raise ValueError("Spark mode 'connect' needs a connect_url such as sc://127.0.0.1:15002")
        builder = SparkSession.builder.remote(settings.connect_url)
    elif settings.mode == "databricks":
        try:
            from databricks.connect import DatabricksSession  # type: ignore[import-not-found]
        except ImportError as exc:  # pragma: no cover - depends on a separate environment
            raise RuntimeError(
                "Spark mode 'databricks' needs databricks-connect, which must live in its own "
                "virtual environment (it replaces pyspark); see README, 'Running on Databricks'."
            ) from exc
        return DatabricksSession.builder.getOrCreate()
    else:
        raise ValueError(f"unknown Spark mode {settings.mode!r}: use local, connect or databricks")
    for key, value in _base_conf(settings).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if settings.mode == "local":
        session.sparkContext.setLogLevel("ERROR")
    return session


def get_session(settings: SparkSettings | None = None) -> SparkSession:
    """The process's Spark session, started on first use."""
    global _SESSION, _SESSION_KEY
    settings = settings or SparkSettings()
    with _LOCK:
        if _SESSION is not None:
            # A JVM keeps its static settings for life (getOrCreate ignores new ones), so the
            # first configuration of a process wins; _SESSION_KEY records which one that was.
            return _SESSION
        _SESSION = _build(settings)
        _SESSION_KEY = settings.key()
        return _SESSION


def stop_session() -> None:
    """Stop the process's session (CLI end, benchmarks)."""
    global _SESSION, _SESSION_KEY
    with _LOCK:
        if _SESSION is not None:
            _SESSION.stop()
        _SESSION = None
        _SESSION_KEY = None
