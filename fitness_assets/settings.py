"""Platform settings, read from the environment when asked for (never at import time).

Every variable is optional; defaults keep all state inside the checkout's ignored ``.data/``
folder so that one command runs the whole lakehouse on a laptop.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = PROJECT_ROOT / ".data"


@dataclass(frozen=True)
class Settings:
    """Where data lives and the knobs that change results (reference date, date range)."""

    landing_root: str
    lakehouse_root: str
    reference_date: dt.date | None
    date_lookup_start: dt.date
    date_lookup_end: dt.date
    max_files_per_batch: int
    max_batches_per_run: int
    backend: str = "delta-rs"
    catalog: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        ref = env.get("FITNESS_REFERENCE_DATE") or None
        return cls(
            landing_root=env.get("FITNESS_LANDING_ROOT") or str(DEFAULT_DATA_ROOT / "landing"),
            lakehouse_root=env.get("FITNESS_LAKEHOUSE_ROOT") or str(DEFAULT_DATA_ROOT / "lakehouse"),
            reference_date=dt.date.fromisoformat(ref) if ref else None,
            date_lookup_start=dt.date.fromisoformat(env.get("FITNESS_DATE_LOOKUP_START") or "2020-01-01"),
            date_lookup_end=dt.date.fromisoformat(env.get("FITNESS_DATE_LOOKUP_END") or "2030-12-31"),
            max_files_per_batch=int(env.get("FITNESS_MAX_FILES_PER_BATCH") or 64),
            max_batches_per_run=int(env.get("FITNESS_MAX_BATCHES_PER_RUN") or 1000),
            backend=env.get("FITNESS_TABLE_BACKEND") or "delta-rs",
            catalog=env.get("FITNESS_CATALOG") or None,
        )

    def effective_reference_date(self) -> dt.date:
        """The date ages are computed at: configured, or today (UTC) when unset."""
        return self.reference_date or dt.datetime.now(dt.UTC).date()


@dataclass(frozen=True)
class SparkEnv:
    """Which Spark to use: FITNESS_SPARK_MODE (local | connect | databricks) and its details."""

    mode: str = "local"
    master: str = "local[2]"
    connect_url: str | None = None
    driver_memory: str = "4g"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SparkEnv:
        env = dict(os.environ if env is None else env)
        return cls(
            mode=env.get("FITNESS_SPARK_MODE") or "local",
            master=env.get("FITNESS_SPARK_MASTER") or "local[2]",
            connect_url=env.get("FITNESS_SPARK_CONNECT_URL") or None,
            driver_memory=env.get("FITNESS_SPARK_DRIVER_MEMORY") or "4g",
        )
